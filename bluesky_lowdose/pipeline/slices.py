"""BM3D on reconstructed slices, its sigma tuned on the angle subsets (no reference needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["bm3d_slices", "coarse_to_fine", "slice_profile"]

#: Multiples of the measured noise level tried when tuning sigma.
FACTORS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
#: Where the search over :data:`FACTORS` starts (their indices).
COARSE = (1, 4, 7)
#: Slices used for tuning.
TUNING_SLICES = 6
#: pip ``bm3d``'s own profile (its PSD refinement on): on 128-pixel slices it gave 0.24-0.38 dB more
#: PSNR than the conventional BM3D that :data:`bluesky_lowdose.model.baselines.BM3D_PROFILE` uses on
#: projections (``benchmarks/bench_bm3d_modes.py``, 128³)
SLICE_BM3D_PROFILE: dict[str, object] = {}
#: Slices at most this wide get the conventional BM3D instead: the refinement costs ~0.3 s per call
#: whatever the size (10-20x the conventional filter's time on 64² slices) and gave no more PSNR
#: there (``benchmarks/bench_bm3d_modes.py --size 64``, docs/evaluation.md)
CONVENTIONAL_MAX_WIDTH = 64


def slice_profile(width: int) -> dict[str, object]:
    """The BM3D profile for slices ``width`` pixels wide (recorded in the result's provenance).

    Parameters
    ----------
    width : int
        Slice width in pixels.

    Returns
    -------
    dict
        :data:`~bluesky_lowdose.model.baselines.BM3D_PROFILE` (conventional) up to
        :data:`CONVENTIONAL_MAX_WIDTH`, else :data:`SLICE_BM3D_PROFILE` (the library's own).
    """
    from ..model.baselines import BM3D_PROFILE

    return dict(BM3D_PROFILE if width <= CONVENTIONAL_MAX_WIDTH else SLICE_BM3D_PROFILE)


def coarse_to_fine(
    n: int, loss: Callable[[int], float], start: Sequence[int] = COARSE
) -> tuple[int, dict[int, float]]:
    """The index in ``range(n)`` with the least ``loss``, by a coarse grid then its neighbours.

    ``loss`` is evaluated at ``start``, then at the neighbours of the best index so far until
    neither lowers it: for a loss that falls then rises along the indices (as the tuning loss
    does along sigma) this is the argmin of all ``n``, in about 5 evaluations instead of ``n``.

    Parameters
    ----------
    n : int
        Number of candidates.
    loss : callable
        ``loss(i)``, evaluated at most once per index.
    start : sequence of int
        The coarse grid.

    Returns
    -------
    tuple
        The best index and ``{index: loss}`` of every evaluated one.

    Raises
    ------
    ValueError
        ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"coarse_to_fine needs at least one candidate, got n={n}")
    seen: dict[int, float] = {}
    for i in [*start] if any(0 <= i < n for i in start) else [n // 2]:  # a grid beyond n: the middle
        if 0 <= i < n and i not in seen:
            seen[i] = float(loss(i))
    best = min(seen, key=seen.__getitem__)
    while True:
        for j in (best - 1, best + 1):
            if 0 <= j < n and j not in seen:
                seen[j] = float(loss(j))
        new = min(seen, key=seen.__getitem__)
        if new == best:
            return best, seen
        best = new


def _inside(shape: tuple[int, ...]) -> np.ndarray:
    w = shape[-1]
    c = np.arange(w) - (w - 1) / 2.0
    return c[None, :] ** 2 + c[:, None] ** 2 <= (0.9 * w / 2.0) ** 2


def bm3d_slices(
    parts: list[np.ndarray],
    full: np.ndarray,
    *,
    factor: float | None = None,
    progress: bool = False,
    rows: slice | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Denoise every slice of ``full`` with BM3D, sigma chosen from two subsets' reconstructions.

    The noise of the two subsets is independent, so the sigma for which BM3D of one subset's
    slice is closest to the other subset's slice is the one closest to the clean slice (the
    Noise2Noise argument); the full reconstruction has half the noise variance of a subset's.

    Parameters
    ----------
    parts : list of numpy.ndarray
        At least two subset reconstructions ``(Z, Y, X)``.
    full : numpy.ndarray
        The reconstruction of the whole scan.
    factor : float, optional
        Sigma as a multiple of the measured noise level, already tuned (e.g. by ``auto`` on its
        slab of the same scan): no tuning here, the noise level is still measured.
    progress : bool
        Progress bar over slices.
    rows : slice, optional
        Denoise only these slices (e.g. the ones ``auto`` judges a candidate on); the others keep
        ``full``, and the record names the ones denoised (``denoised_slices``). Sigma is tuned as
        without it. Default: every slice.

    Returns
    -------
    tuple
        The denoised volume and a provenance record (sigma, factor, tuning losses).
    """
    from ..model.baselines import bm3d_each

    if len(parts) < 2:
        raise ValueError("BM3D on slices is tuned on two angle subsets: give at least two")
    a, b = parts[0], parts[1]
    inside = _inside(a.shape)
    sigma_half = float(np.std((a - b)[:, inside]) / np.sqrt(2.0))
    sigma_full = sigma_half / np.sqrt(len(parts))
    profile = slice_profile(full.shape[-1])
    record: dict[str, Any] = {"kind": "bm3d", "profile": profile}
    if factor is None:
        spread = full[:, inside].std(axis=1)
        tune = np.sort(np.argsort(spread)[::-1][: min(TUNING_SLICES, len(full))])

        def loss(i: int) -> float:  # the tuning slices side by side, at one factor
            den = bm3d_each([a[z] for z in tune], FACTORS[i] * sigma_half, profile=profile)
            return float(np.mean([np.mean((d - b[z])[inside] ** 2) for d, z in zip(den, tune, strict=True)]))

        index, losses = coarse_to_fine(len(FACTORS), loss)
        best = FACTORS[index]
        record["tuning"] = (
            "sigma minimising ||BM3D(subset A) - subset B||^2 over the most structured slices "
            f"(factors {', '.join(f'{FACTORS[i]:g}' for i in COARSE)}, then the best one's neighbours "
            "until none is better)"
        )
        record["tuning_losses"] = {str(FACTORS[i]): losses[i] for i in sorted(losses)}
    else:
        best = float(factor)
        if not (np.isfinite(best) and best > 0):
            raise ValueError(f"factor must be a positive number, got {factor!r}")
        record["tuning"] = "factor given (tuned before on this scan), not tuned again"
    out = np.empty_like(full) if rows is None else np.array(full, copy=True)  # kept where not filtered
    cut = slice(None) if rows is None else rows
    sigma = best * sigma_full
    bm3d_each(full[cut], sigma, out=out[cut], progress=progress, desc="bm3d slices", profile=profile)
    record.update(sigma=sigma, factor=best, noise_sigma_full=sigma_full)
    first, last = cut.indices(len(full))[:2]
    if (first, last) != (0, len(full)):  # some slices left plain: said so
        record["denoised_slices"] = [first, last]
    return out.astype(np.float32), record
