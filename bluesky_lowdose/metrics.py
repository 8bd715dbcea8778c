"""Image-quality metrics of reconstructions: PSNR, SSIM and grey-value histograms (pure).

Conventions (the same for every number this package reports):

- The **data range is fixed by the reference**: ``reference.max() - reference.min()`` over
  the whole reference volume (not the selected slices, not the test image), so scores of
  different methods against one reference are comparable.
- :func:`psnr` is ``10 log10(range^2 / MSE)`` over all selected voxels; identical images
  give ``inf`` (not a cap; JSON output writes it as ``null``).
- :func:`ssim` is scikit-image's SSIM (7x7 uniform window, K1 = 0.01, K2 = 0.03) computed
  on each selected 2-D slice ``[z]`` and averaged; identical images give 1.
- With a ``mask`` (e.g. the voxels inside the object, :func:`object_mask`), PSNR is the mean
  squared error over the masked voxels and SSIM the mean of the SSIM map over them: scores then
  measure the object, not the air around it.  The data range is still the reference's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["compare", "data_range", "histogram", "object_mask", "phase_histograms", "psnr", "ssim"]


def _pair(test: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(test, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if t.shape != r.shape:
        raise ValueError(f"test {t.shape} and reference {r.shape} differ in shape")
    if t.ndim not in (2, 3):
        raise ValueError(f"images must be 2-D or 3-D volumes [z, y, x], got {t.ndim}-D")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(r))):
        raise ValueError("images contain NaN or infinite values")
    return t, r


def data_range(reference: np.ndarray) -> float:
    """``max - min`` of the reference (the PSNR/SSIM data range).

    Parameters
    ----------
    reference : numpy.ndarray
        The ground-truth image or volume.

    Returns
    -------
    float
        The range; 1.0 for a constant reference (avoids division by zero).
    """
    r = np.asarray(reference)
    rng = float(np.max(r) - np.min(r))
    return rng if rng > 0 else 1.0


def _select(a: np.ndarray, slices: Sequence[int] | slice | None) -> np.ndarray:
    if a.ndim == 2:
        return a[None]
    return a if slices is None else a[slices if isinstance(slices, slice) else list(slices)]


def psnr(
    test: np.ndarray,
    reference: np.ndarray,
    *,
    slices: Sequence[int] | slice | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB, data range from the reference.

    Parameters
    ----------
    test, reference : numpy.ndarray
        Images ``[y, x]`` or volumes ``[z, y, x]`` of one shape.
    slices : sequence of int or slice, optional
        Slices ``z`` to score (default: the whole volume).
    mask : numpy.ndarray of bool, optional
        Score only these voxels (shape of ``test``); at least one must be True.

    Returns
    -------
    float
        PSNR in dB; ``inf`` for identical images.
    """
    t, r = _pair(test, reference)
    rng = data_range(r)
    m = _mask(mask, t.shape, slices)
    t, r = _select(t, slices), _select(r, slices)
    mse = float(np.mean((t - r)[m] ** 2)) if m is not None else float(np.mean((t - r) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


def ssim(
    test: np.ndarray,
    reference: np.ndarray,
    *,
    slices: Sequence[int] | slice | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Structural similarity, per 2-D slice averaged over the selected slices.

    Parameters
    ----------
    test, reference : numpy.ndarray
        Images ``[y, x]`` or volumes ``[z, y, x]`` of one shape (each slice >= 7x7).
    slices : sequence of int or slice, optional
        Slices ``z`` to score (default: all).
    mask : numpy.ndarray of bool, optional
        Average the SSIM map over these voxels only (shape of ``test``).

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical images.
    """
    from skimage.metrics import structural_similarity

    t, r = _pair(test, reference)
    rng = data_range(r)
    m = _mask(mask, t.shape, slices)
    t, r = _select(t, slices), _select(r, slices)
    if t.shape[0] == 0:
        raise ValueError("no slices selected")
    if m is None:
        vals = [structural_similarity(a, b, data_range=rng) for a, b in zip(t, r, strict=True)]
        return float(np.mean(vals))
    maps = np.stack(
        [structural_similarity(a, b, data_range=rng, full=True)[1] for a, b in zip(t, r, strict=True)]
    )
    return float(np.mean(maps[m]))


def compare(
    test: np.ndarray,
    reference: np.ndarray,
    *,
    slices: Sequence[int] | slice | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """PSNR and SSIM of ``test`` against ``reference`` (see :func:`psnr`, :func:`ssim`).

    Parameters
    ----------
    test, reference : numpy.ndarray
        Images or volumes of one shape.
    slices : sequence of int or slice, optional
        Slices ``z`` to score.
    mask : numpy.ndarray of bool, optional
        Score only these voxels.

    Returns
    -------
    dict
        ``{"psnr": float, "ssim": float}``.
    """
    return {
        "psnr": psnr(test, reference, slices=slices, mask=mask),
        "ssim": ssim(test, reference, slices=slices, mask=mask),
    }


def _mask(
    mask: np.ndarray | None, shape: tuple[int, ...], slices: Sequence[int] | slice | None
) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"mask must be boolean, got {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"mask {m.shape} and images {shape} differ in shape")
    m = _select(m, slices)
    if not m.any():
        raise ValueError("the mask selects no voxel")
    return m


def object_mask(reference: np.ndarray, *, fraction: float = 0.1, dilate: int = 2) -> np.ndarray:
    """Voxels inside the object: where the reference exceeds ``fraction`` of its range, dilated.

    Parameters
    ----------
    reference : numpy.ndarray
        The ground-truth image or volume ``[z, y, x]`` (0 in air).
    fraction : float
        Threshold as a fraction of the reference's range above its minimum.
    dilate : int
        Pixels added around the object in each slice (its edges belong to it).

    Returns
    -------
    numpy.ndarray of bool
        The mask, shape of ``reference``.
    """
    from scipy import ndimage

    r = np.asarray(reference, dtype=np.float64)
    lo = float(r.min())
    m = r > lo + fraction * data_range(r)
    if dilate > 0 and m.any():
        structure = np.zeros((1, 3, 3) if m.ndim == 3 else (3, 3), bool)
        structure[..., 1, :] = True
        structure[..., :, 1] = True
        m = ndimage.binary_dilation(m, structure=structure, iterations=dilate)
    return m


def histogram(
    volume: np.ndarray,
    *,
    bins: int = 128,
    value_range: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-value histogram of a reconstruction (the paper's Figs. 2-3).

    Parameters
    ----------
    volume : numpy.ndarray
        Image or volume.
    bins : int
        Number of bins.
    value_range : tuple of float, optional
        ``(low, high)``; default ``volume.min(), volume.max()``.  Use the same range for
        every reconstruction to compare them.
    mask : numpy.ndarray of bool, optional
        Only voxels where ``mask`` is True (e.g. inside the reconstruction circle).

    Returns
    -------
    counts : numpy.ndarray
        Fraction of the counted voxels per bin (sums to 1 over the range).
    edges : numpy.ndarray
        ``bins + 1`` bin edges.
    """
    v = np.asarray(volume, dtype=np.float64)
    if mask is not None:
        v = v[np.broadcast_to(mask, v.shape)]
    v = v[np.isfinite(v)].ravel()
    if value_range is None:
        value_range = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    counts, edges = np.histogram(v, bins=bins, range=value_range)
    total = max(int(counts.sum()), 1)
    return counts / total, edges


def phase_histograms(
    volume: np.ndarray,
    labels: np.ndarray,
    *,
    bins: int = 128,
    value_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Compute histograms of each phase (background, cube, spheres) and how well they separate.

    Parameters
    ----------
    volume : numpy.ndarray
        The reconstruction.
    labels : numpy.ndarray of int
        Phase per voxel, same shape (e.g. 0 background, 1 cube, 2 spheres; negative voxels
        are ignored).
    bins : int
        Number of bins.
    value_range : tuple of float, optional
        Histogram range (default: the volume's range).

    Returns
    -------
    dict
        ``edges``; ``counts``, ``mean``, ``std``: dicts keyed by label (``counts`` is the
        fraction of that phase's voxels per bin); ``separation``: per adjacent pair of labels
        ordered by mean, ``"a-b": |mean_a - mean_b| / (std_a + std_b)`` (> 1: resolved peaks).
    """
    v = np.asarray(volume, dtype=np.float64)
    lab = np.asarray(labels)
    if lab.shape != v.shape:
        raise ValueError(f"labels {lab.shape} and volume {v.shape} differ in shape")
    if value_range is None:
        value_range = (float(v.min()), float(v.max()))
    edges = np.histogram_bin_edges(v, bins=bins, range=value_range)
    counts: dict[int, np.ndarray] = {}
    means: dict[int, float] = {}
    stds: dict[int, float] = {}
    for k in sorted(int(x) for x in np.unique(lab) if x >= 0):
        vals = v[lab == k]
        counts[k] = np.histogram(vals, bins=edges)[0] / max(vals.size, 1)
        means[k] = float(vals.mean())
        stds[k] = float(vals.std())
    order = sorted(means, key=means.__getitem__)
    sep: dict[str, float] = {}
    for a, b in itertools.pairwise(order):
        spread = stds[a] + stds[b]
        sep[f"{a}-{b}"] = abs(means[b] - means[a]) / spread if spread > 0 else float("inf")
    return {"edges": edges, "counts": counts, "mean": means, "std": stds, "separation": sep}
