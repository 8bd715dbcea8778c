"""The public reconstruction entry point."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from .backends import resolve_backend
from .filters import FILTERS

__all__ = ["reconstruct", "zero_outside_circle"]

logger = logging.getLogger(__name__)

#: Memory budget of one chunk of slices (input, filtered copy and output), bytes.
CHUNK_BYTES = 256 * 2**20


#: Largest magnitude a projection value may have (line integrals are a few units; float32's
#: filter overflows near 1e38 / width).
MAX_ABS_VALUE = 1e30


def _validate(projections: np.ndarray, theta_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    p = np.asarray(projections)
    squeeze = p.ndim == 2
    if squeeze:
        p = p[:, None, :]
    if p.ndim != 3:
        raise ValueError(
            "projections must be (n_angles, n_slices, width) or one sinogram (n_angles, width), "
            f"got {p.shape}"
        )
    if min(p.shape) == 0:
        raise ValueError(f"projections are empty: shape {p.shape}")
    if np.iscomplexobj(p):
        raise TypeError(
            "projections are complex: give real line integrals (-log of the transmission), not a "
            "Fourier transform or a phase-retrieved complex field"
        )
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer) or p.dtype == bool):
        raise TypeError(f"projections must be real numbers, got dtype {p.dtype}")
    theta = np.asarray(theta_deg, dtype=np.float64)
    if theta.ndim != 1 or theta.size != p.shape[0]:
        raise ValueError(f"theta_deg has {theta.size} angles but projections have {p.shape[0]} (axis 0)")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta_deg contains NaN or infinite values")
    distinct = np.unique(np.round(np.mod(theta, 360.0), 9)).size
    if distinct < 2:
        raise ValueError(
            f"{theta.size} projection(s) at {distinct} distinct angle ({theta[0]:g}°): a reconstruction "
            "needs projections over a rotation (was the rotation recorded?)"
        )
    return p, theta, squeeze


def zero_outside_circle(volume: np.ndarray) -> np.ndarray:
    """Zero, in place, every voxel outside the inscribed circle of radius ``width / 2`` of each slice.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(..., width, width)`` slices.

    Returns
    -------
    numpy.ndarray
        ``volume`` itself.
    """
    w = volume.shape[-1]
    c = np.arange(w) - (w - 1) / 2.0
    volume[..., c[None, :] ** 2 + c[:, None] ** 2 > (w / 2.0) ** 2] = 0.0
    return volume


def reconstruct(
    projections: np.ndarray,
    theta_deg: np.ndarray,
    *,
    center: float | None = None,
    backend: str | None = None,
    filter: str = "parzen",
    ncore: int | None = None,
    mask: bool = True,
    progress: bool = False,
    chunk_slices: int | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Reconstruct a volume from parallel-beam line integrals, slice by slice.

    Parameters
    ----------
    projections : numpy.ndarray
        Line integrals (``-log`` of the transmission, see
        :func:`~bluesky_lowdose.recon.to_line_integrals`) ``(n_angles, n_slices, width)``,
        or one sinogram ``(n_angles, width)``.
    theta_deg : numpy.ndarray
        Rotation angles in degrees, one per projection.
    center : float, optional
        Column of the rotation axis; None means the detector centre ``(width - 1) / 2``
        (use :func:`~bluesky_lowdose.recon.find_center` to estimate it).
    backend : str, optional
        ``"tomopy"``, ``"nufft"`` (gridrec-class, FINUFFT), ``"fbp"``, ``"dfi"``,
        ``"skimage"`` or ``"keras"`` (the FBP in Keras operations: on a GPU where Keras's
        backend has one); None picks the first available in that order, ``"keras"`` excepted
        (``"nufft"`` where TomoPy is absent).
    filter : str
        Apodisation of the ramp filter: ``"parzen"`` (default, as TomoPy's gridrec in the
        paper), ``"hann"``, ``"hamming"``, ``"shepp-logan"``, ``"cosine"`` or ``"ramp"``.
    ncore : int, optional
        Threads (default: all cores).
    mask : bool
        Zero everything outside the inscribed circle of radius ``width / 2`` (the region
        seen at every angle).
    progress : bool
        Show a tqdm progress bar over slices.
    chunk_slices : int, optional
        Slices reconstructed together; by default as many as fit in about 256 MiB.
    info : dict, optional
        Filled with provenance: backend, filter, center, angles, shape, seconds.

    Returns
    -------
    numpy.ndarray
        Float32 ``(n_slices, width, width)`` indexed ``[z, y, x]`` like
        :meth:`bluesky_lowdose.physics.Phantom.voxelize` (``(width, width)`` for a single
        sinogram), in the units of the line integrals per pixel.

    Raises
    ------
    ValueError
        For mismatched angles, wrong dimensions, NaN/inf, a centre outside the detector or
        an unknown filter.
    """
    p, theta_d, squeeze = _validate(projections, theta_deg)
    n_ang, n_sl, width = p.shape
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose one of {', '.join(FILTERS)}")
    c = (width - 1) / 2.0 if center is None else float(center)
    if not (np.isfinite(c) and 0.0 <= c <= width - 1):
        raise ValueError(f"center {center!r} lies outside the detector [0, {width - 1}]")
    name = resolve_backend(backend)
    from .backends import IMPLEMENTATIONS

    impl = IMPLEMENTATIONS[name]
    ncore = int(ncore or os.cpu_count() or 1)
    theta = np.deg2rad(theta_d)
    if chunk_slices is None:
        per_slice = 4 * (3 * n_ang * width + width * width)
        chunk_slices = int(np.clip(CHUNK_BYTES // max(per_slice, 1), 1, 64))
    chunk_slices = max(1, int(chunk_slices))

    out = np.empty((n_sl, width, width), dtype=np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_sl, desc=f"reconstruct ({name})", unit="slice")
    t0 = time.perf_counter()
    try:
        for s0 in range(0, n_sl, chunk_slices):
            s1 = min(s0 + chunk_slices, n_sl)
            chunk = np.asarray(p[:, s0:s1, :], dtype=np.float32)
            if not np.all(np.isfinite(chunk)):
                raise ValueError(f"projections contain NaN or infinite values (slices {s0}-{s1 - 1})")
            # the filter sums a row's values: beyond ~1e30 single precision overflows to inf (the
            # volume would come out non-finite without a word)
            peak = float(np.abs(chunk).max())
            if peak > MAX_ABS_VALUE:
                raise ValueError(
                    f"projections hold values up to {peak:.3g}: line integrals are small numbers (a few "
                    f"units); above {MAX_ABS_VALUE:.0e} the filter overflows (raw counts or a wrong scale?)"
                )
            out[s0:s1] = impl(chunk, theta, c, filter, ncore)
            if bar is not None:
                bar.update(s1 - s0)
    finally:
        if bar is not None:
            bar.close()
    if mask:
        zero_outside_circle(out)
    elapsed = time.perf_counter() - t0
    logger.debug(
        "reconstructed %d slices of %d^2 from %d angles with %s in %.2f s", n_sl, width, n_ang, name, elapsed
    )
    if info is not None:
        info.update(
            backend=name,
            filter=filter,
            center=c,
            n_angles=n_ang,
            theta_range_deg=[float(theta_d.min()), float(theta_d.max())],
            shape=[n_sl, width, width],
            mask=mask,
            seconds=elapsed,
        )
    return out[0] if squeeze else out
