"""Orthogonal slices of a reconstruction while the rotation runs: a live preview.

The full volume is reconstructed after the last frame; the preview back-projects each frame as it
arrives into three planes only, the central axial slice and the central vertical slices along
``y`` and along ``x``, at most ``max_size`` pixels across (frames are binned down first).  The
arithmetic is the filtered back-projection of :class:`~bluesky_lowdose.recon.subsets.SubsetBackprojector`
(same ramp filter, same linear interpolation, same angle weight, same circle mask), so with
``bin == 1`` the planes equal the ``"fbp"`` volume's central slices.  A few milliseconds per frame
at 1024 pixels: no GPU, no thread of its own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backends import angle_weight
from .filters import FILTERS, filter_sinogram

__all__ = ["OrthoSlices"]


class OrthoSlices:
    """Running filtered back-projection of a scan into its three central orthogonal slices.

    Parameters
    ----------
    n_slices, width : int
        Detector rows and columns of the frames.
    center : float, optional
        Rotation axis column (default ``(width - 1) / 2``).
    filter : str
        Ramp-filter window (:data:`bluesky_lowdose.recon.FILTERS`).
    max_size : int
        Largest side of a preview image: frames are binned by ``ceil(max(n_slices, width) / max_size)``.

    Examples
    --------
    >>> preview = OrthoSlices(n_slices=64, width=64)  # doctest: +SKIP
    >>> preview.add(angles_deg, line_integrals)  # doctest: +SKIP
    >>> planes = preview.images()  # doctest: +SKIP
    >>> planes["axial"].shape, planes["coronal"].shape, planes["sagittal"].shape  # doctest: +SKIP
    ((64, 64), (64, 64), (64, 64))
    """

    def __init__(
        self,
        n_slices: int,
        width: int,
        *,
        center: float | None = None,
        filter: str = "parzen",
        max_size: int = 512,
    ) -> None:
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; choose one of {', '.join(FILTERS)}")
        if max_size < 2:
            raise ValueError(f"max_size must be >= 2, got {max_size}")
        self.bin = max(1, math.ceil(max(n_slices, width) / max_size))
        self.n_slices, self.width = int(n_slices), int(width)
        self.rows, self.cols = self.n_slices // self.bin, self.width // self.bin
        if self.rows < 1 or self.cols < 2:
            raise ValueError(f"need at least 1 row and 2 columns after binning by {self.bin}, "
                             f"got {n_slices} x {width}")  # fmt: skip
        c = (width - 1) / 2.0 if center is None else float(center)
        if not (np.isfinite(c) and 0.0 <= c <= width - 1):
            raise ValueError(f"center {center!r} lies outside the detector [0, {width - 1}]")
        self.center = (c + 0.5) / self.bin - 0.5  # the same axis in binned columns
        self.filter = filter
        n = self.cols
        half = (n - 1) / 2.0
        self._coords = np.arange(n, dtype=np.float64) - half  # y (rows) and x (columns) of a slice
        self.mid_row, self.mid = self.rows // 2, n // 2
        self._axial = np.zeros((n, n), np.float32)
        self._coronal = np.zeros((self.rows, n), np.float32)  # the plane y = mid: (slice, x)
        self._sagittal = np.zeros((self.rows, n), np.float32)  # the plane x = mid: (slice, y)
        self._theta: list[float] = []

    @property
    def n_frames(self) -> int:
        """Frames added so far.

        Returns
        -------
        int
            The count.
        """
        return len(self._theta)

    def _binned(self, block: np.ndarray) -> np.ndarray:
        b = self.bin
        if b == 1:
            return block.astype(np.float32, copy=False)
        cut = block[:, : self.rows * b, : self.cols * b]
        return cut.reshape(len(block), self.rows, b, self.cols, b).mean(axis=(2, 4), dtype=np.float32)

    def add(self, theta_deg: Any, line_integrals: Any) -> None:
        """Back-project frames of line integrals (``-log`` transmission) into the three slices.

        Parameters
        ----------
        theta_deg : float or array_like
            Angle(s) in degrees, one per frame.
        line_integrals : array_like
            ``(n_slices, width)`` or ``(n, n_slices, width)``.

        Raises
        ------
        ValueError
            A wrong shape, or NaN/inf in the frames or angles.
        """
        block = np.asarray(line_integrals)
        if block.ndim == 2:
            block = block[None]
        theta = np.atleast_1d(np.asarray(theta_deg, np.float64))
        if block.ndim != 3 or block.shape[1:] != (self.n_slices, self.width):
            raise ValueError(f"frames of {block.shape[1:]} do not match the detector "
                             f"{(self.n_slices, self.width)}")  # fmt: skip
        if theta.shape != (len(block),):
            raise ValueError(f"{theta.size} angle(s) for {len(block)} frame(s)")
        if not (np.all(np.isfinite(block)) and np.all(np.isfinite(theta))):
            raise ValueError("frames or angles contain NaN or infinite values")
        from ._kernels import backproject

        filtered = filter_sinogram(self._binned(block), self.filter)  # (n, rows, cols)
        rad = np.deg2rad(theta)
        # the axial slice: the "fbp" kernel itself, on the central row
        backproject(filtered[:, self.mid_row : self.mid_row + 1], rad, self.center, self.cols,
                    out=self._axial[None])  # fmt: skip
        half = (self.cols - 1) / 2.0
        for f, t in zip(filtered, rad, strict=True):
            c, s = math.cos(t), math.sin(t)
            # the kernel's geometry: detector position base(y) + ix cos, base(y) = y sin + center - half cos
            base = self._coords * s + self.center - half * c
            every_x = np.arange(self.cols, dtype=np.float64)
            self._coronal += self._line(f, base[self.mid], every_x, c)  # y = mid, every x
            self._sagittal += self._line(f, base, float(self.mid), c)  # x = mid, every y
        self._theta.extend(theta.tolist())

    def _line(self, rows: np.ndarray, base: Any, ix: Any, c: float) -> np.ndarray:
        """Back-project ``rows`` (slice, u) onto points at detector positions ``base + ix c``,
        with the kernel's rule for which columns of a row lie on the detector."""
        last = self.cols - 1
        base, ix = np.broadcast_arrays(np.asarray(base, np.float64), np.asarray(ix, np.float64))
        if abs(c) < 1e-12:  # the kernel: the whole row of the slice, or nothing
            inside = (base >= 0.0) & (base <= last)
        else:
            a, b = (0.0 - base) / c, (last - base) / c
            lo = np.maximum(np.ceil(np.minimum(a, b) - 1e-9), 0)
            hi = np.minimum(np.floor(np.maximum(a, b) + 1e-9), last)
            inside = (ix >= lo) & (ix <= hi)
        p = np.clip(base + ix * c, 0.0, last)
        j = np.minimum(p.astype(np.int64), last - 1)
        w = (p - j).astype(np.float32)
        out = (1.0 - w) * rows[:, j] + w * rows[:, j + 1]
        out[:, ~inside] = 0.0
        return out

    def images(self) -> dict[str, np.ndarray]:
        """The three slices from the frames added so far (float32, zero outside the circle).

        Returns
        -------
        dict
            ``axial`` ``(cols, cols)`` (the central detector row), ``coronal`` ``(rows, cols)``
            (slice index by ``x`` through ``y = mid``) and ``sagittal`` ``(rows, cols)`` (slice
            index by ``y`` through ``x = mid``), in the full volume's units (per detector pixel).

        Raises
        ------
        ValueError
            No frame added yet.
        """
        if not self._theta:
            raise ValueError("no frame added yet")
        # per original pixel, as the full volume (a binned pixel integrates ``bin`` of them)
        weight = np.float32(angle_weight(np.deg2rad(np.asarray(self._theta))) / self.bin)
        xy = self._coords
        outside = (xy[:, None] ** 2 + xy[None, :] ** 2) > (self.cols / 2.0) ** 2
        axial = np.where(outside, 0.0, self._axial * weight).astype(np.float32)
        line_c = outside[self.mid]  # y = mid, every x
        line_s = outside[:, self.mid]  # x = mid, every y
        coronal = np.where(line_c[None, :], 0.0, self._coronal * weight).astype(np.float32)
        sagittal = np.where(line_s[None, :], 0.0, self._sagittal * weight).astype(np.float32)
        return {"axial": axial, "coronal": coronal, "sagittal": sagittal}
