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

__all__ = ["backproject", "forward"]


@numba.njit(parallel=True, cache=True)
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
        row = out[s, iy]
        for i in range(n_ang):
            c = cos_t[i]
            base = yc * sin_t[i] + center - half * c
            # columns whose detector position lies inside [0, last]: no test in the inner loop
            if abs(c) < 1e-12:
                if base < 0.0 or base > last:
                    continue
                lo, hi = 0, size - 1
            else:
                a = (0.0 - base) / c
                b = (last - base) / c
                if a > b:
                    a, b = b, a
                lo = max(math.ceil(a - 1e-9), 0)
                hi = min(math.floor(b + 1e-9), size - 1)
            line = sino[i, s]
            for ix in range(lo, hi + 1):
                pos = base + ix * c
                pos = min(max(pos, 0.0), last)
                j = min(int(pos), last - 1)
                w = pos - j
                row[ix] += (1.0 - w) * line[j] + w * line[j + 1]


def backproject(
    sino: np.ndarray, theta_rad: np.ndarray, center: float, size: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Back-project filtered sinograms ``(n_angles, n_slices, width)`` onto ``(n_slices, size, size)``.

    Voxel ``[s, y, x]`` (centred coordinates ``x - (size-1)/2``) reads detector position
    ``u = x cos(theta) + y sin(theta) + center``.  With ``out`` (float32, C-contiguous) the
    projections are added to it, angle after angle in the given order: back-projecting a scan in
    pieces, in acquisition order, gives bit-for-bit the result of one call.
    """
    sino = np.ascontiguousarray(sino, dtype=np.float32)
    if out is None:
        out = np.zeros((sino.shape[1], size, size), dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != (sino.shape[1], size, size) or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be C-contiguous float32 {(sino.shape[1], size, size)}, got {out.dtype} {out.shape}"
        )
    _backproject(
        sino,
        np.cos(theta_rad).astype(np.float64),
        np.sin(theta_rad).astype(np.float64),
        float(center),
        int(size),
        out,
    )
    return out


@numba.njit(parallel=True, cache=True)
def _forward(
    vol: np.ndarray,
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    center: float,
    width: int,
    step: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Line integrals ``out[angle, slice, u]`` of ``vol[slice, y, x]`` (bilinear samples every ``step``)."""
    n_sl, ny, nx = vol.shape
    n_ang = cos_t.shape[0]
    hy = 0.5 * (ny - 1)
    hx = 0.5 * (nx - 1)
    reach = 0.5 * math.sqrt(float(nx * nx + ny * ny)) + 1.0
    n_t = int(2.0 * reach / step) + 1
    for job in numba.prange(n_ang * n_sl):
        i = job // n_sl
        s = job % n_sl
        c = cos_t[i]
        sn = sin_t[i]
        img = vol[s]
        for j in range(width):
            u = j - center
            acc = 0.0
            for k in range(n_t):
                t = -reach + k * step
                x = u * c - t * sn + hx
                y = u * sn + t * c + hy
                if x < 0.0 or y < 0.0 or x > nx - 1 or y > ny - 1:
                    continue
                x0 = min(int(x), nx - 2)
                y0 = min(int(y), ny - 2)
                wx = x - x0
                wy = y - y0
                acc += (1.0 - wy) * ((1.0 - wx) * img[y0, x0] + wx * img[y0, x0 + 1]) + wy * (
                    (1.0 - wx) * img[y0 + 1, x0] + wx * img[y0 + 1, x0 + 1]
                )
            out[i, s, j] = acc * step


def forward(
    vol: np.ndarray, theta_rad: np.ndarray, center: float, width: int, step: float = 0.5
) -> np.ndarray:
    """Parallel-beam projections ``(n_angles, n_slices, width)`` of ``vol[slice, y, x]``: the
    geometry :func:`backproject` inverts (detector position ``u = x cos + y sin + center``)."""
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    if vol.shape[1] < 2 or vol.shape[2] < 2:
        raise ValueError(f"slices must be at least 2 x 2 pixels, got {vol.shape[1:]}")
    out = np.zeros((len(theta_rad), vol.shape[0], int(width)), dtype=np.float32)
    _forward(vol, np.cos(theta_rad).astype(np.float64), np.sin(theta_rad).astype(np.float64),
             float(center), int(width), float(step), out)  # fmt: skip
    return out
