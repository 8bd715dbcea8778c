"""Numba kernels of the reconstruction (imported lazily: importing this module compiles nothing yet).

The back-projector is parallel over output rows, so threads never write the same voxel:
results are deterministic and independent of the thread count.  (algotom 1.7's
``back_projection_cpu`` is parallel over angles and accumulates into one shared image,
which is a data race: two identical calls on 2 threads differed by up to ~1e-3 relative.)
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["backproject"]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _backproject(
    sino: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, center: float, size: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Accumulate ``sino[angle, slice, u]`` into ``out[slice, y, x]`` (linear interpolation in u)."""
    n_ang, n_sl, width = sino.shape
    half = 0.5 * (size - 1)
    last = width - 1
    for job in numba.prange(n_sl * size):
        s = job // size
        iy = job % size
        yc = iy - half
        for i in range(n_ang):
            c = cos_t[i]
            base = yc * sin_t[i] + center - half * c
            for ix in range(size):
                pos = base + ix * c
                if pos < 0.0 or pos > last:
                    continue
                j = math.floor(pos)
                if j >= last:
                    out[s, iy, ix] += sino[i, s, last]
                else:
                    w = pos - j
                    out[s, iy, ix] += (1.0 - w) * sino[i, s, j] + w * sino[i, s, j + 1]


def backproject(sino: np.ndarray, theta_rad: np.ndarray, center: float, size: int) -> np.ndarray:
    """Back-project filtered sinograms ``(n_angles, n_slices, width)`` onto ``(n_slices, size, size)``.

    Voxel ``[s, y, x]`` (centred coordinates ``x - (size-1)/2``) reads detector position
    ``u = x cos(theta) + y sin(theta) + center``.
    """
    sino = np.ascontiguousarray(sino, dtype=np.float32)
    out = np.zeros((sino.shape[1], size, size), dtype=np.float32)
    _backproject(
        sino,
        np.cos(theta_rad).astype(np.float64),
        np.sin(theta_rad).astype(np.float64),
        float(center),
        int(size),
        out,
    )
    return out
