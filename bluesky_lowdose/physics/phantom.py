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

__all__ = ["Phantom", "make_phantom", "make_textured_phantom"]

#: Sphere diameters at 512^3, in voxels (the paper's values).
PAPER_DIAMETER_RANGE = (4.0, 20.0)
#: The minimum sphere diameter after scaling, in voxels.
MIN_DIAMETER = 2.0
#: Samples per pixel edge over which the ellipsoids' line integrals are averaged.
ELLIPSOID_SUBSAMPLES = 3


def _footprint(n: int, u0: float, z0: float, reach: float, shift: float) -> tuple[int, int, int, int] | None:
    """Detector columns ``jlo:jhi`` and rows ``klo:khi`` within ``reach`` of ``(u0, z0)`` (centred
    coordinates; the sample shifted by ``shift`` pixels along ``u``), or None when off the detector."""
    jlo = max(int(np.floor(u0 + shift + (n - 1) / 2 - reach)), 0)
    jhi = min(int(np.ceil(u0 + shift + (n - 1) / 2 + reach)) + 1, n)
    klo = max(int(np.floor(z0 + (n - 1) / 2 - reach)), 0)
    khi = min(int(np.ceil(z0 + (n - 1) / 2 + reach)) + 1, n)
    return None if jlo >= jhi or klo >= khi else (jlo, jhi, klo, khi)


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
    ellipsoids : numpy.ndarray, optional
        ``(k, 16)`` rows of ``centre (x, y, z), semi-axes (a, b, c), rotation matrix (9, row
        major: the columns are the axes' directions), value``: the value is *added* to what is
        there (negative for pores and cracks).  Their line integrals are exact too.  Empty for the
        paper's phantom (its projections are unchanged by this field).
    kind : str
        ``"spheres"`` (the paper's) or ``"textured"`` (:func:`make_textured_phantom`).
    blobs : numpy.ndarray, optional
        ``(k, 5)`` rows of ``centre (x, y, z), sigma, amplitude``: Gaussian density grains added to
        the rest (a multi-scale texture); their line integrals are exact too.
    """

    size: int
    cube_half_width: float
    spheres: np.ndarray = field(repr=False)
    cube_value: float = 0.3
    sphere_value: float = 1.0
    seed: int | None = None
    ellipsoids: np.ndarray = field(default_factory=lambda: np.empty((0, 16)), repr=False)
    kind: str = "spheres"
    blobs: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False)

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
                    for e in self.ellipsoids:
                        c0, axes, rot, value = e[:3], e[3:6], e[6:15].reshape(3, 3), e[15]
                        reach = float(axes.max())
                        mid = c0[::-1] + (n - 1) / 2
                        lo = [max(int(np.floor(v - reach - 1)), 0) for v in mid]
                        hi = [min(int(np.ceil(v + reach + 1)) + 1, n) for v in mid]
                        zz, yy, xx = np.meshgrid(
                            z[lo[0] : hi[0], 0, 0] - c0[2],
                            y[0, lo[1] : hi[1], 0] - c0[1],
                            x[0, 0, lo[2] : hi[2]] - c0[0],
                            indexing="ij",
                        )
                        local = np.stack([xx, yy, zz], axis=-1) @ rot  # coordinates along the axes
                        inside = np.sum((local / axes) ** 2, axis=-1) <= 1.0
                        sub[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += value * inside
                    for bx, by, bz, sig, amp in self.blobs:
                        reach = 4.0 * sig
                        mid = np.array([bz, by, bx]) + (n - 1) / 2
                        lo = [max(int(np.floor(m - reach)), 0) for m in mid]
                        hi = [min(int(np.ceil(m + reach)) + 1, n) for m in mid]
                        r2 = ((z[lo[0] : hi[0]] - bz) ** 2 + (y[:, lo[1] : hi[1]] - by) ** 2
                              + (x[:, :, lo[2] : hi[2]] - bx) ** 2)  # fmt: skip
                        sub[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += amp * np.exp(
                            -r2 / (2 * sig * sig)
                        )
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
            box = _footprint(n, u0, sz, r, shift)
            if box is None:
                continue
            jlo, jhi, klo, khi = box
            du = u[jlo:jhi][None, :] - u0
            dv = v[klo:khi][:, None] - sz
            rr = r * r - du * du - dv * dv
            out[klo:khi, jlo:jhi] += excess * 2.0 * np.sqrt(np.clip(rr, 0.0, None))
        if len(self.ellipsoids):
            self._project_ellipsoids(out, u, v, cos, sin, shift)
        for bx, by, bz, sig, amp in self.blobs:  # line integral: amp sig sqrt(2 pi) exp(-d^2 / 2 sig^2)
            u0 = bx * cos + by * sin
            box = _footprint(n, u0, bz, 4.0 * sig, shift)
            if box is None:
                continue
            jlo, jhi, klo, khi = box
            d2 = (u[jlo:jhi][None, :] - u0) ** 2 + (v[klo:khi][:, None] - bz) ** 2
            out[klo:khi, jlo:jhi] += amp * sig * np.sqrt(2 * np.pi) * np.exp(-d2 / (2 * sig * sig))
        return out.astype(np.float32)

    def _project_ellipsoids(
        self, out: np.ndarray, u: np.ndarray, v: np.ndarray, cos: float, sin: float, shift: float
    ) -> None:
        """Add the ellipsoids' exact chords, averaged over each pixel (3 x 3 samples: thin fibres and
        cracks are integrated by the pixel as a detector does, not aliased).  The ray ``p + t d``
        with ``p = (u cos, u sin, v)``, ``d = (-sin, cos, 0)`` crosses ``(x - c)^T M (x - c) <= 1``
        over ``2 sqrt(B^2 - A (C - 1)) / A``."""
        n, ss = self.size, ELLIPSOID_SUBSAMPLES
        sub = (np.arange(ss) + 0.5) / ss - 0.5
        d = np.array([-sin, cos, 0.0])
        for e in self.ellipsoids:
            c0, axes, rot, value = e[:3], e[3:6], e[6:15].reshape(3, 3), e[15]
            m = rot @ np.diag(1.0 / axes**2) @ rot.T
            box = _footprint(n, c0[0] * cos + c0[1] * sin, c0[2], float(axes.max()) + 0.5, shift)
            if box is None:
                continue
            jlo, jhi, klo, khi = box
            uu = (u[jlo:jhi][:, None] + sub[None, :]).reshape(1, -1)
            qx = uu * cos - c0[0]
            qy = uu * sin - c0[1]
            qz = (v[klo:khi][:, None] + sub[None, :]).reshape(-1, 1) - c0[2]
            md = m @ d
            a = float(d @ md)
            b = qx * md[0] + qy * md[1] + qz * md[2]
            c = (
                m[0, 0] * qx * qx
                + m[1, 1] * qy * qy
                + m[2, 2] * qz * qz
                + 2 * (m[0, 1] * qx * qy + m[0, 2] * qx * qz + m[1, 2] * qy * qz)
            )
            chord = 2.0 * np.sqrt(np.clip(b * b - a * (c - 1.0), 0.0, None)) / a
            out[klo:khi, jlo:jhi] += value * chord.reshape(khi - klo, ss, jhi - jlo, ss).mean(axis=(1, 3))

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


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_textured_phantom(size: int = 128, *, seed: int = 0, cube_fraction: float = 0.6) -> Phantom:
    """A textured sample: a fibre-reinforced porous matrix with cracks, edges at every scale.

    A cube of matrix (0.3) holds, all analytic (exact line integrals):

    - **grains**: Gaussian density fluctuations (+0.02 to +0.08) at every scale from 0.7 to 6
      voxels (at 128), many small and few large: a continuous texture, not piecewise constant;

    - **fibres**: long thin ellipsoids of +0.7 (so 1.0 where they lie in matrix), random
      orientations, radii 0.6-2.5 voxels at 128 (scaled with ``size``, never below 0.6);
    - **pores**: air bubbles (-0.3) with a power-law size distribution, radii 0.6-6 voxels at 128,
      many small and few large, never overlapping one another;
    - **cracks**: thin flat ellipsoids (-0.2, half a voxel thick, 4-14 voxels across at 128);
    - a few dense inclusions (the paper's spheres, 1.0) so both kinds of edge are present.

    Parameters
    ----------
    size : int
        Edge of the volume in voxels (>= 16).
    seed : int
        Seed of every placement.
    cube_fraction : float
        Cube edge as a fraction of ``size`` (see :func:`make_phantom`).

    Returns
    -------
    Phantom
        ``kind="textured"``; :meth:`Phantom.voxelize` and :meth:`Phantom.project` as for the
        paper's phantom.
    """
    base = make_phantom(size, seed=seed, cube_fraction=cube_fraction, fill_fraction=0.02)
    rng = np.random.default_rng([seed, 7])
    a = base.cube_half_width
    k = size / 128.0
    rows: list[np.ndarray] = []

    def add(centre: np.ndarray, axes: np.ndarray, rot: np.ndarray, value: float) -> None:
        rows.append(np.concatenate([centre, axes, rot.ravel(), [value]]))

    # fibres: stay inside the cube (their reach is the long semi-axis)
    for _ in range(int(90 * k**2)):
        r = max(rng.uniform(0.6, 2.5) * k, 0.6)
        half_len = rng.uniform(6.0, 22.0) * k
        rot = _rotation(rng)
        lim = np.abs(rot[:, 0]) * half_len + r  # extent of the fibre along x, y, z
        if np.any(lim >= a):
            continue
        add(rng.uniform(-1.0, 1.0, 3) * (a - lim), np.array([half_len, r, r]), rot, 0.7)
    # pores: power-law radii (p(r) ~ r^-2.5), no two overlapping
    pores = np.empty((0, 4))
    lo, hi = max(0.6 * k, 0.6), max(6.0 * k, 1.5)
    for _ in range(int(3000 * k**3)):
        if len(pores) >= int(700 * k**3):
            break
        u = rng.uniform()
        r = (lo**-1.5 - u * (lo**-1.5 - hi**-1.5)) ** (-1 / 1.5)
        c = rng.uniform(-1.0, 1.0, 3) * (a - r)
        if len(pores) and np.any(np.linalg.norm(pores[:, :3] - c, axis=1) < pores[:, 3] + r + 0.3):
            continue
        pores = np.vstack([pores, np.append(c, r)])
    for c, r in zip(pores[:, :3], pores[:, 3], strict=True):
        add(c, np.array([r, r, r]), np.eye(3), -0.3)
    # cracks: thin discs, away from the pores' centres (they may cut fibres)
    for _ in range(int(25 * k**2)):
        radius = rng.uniform(4.0, 14.0) * k
        if radius >= a:
            continue
        add(rng.uniform(-1.0, 1.0, 3) * (a - radius), np.array([radius, radius, 0.5]), _rotation(rng), -0.2)
    # grains: sigma log-uniform over the scales, number ~ sigma^-2 (as many small ones as the volume
    # of texture allows), amplitude positive (attenuation never negative, pores included)
    grains = []
    n_grains = int(6000 * k**3)
    sig = np.exp(rng.uniform(np.log(0.7), np.log(6.0 * max(k, 0.25)), 4 * n_grains))
    keep = rng.uniform(size=sig.size) < (sig.min() / sig) ** 2
    for sg in sig[keep][:n_grains]:
        c = rng.uniform(-1.0, 1.0, 3) * (a - 2.0 * sg)
        grains.append([*c, sg, rng.uniform(0.02, 0.08)])
    return Phantom(size=size, cube_half_width=a, spheres=base.spheres, cube_value=base.cube_value,
                   sphere_value=base.sphere_value, seed=seed, ellipsoids=np.array(rows).reshape(-1, 16),
                   kind="textured", blobs=np.array(grains).reshape(-1, 5))  # fmt: skip
