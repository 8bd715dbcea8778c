"""Rotation-centre estimation."""

from __future__ import annotations

import numpy as np

__all__ = ["find_center"]


def find_center(
    projections: np.ndarray,
    *,
    slices: slice | list[int] | None = None,
    search: tuple[float, float] | None = None,
    step: float = 0.25,
    ncore: int | None = None,
) -> float:
    """Estimate the rotation centre (detector column) of a 180-degree scan.

    Uses Vo's Fourier-domain method (Opt. Express 22, 19078 (2014);
    :func:`algotom.prep.calculation.find_center_vo`) on the sinogram summed over the chosen
    slices.  Summing over detector rows is exact for parallel beams (it is the sinogram of
    the object summed along ``z``) and averages the noise.

    Parameters
    ----------
    projections : numpy.ndarray
        Line integrals ``(n_angles, n_slices, width)`` or one sinogram ``(n_angles, width)``
        spanning 180 degrees.
    slices : slice or list of int, optional
        Detector rows to use (default: all).
    search : tuple of float, optional
        ``(start, stop)`` columns searched (default: ``width / 2 +- width / 8``).
    step : float
        Sub-pixel accuracy of the fine search.
    ncore : int, optional
        Threads used by algotom.

    Returns
    -------
    float
        The column of the rotation axis; ``(width - 1) / 2`` is the detector centre.

    Raises
    ------
    ValueError
        For a wrong shape or NaN in the data.
    """
    from algotom.prep.calculation import find_center_vo

    p = np.asarray(projections, dtype=np.float32)
    if p.ndim == 2:
        sino = p
    elif p.ndim == 3:
        sel = p[:, slices, :] if slices is not None else p
        if sel.ndim != 3 or sel.shape[1] == 0:
            raise ValueError("no detector rows selected")
        sino = sel.sum(axis=1, dtype=np.float64).astype(np.float32)
    else:
        raise ValueError(f"projections must be 2-D or 3-D, got shape {p.shape}")
    if not np.all(np.isfinite(sino)):
        raise ValueError("projections contain NaN or infinite values")
    n_ang, width = sino.shape
    if n_ang < 3 or width < 8:
        raise ValueError(f"sinogram too small to find a centre: {sino.shape}")
    if search is None:
        search = (width / 2.0 - width / 8.0, width / 2.0 + width / 8.0)
    start, stop = search
    return float(find_center_vo(sino, start=start, stop=stop, step=step, ncore=ncore))
