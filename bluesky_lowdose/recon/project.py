"""Forward projection of a reconstructed volume: the line integrals it predicts at given angles."""

from __future__ import annotations

import numpy as np

__all__ = ["forward_project"]


def forward_project(
    volume: np.ndarray, theta_deg: np.ndarray, *, center: float | None = None, width: int | None = None
) -> np.ndarray:
    """Line integrals of ``volume`` at ``theta_deg``, in the geometry :func:`reconstruct` inverts.

    Ray-driven, bilinear samples every half pixel; the rotation axis is the volume's centre and
    detector column ``center`` (default ``(width - 1) / 2``), so that
    ``forward_project(reconstruct(p, theta), theta)`` approximates ``p`` inside the field of view.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(n_slices, ny, nx)`` (or one ``(ny, nx)`` slice) in line-integral units per pixel.
    theta_deg : numpy.ndarray
        Angles in degrees.
    center : float, optional
        Detector column of the rotation axis.
    width : int, optional
        Detector columns (default ``nx``).

    Returns
    -------
    numpy.ndarray
        Float32 ``(n_angles, n_slices, width)`` (``(n_angles, width)`` for one slice).

    Raises
    ------
    ValueError
        Wrong dimensions, NaN/inf, or no angle.
    """
    vol = np.asarray(volume)
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    if vol.ndim != 3:
        raise ValueError(f"volume must be (n_slices, ny, nx) or one slice (ny, nx), got shape {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise ValueError("volume contains NaN or infinite values")
    theta = np.atleast_1d(np.asarray(theta_deg, dtype=np.float64))
    if theta.ndim != 1 or theta.size == 0 or not np.all(np.isfinite(theta)):
        raise ValueError(f"theta_deg must be a non-empty 1-D array of finite angles, got {theta_deg!r}")
    w = vol.shape[2] if width is None else int(width)
    c = (w - 1) / 2.0 if center is None else float(center)
    from ._kernels import forward

    out = forward(vol, np.deg2rad(theta), c, w)
    return out[:, 0] if squeeze else out
