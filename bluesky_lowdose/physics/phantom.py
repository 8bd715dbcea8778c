"""The synthetic phantom of Yang et al. (2018) and its exact parallel-beam projections.

A solid cube of value 0.3 holds randomly placed, non-overlapping spheres of value 1.0.
At 512^3 the sphere diameters are 4-20 voxels; they scale with the volume size, with a
floor of 2 voxels so that spheres stay visible in the small volumes used by tests.

Because the phantom is analytic, its projections are exact line integrals (evaluated at
the detector pixel centres), not resampled voxel sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Phantom", "make_phantom"]

#: Sphere diameters at 512^3, in voxels (the paper's values).
PAPER_DIAMETER_RANGE = (4.0, 20.0)
#: The minimum sphere diameter after scaling, in voxels.
MIN_DIAMETER = 2.0


def _centres(n: int) -> np.ndarray:
    """Coordinates of pixel/voxel centres, centred on the rotation axis at ``(n-1)/2``."""
    return np.arange(n, dtype=np.float64) - (n - 1) / 2.0


@dataclass(frozen=True)
class Phantom:
    """A cube of spheres, described analytically.

    Parameters
    ----------
    size : int
        Edge of the cubic volume and width/height of the detector, in voxels/pixels.
    cube_half_width : float
        Half the edge of the cube, in voxels.
    spheres : numpy.ndarray
        ``(k, 4)`` array of ``x, y, z, radius`` in voxels (centred coordinates).
    cube_value, sphere_value : float
        Attenuation per voxel length of the cube and of the spheres.
    seed : int or None
        The seed the sphere positions came from (recorded for provenance).
    """

    size: int
    cube_half_width: float
    spheres: np.ndarray = field(repr=False)
    cube_value: float = 0.3
    sphere_value: float = 1.0
    seed: int | None = None

    @property
    def max_path_integral(self) -> float:
        """Upper bound of any line integral through the phantom (voxel units)."""
        diag = 2.0 * np.sqrt(2.0) * self.cube_half_width
        return float(diag * max(self.cube_value, self.sphere_value))

    def voxelize(self, supersample: int = 1) -> np.ndarray:
        """Sample the phantom on the ``size^3`` voxel grid.

        Parameters
        ----------
        supersample : int, optional
            Points per voxel edge averaged into each voxel (partial-volume effect).

        Returns
        -------
        numpy.ndarray
            ``(size, size, size)`` float32 volume indexed ``[z, y, x]``.
        """
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        n = self.size
        s = supersample
        offsets = (np.arange(s) + 0.5) / s - 0.5
        vol = np.zeros((n, n, n), dtype=np.float64)
        c = _centres(n)
        a = self.cube_half_width
        for dz in offsets:
            for dy in offsets:
                for dx in offsets:
                    z = (c + dz)[:, None, None]
                    y = (c + dy)[None, :, None]
                    x = (c + dx)[None, None, :]
                    inside = (np.abs(x) <= a) & (np.abs(y) <= a) & (np.abs(z) <= a)
                    sub = np.where(inside, self.cube_value, 0.0)
                    for sx, sy, sz, r in self.spheres:
                        lo = [max(int(np.floor(v + (n - 1) / 2 - r - 1)), 0) for v in (sz, sy, sx)]
                        hi = [min(int(np.ceil(v + (n - 1) / 2 + r + 1)) + 1, n) for v in (sz, sy, sx)]
                        zz = z[lo[0] : hi[0]]
                        yy = y[:, lo[1] : hi[1]]
                        xx = x[:, :, lo[2] : hi[2]]
                        mask = (xx - sx) ** 2 + (yy - sy) ** 2 + (zz - sz) ** 2 <= r * r
                        block = sub[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
                        block[mask] = self.sphere_value
                    vol += sub
        return (vol / s**3).astype(np.float32)

    def project(self, theta_deg: float, *, shift: float = 0.0) -> np.ndarray:
        """Exact parallel-beam projection (line integrals) at one angle.

        Parameters
        ----------
        theta_deg : float
            Rotation angle in degrees.
        shift : float, optional
            Translation of the sample along the detector ``u`` axis, in pixels (used by
            the sample stage to move the sample out of the field of view).

        Returns
        -------
        numpy.ndarray
            ``(size, size)`` float32 array indexed ``[v, u]``, in voxel-length units.
        """
        n = self.size
        th = np.deg2rad(float(theta_deg))
        cos, sin = np.cos(th), np.sin(th)
        u = _centres(n) - shift
        v = _centres(n)
        out = np.zeros((n, n), dtype=np.float64)

        # Cube: chord of the line {p . (cos, sin) = u} through the square |x|, |y| <= a.
        a = self.cube_half_width
        p0x, p0y = u * cos, u * sin  # foot point on the line, direction d = (-sin, cos)
        t_lo = np.full(n, -np.inf)
        t_hi = np.full(n, np.inf)
        for p0, d in ((p0x, -sin), (p0y, cos)):
            if abs(d) < 1e-12:
                outside = np.abs(p0) > a
                t_lo = np.where(outside, np.inf, t_lo)
                continue
            t1 = (-a - p0) / d
            t2 = (a - p0) / d
            t_lo = np.maximum(t_lo, np.minimum(t1, t2))
            t_hi = np.minimum(t_hi, np.maximum(t1, t2))
        chord = np.clip(t_hi - t_lo, 0.0, None)
        rows = np.abs(v) <= a
        out[rows, :] = self.cube_value * chord[None, :]

        # Spheres replace the cube material: add (sphere - cube) times their chord.
        excess = self.sphere_value - self.cube_value
        for sx, sy, sz, r in self.spheres:
            u0 = sx * cos + sy * sin
            jlo = max(int(np.floor(u0 + shift + (n - 1) / 2 - r)), 0)
            jhi = min(int(np.ceil(u0 + shift + (n - 1) / 2 + r)) + 1, n)
            klo = max(int(np.floor(sz + (n - 1) / 2 - r)), 0)
            khi = min(int(np.ceil(sz + (n - 1) / 2 + r)) + 1, n)
            if jlo >= jhi or klo >= khi:
                continue
            du = u[jlo:jhi][None, :] - u0
            dv = v[klo:khi][:, None] - sz
            rr = r * r - du * du - dv * dv
            out[klo:khi, jlo:jhi] += excess * 2.0 * np.sqrt(np.clip(rr, 0.0, None))
        return out.astype(np.float32)

    def project_many(self, thetas_deg: np.ndarray) -> np.ndarray:
        """Projections at several angles, ``(len(thetas), size, size)`` float32."""
        thetas = np.asarray(thetas_deg, dtype=np.float64).ravel()
        out = np.empty((thetas.size, self.size, self.size), dtype=np.float32)
        for i, th in enumerate(thetas):
            out[i] = self.project(th)
        return out


def make_phantom(
    size: int = 128,
    *,
    seed: int = 0,
    cube_fraction: float = 0.6,
    fill_fraction: float = 0.08,
    n_spheres: int | None = None,
    cube_value: float = 0.3,
    sphere_value: float = 1.0,
) -> Phantom:
    """Build the paper's cube-of-spheres phantom.

    Parameters
    ----------
    size : int
        Edge of the volume in voxels (>= 16).
    seed : int
        Seed of the sphere positions and sizes.
    cube_fraction : float
        Cube edge as a fraction of ``size``; at most 0.7 so that the cube stays inside
        the field of view at every angle (its diagonal is ``sqrt(2)`` times its edge).
    fill_fraction : float
        Target fraction of the cube volume occupied by spheres (used when ``n_spheres``
        is None).
    n_spheres : int, optional
        Exact number of spheres instead of ``fill_fraction``.
    cube_value, sphere_value : float
        Attenuation values (the paper: 0.3 and 1.0).

    Returns
    -------
    Phantom
    """
    if size < 16:
        raise ValueError(f"phantom size must be >= 16 voxels, got {size}")
    if not 0.1 <= cube_fraction <= 0.7:
        raise ValueError(f"cube_fraction must lie in [0.1, 0.7], got {cube_fraction}")
    if not 0.0 <= fill_fraction < 0.4:
        raise ValueError(f"fill_fraction must lie in [0, 0.4), got {fill_fraction}")
    rng = np.random.default_rng(seed)
    a = cube_fraction * size / 2.0
    scale = size / 512.0
    d_min = max(PAPER_DIAMETER_RANGE[0] * scale, MIN_DIAMETER)
    d_max = max(PAPER_DIAMETER_RANGE[1] * scale, d_min + 1.0)
    if n_spheres is None:
        mean_volume = np.pi / 6.0 * np.mean(np.linspace(d_min, d_max, 64) ** 3)
        n_spheres = round(fill_fraction * (2 * a) ** 3 / mean_volume)
    spheres = np.empty((0, 4))
    attempts = 0
    max_attempts = 50 * max(n_spheres, 1)
    while len(spheres) < n_spheres and attempts < max_attempts:
        batch = 256
        attempts += batch
        r = rng.uniform(d_min, d_max, batch) / 2.0
        lim = a - r[:, None]
        centres = rng.uniform(-1.0, 1.0, (batch, 3)) * lim
        for c, rad in zip(centres, r, strict=True):
            if len(spheres) >= n_spheres:
                break
            if len(spheres):
                dist = np.linalg.norm(spheres[:, :3] - c, axis=1)
                if np.any(dist < spheres[:, 3] + rad + 0.5):
                    continue
            spheres = np.vstack([spheres, np.append(c, rad)])
    return Phantom(
        size=size,
        cube_half_width=a,
        spheres=spheres,
        cube_value=cube_value,
        sphere_value=sphere_value,
        seed=seed,
    )
