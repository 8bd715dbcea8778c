"""The bias of ``-log`` at low photon counts, and its correction (pure numpy/scipy).

A pixel that expects ``mu = N0 exp(-p)`` photons (``N0`` of the open beam, ``p`` the line
integral) records ``K ~ Poisson(mu)`` plus additive Gaussian noise ``sigma`` (read noise, in
photons), floored at half a photon so that the logarithm stays finite.  The line integral
estimated from one frame, ``y = -log(max(K, 1/2) / N0)``, is biased:

    E[y] = p + b(mu),   b(mu) = log(mu) - E[log max(K + e, 1/2)]  (~ (mu + sigma^2) / (2 mu^2) for large mu)

The bias is the same in every subset of the rotation, so Noise2Inverse keeps it, and it is
largest in the most attenuating parts of the object.  :func:`debias_line_integrals` removes it:
the local mean ``m`` of ``y`` (a small spatial smoothing of each frame) estimates ``E[y]``;
inverting ``E[y](mu)`` (tabulated exactly from the Poisson distribution) gives ``mu_hat`` and
``p_hat = log(N0 / mu_hat)``, and ``y - m + p_hat`` is returned: the noise of ``y`` is kept, its
local mean is moved to the unbiased value.  On a constant input equal to the exact expectation
``E[y]`` the correction returns ``p`` exactly (up to the table's interpolation).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["debias_line_integrals", "expected_log_counts", "log_bias"]

#: Half a photon: the floor of the counts inside the logarithm.
FLOOR_PHOTONS = 0.5
_GRID = np.geomspace(1e-2, 1e5, 1400)


@functools.lru_cache(maxsize=16)
def _table(read_noise: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, E[log max(K + e, floor)])`` on a log grid (exact sums; asymptotic above 2e4)."""
    from scipy import stats

    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    weights = weights / weights.sum()
    out = np.empty_like(_GRID)
    for i, mu in enumerate(_GRID):
        if mu > 2e4:
            out[i] = np.log(mu) - (mu + read_noise**2) / (2 * mu * mu)
            continue
        spread = 12.0 * np.sqrt(mu) + 12.0
        k = np.arange(max(0, int(mu - spread)), int(mu + spread) + 1, dtype=np.float64)
        pmf = stats.poisson.pmf(k, mu)
        if read_noise > 0:
            vals = np.log(np.maximum(k[:, None] + read_noise * nodes[None, :], floor)) @ weights
        else:
            vals = np.log(np.maximum(k, floor))
        out[i] = float(pmf @ vals / pmf.sum())
    return _GRID.copy(), out


def expected_log_counts(mu: Any, *, read_noise: float = 0.0, floor: float = FLOOR_PHOTONS) -> np.ndarray:
    """``E[log max(K + e, floor)]`` for ``K ~ Poisson(mu)``, ``e ~ N(0, read_noise^2)``.

    Parameters
    ----------
    mu : array_like
        Expected photons (clipped to the table's range 0.01 .. 1e5).
    read_noise : float
        Standard deviation of the additive noise, photons.
    floor : float
        Floor of the counts inside the logarithm, photons.

    Returns
    -------
    numpy.ndarray
        The expectation, float64.
    """
    grid, table = _table(round(float(read_noise), 3), float(floor))
    m = np.clip(np.asarray(mu, np.float64), grid[0], grid[-1])
    return np.interp(np.log(m), np.log(grid), table)


def log_bias(mu: Any, *, read_noise: float = 0.0, floor: float = FLOOR_PHOTONS) -> np.ndarray:
    """The bias ``E[-log(max(K + e, floor) / N0)] - (-log(mu / N0))`` of the estimated line integral.

    Parameters
    ----------
    mu : array_like
        Expected photons behind the sample.
    read_noise : float
        Additive noise, photons.
    floor : float
        Count floor, photons.

    Returns
    -------
    numpy.ndarray
        The bias (positive at moderate counts, ~ 1 / (2 mu) at high counts).
    """
    return np.log(np.clip(np.asarray(mu, np.float64), _GRID[0], _GRID[-1])) - expected_log_counts(
        mu, read_noise=read_noise, floor=floor
    )


def debias_line_integrals(
    line_integrals: Any,
    open_beam_counts: Any,
    *,
    read_noise: float = 0.0,
    floor: float = FLOOR_PHOTONS,
    smooth: float = 1.5,
) -> np.ndarray:
    """Remove the low-count bias of ``-log`` from line integrals (see the module).

    Parameters
    ----------
    line_integrals : array_like
        ``(rows, cols)`` or ``(n, rows, cols)``: ``-log`` of the transmission, floored at
        ``floor / open_beam_counts``.
    open_beam_counts : float or array_like
        Detected photons of the open beam per pixel (scalar or ``(rows, cols)``) at the frames'
        exposure.
    read_noise : float
        Additive noise in photons.
    floor : float
        The count floor used when taking the logarithm, photons.
    smooth : float
        Standard deviation (pixels) of the Gaussian that estimates each frame's local mean; 0
        treats every pixel on its own (for inputs that are already expectations).

    Returns
    -------
    numpy.ndarray
        Float32 corrected line integrals of the input's shape.

    Raises
    ------
    ValueError
        NaN/inf, non-positive counts or shapes that do not broadcast.
    """
    from scipy import ndimage

    y = np.asarray(line_integrals, dtype=np.float64)
    single = y.ndim == 2
    if single:
        y = y[None]
    if y.ndim != 3:
        raise ValueError(f"line integrals must be (rows, cols) or (n, rows, cols), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("line integrals contain NaN or infinite values")
    n0 = np.asarray(open_beam_counts, np.float64)
    if not (np.all(np.isfinite(n0)) and np.all(n0 > 0)):
        raise ValueError("open_beam_counts must be positive and finite")
    try:
        n0 = np.broadcast_to(n0, y.shape[1:])
    except ValueError as err:
        raise ValueError(f"open_beam_counts {n0.shape} do not match frames {y.shape[1:]}") from err
    mean = ndimage.gaussian_filter(y, sigma=(0, smooth, smooth), mode="nearest") if smooth > 0 else y
    # invert E[y](mu) = log N0 - E[log max(K + e, floor)] for mu on the table (monotone in mu)
    grid, table = _table(round(float(read_noise), 3), float(floor))
    target = np.log(n0)[None] - mean
    log_mu = np.interp(target, table, np.log(grid))
    p_hat = np.log(n0)[None] - log_mu
    out = (y - mean + p_hat).astype(np.float32)
    return out[0] if single else out
