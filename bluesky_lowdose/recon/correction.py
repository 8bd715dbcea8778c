"""Flat/dark-field correction, the ``-log`` step and optional stripe (ring) removal.

Flats and darks are reduced with the **median** over the frame axis (robust to a zinger or a
cosmic ray in one frame; for Poisson data it equals the mean to well under 1 %), then::

    transmission = (I - D) / (F - D)

Pixels whose denominator ``F - D`` is not positive (dead or saturated pixels) and values
below ``floor`` are set to ``floor``, so that ``-log`` is always finite; NaN anywhere in the
input raises ``ValueError``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["flat_dark_correct", "remove_stripes", "to_line_integrals", "transmission_to_line_integrals"]

logger = logging.getLogger(__name__)


def _reduce(stack: np.ndarray, name: str, frame_shape: tuple[int, ...], method: str) -> np.ndarray:
    a = np.asarray(stack)
    if a.ndim == len(frame_shape):
        a = a[None]
    if a.ndim != len(frame_shape) + 1 or a.shape[1:] != frame_shape:
        raise ValueError(
            f"{name} must have frame shape {frame_shape} (optionally stacked), got {np.shape(stack)}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contain NaN or infinite values")
    if method == "median":
        return np.median(a, axis=0).astype(np.float32)
    if method == "mean":
        return a.mean(axis=0, dtype=np.float64).astype(np.float32)
    raise ValueError(f"average must be 'median' or 'mean', got {method!r}")


def flat_dark_correct(
    frames: np.ndarray,
    flats: np.ndarray,
    darks: np.ndarray,
    *,
    floor: float = 1e-6,
    average: str = "median",
) -> np.ndarray:
    """Normalise raw frames to transmission ``(I - D) / (F - D)``.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(n, rows, cols)`` or a single ``(rows, cols)`` raw frame (any numeric dtype).
    flats, darks : numpy.ndarray
        Open-beam and dark frames, ``(k, rows, cols)`` or ``(rows, cols)``.
    floor : float
        Smallest transmission returned (> 0): replaces values at or below it and every pixel
        whose ``F - D`` is not positive.
    average : {"median", "mean"}
        How the flats and darks are combined.

    Returns
    -------
    numpy.ndarray
        Float32 transmission, same shape as ``frames``.

    Raises
    ------
    ValueError
        For mismatched shapes, a non-positive floor, or NaN/inf in any input.
    """
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    img = np.asarray(frames)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"frames must be a 2-D frame or a 3-D stack, got shape {img.shape}")
    img = img.astype(np.float32, copy=False)
    if not np.all(np.isfinite(img)):
        raise ValueError("frames contain NaN or infinite values")
    shape = img.shape[-2:]
    flat = _reduce(flats, "flats", shape, average)
    dark = _reduce(darks, "darks", shape, average)
    denom = flat - dark
    bad = ~(denom > 0)
    if np.any(bad):
        logger.warning(
            "%d detector pixels have flat <= dark; their transmission is set to %g", int(bad.sum()), floor
        )
    safe = np.where(bad, 1.0, denom).astype(np.float32)
    out = (img - dark) / safe
    out = np.where(bad, np.float32(floor), out)
    np.maximum(out, np.float32(floor), out=out)
    return out.astype(np.float32, copy=False)


def transmission_to_line_integrals(
    transmission: np.ndarray, *, floor: float | np.ndarray = 1e-6
) -> np.ndarray:
    """``-log`` of a transmission, the line integrals reconstruction expects.

    Parameters
    ----------
    transmission : numpy.ndarray
        Transmission values; those below ``floor`` are raised to it first.
    floor : float or numpy.ndarray
        Positive lower bound (caps the line integral at ``-log(floor)``); an array (e.g. half a
        photon of each pixel's open beam) broadcasts against the frames.

    Returns
    -------
    numpy.ndarray
        Float32 line integrals.

    Raises
    ------
    ValueError
        For NaN in the input or a non-positive floor.
    """
    fl = np.asarray(floor, dtype=np.float32)
    if not (fl.size and np.all(fl > 0)):
        raise ValueError(f"floor must be positive, got {floor}")
    t = np.asarray(transmission, dtype=np.float32)
    if np.isnan(t).any():
        raise ValueError("transmission contains NaN")
    return (-np.log(np.maximum(t, fl))).astype(np.float32)


def to_line_integrals(
    frames: np.ndarray,
    flats: np.ndarray,
    darks: np.ndarray,
    *,
    floor: float = 1e-6,
    average: str = "median",
) -> np.ndarray:
    """Raw frames to line integrals: :func:`flat_dark_correct` then ``-log``.

    Parameters
    ----------
    frames, flats, darks : numpy.ndarray
        As in :func:`flat_dark_correct`.
    floor : float
        Transmission floor (line integrals are at most ``-log(floor)``, 13.8 by default).
    average : {"median", "mean"}
        How the flats and darks are combined.

    Returns
    -------
    numpy.ndarray
        Float32, same shape as ``frames``; for a stack of projections this is the
        ``(n_angles, n_slices, width)`` input of :func:`~bluesky_lowdose.recon.reconstruct`.
    """
    t = flat_dark_correct(frames, flats, darks, floor=floor, average=average)
    return transmission_to_line_integrals(t, floor=floor)


def remove_stripes(projections: np.ndarray, *, size: int = 21, ncore: int | None = None) -> np.ndarray:
    """Suppress stripes in the sinograms (ring artefacts in the slices).

    Applies algotom's sorting-based stripe removal (Vo et al., Opt. Express 26, 28396 (2018),
    algorithm 3) to every sinogram ``projections[:, v, :]``.

    Parameters
    ----------
    projections : numpy.ndarray
        Line integrals ``(n_angles, n_slices, width)`` or one sinogram ``(n_angles, width)``.
    size : int
        Width of the median filter across the detector, in pixels.
    ncore : int, optional
        Threads (default: all cores).

    Returns
    -------
    numpy.ndarray
        Float32 array of the same shape.
    """
    from algotom.prep.removal import remove_stripe_based_sorting

    from ._threads import run_parallel

    p = np.asarray(projections, dtype=np.float32)
    squeeze = p.ndim == 2
    if squeeze:
        p = p[:, None, :]
    if p.ndim != 3:
        raise ValueError(f"projections must be 2-D or 3-D, got shape {p.shape}")
    out = np.empty_like(p)

    def one(v: int) -> None:
        out[:, v, :] = remove_stripe_based_sorting(p[:, v, :], size=size, dim=1)

    from os import cpu_count

    run_parallel(one, ((v,) for v in range(p.shape[1])), ncore or cpu_count() or 1)
    return out[:, 0, :] if squeeze else out
