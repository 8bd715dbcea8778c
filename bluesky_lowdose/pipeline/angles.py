"""Angles: wrapped differences and matching reference angles to projection angles (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TOLERANCE",
    "angle_difference",
    "check_rotation",
    "match_angles",
    "nominal_angle",
    "same_view_indices",
]

#: Default tolerance (degrees) when matching reference angles to projection angles.
DEFAULT_TOLERANCE = 0.05


def angle_difference(a: Any, b: Any) -> np.ndarray:
    """Signed difference ``a - b`` in degrees, wrapped into ``[-180, 180)``.

    Parameters
    ----------
    a, b : array_like
        Angles in degrees (broadcast together).

    Returns
    -------
    numpy.ndarray
        The wrapped difference.
    """
    return (np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0


def match_angles(wanted: Any, available: Any, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """For each wanted angle, the index of the nearest available angle within ``tolerance``.

    Angles are compared modulo 360 degrees (0 and 360 match; 0 and 180 do not: those are
    mirrored projections).

    Parameters
    ----------
    wanted, available : array_like
        1-D angles in degrees.
    tolerance : float
        Largest accepted difference in degrees.

    Returns
    -------
    numpy.ndarray
        An int array of ``len(wanted)``: index into ``available``, or -1 where nothing lies within
        ``tolerance``.

    Raises
    ------
    ValueError
        A negative or NaN tolerance.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 degrees, got {tolerance}")
    w = np.atleast_1d(np.asarray(wanted, np.float64))
    a = np.atleast_1d(np.asarray(available, np.float64))
    if a.size == 0:
        return np.full(w.shape, -1, dtype=np.int64)
    dist = np.abs(angle_difference(w[:, None], a[None, :]))
    nearest = np.argmin(dist, axis=1)
    ok = dist[np.arange(len(w)), nearest] <= tolerance
    return np.where(ok, nearest, -1).astype(np.int64)


def same_view_indices(theta_deg: Any, reference_deg: Any) -> np.ndarray:
    """The frames that see the sample along the same lines as a reference angle.

    A frame at ``θ`` and one at ``θ + 180°`` integrate along the same lines (mirrored): both are
    the "same view".  A frame belongs to a reference angle's view when it lies within half of the
    scan's angular step of it (modulo 180°), so exactly the frame on the reference angle (and its
    mirror) is found on a regular scan, and none when the reference lies between two frames.

    Parameters
    ----------
    theta_deg : array_like
        The scan's angles, degrees.
    reference_deg : array_like
        The reference angles, degrees.

    Returns
    -------
    numpy.ndarray
        Sorted, unique int indices into ``theta_deg``.
    """
    theta = np.asarray(theta_deg, np.float64).ravel()
    ref = np.atleast_1d(np.asarray(reference_deg, np.float64)).ravel()
    if theta.size < 2 or ref.size == 0:
        return np.zeros(0, np.int64)
    folded = np.unique(np.round(np.mod(theta, 180.0), 9))
    # the two half-turns of a 360° scan fold onto (nearly) the same angles: jitter is not a step
    merge = max(DEFAULT_TOLERANCE, 0.1 * 180.0 / folded.size)
    folded = folded[np.concatenate([[True], np.diff(folded) > merge])]
    gaps = np.diff(np.concatenate([folded, folded[:1] + 180.0]))
    step = float(np.median(gaps)) if folded.size > 1 else 180.0
    d = np.abs(np.mod(theta[None, :] - ref[:, None] + 90.0, 180.0) - 90.0)
    return np.flatnonzero((d < 0.5 * step - 1e-9).any(axis=0) | (d <= 1e-6).any(axis=0)).astype(np.int64)


def nominal_angle(readback: float, planned: Any, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """The planned angle a motor readback belongs to (real stages jitter), else the readback.

    Parameters
    ----------
    readback : float
        The measured angle, degrees.
    planned : array_like
        The planned angles, degrees.
    tolerance : float
        Largest accepted difference (modulo 360 degrees).

    Returns
    -------
    float
        The matching planned angle, or the readback rounded to 1e-6 degree.
    """
    planned = np.atleast_1d(np.asarray(planned, np.float64))
    idx = match_angles([readback], planned, tolerance)[0] if planned.size else -1
    return float(planned[idx]) if idx >= 0 else round(float(readback), 6)


def check_rotation(theta_deg: Any) -> None:
    """Refuse angles that cannot be a tomographic rotation in degrees, saying what they look like.

    Parameters
    ----------
    theta_deg : array_like
        The projection angles, degrees.

    Raises
    ------
    ValueError
        Fewer than two distinct angles (all 0°: the rotation was not recorded), or a span within
        1 % of π or 2π with more than a handful of angles: radians labelled as degrees.
    """
    theta = np.asarray(theta_deg, np.float64).ravel()
    distinct = np.unique(np.round(theta, 6))
    if distinct.size < 2:
        value = f"{distinct[0]:g}°" if distinct.size else "none"
        raise ValueError(
            f"all {theta.size} projection angles are {value}: no rotation to reconstruct "
            "(was the rotation stage recorded?)"
        )
    span = float(theta.max() - theta.min())
    for turn, name in ((np.pi, "π"), (2 * np.pi, "2π")):
        if theta.size > 8 and abs(span - turn) <= 0.01 * turn:
            raise ValueError(
                f"the {theta.size} projection angles span {span:.4g}°, i.e. {name} radians: the angles "
                "look like radians labelled as degrees (multiply them by 180/π)"
            )
