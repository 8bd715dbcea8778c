"""Filtered back-projection that accumulates frame by frame, per disjoint angle subset.

Filtered back-projection is linear: the reconstruction is a sum over projections.  A scan can
therefore be reconstructed while it is acquired -- each frame is filtered and added to the
running sum of its subset as it arrives -- and what is left after the last frame is one
multiplication.  The subsets (frame ``i`` goes to subset ``i % K``) are what Noise2Inverse
learns from; their sum is the reconstruction of the whole scan.

Adding frames in acquisition order, one at a time or in blocks, gives bit-for-bit the same
volumes (the numba back-projector adds angles in order into float32 sums), and the same
volume as :func:`bluesky_lowdose.recon.reconstruct` with the ``"fbp"`` backend.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backends import angle_weight
from .filters import FILTERS

__all__ = ["SubsetBackprojector", "subset_index"]


def subset_index(n_angles: int, subsets: int = 2) -> list[np.ndarray]:
    """Indices of each disjoint subset of ``n_angles`` projections (interleaved: ``i % subsets``).

    Parameters
    ----------
    n_angles : int
        Projections in the scan.
    subsets : int
        Number of subsets ``K``.

    Returns
    -------
    list of numpy.ndarray
        ``K`` sorted index arrays that partition ``range(n_angles)``.
    """
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    return [np.arange(k, n_angles, subsets) for k in range(subsets)]


class SubsetBackprojector:
    """Running filtered back-projections of ``K`` interleaved angle subsets of one scan.

    Parameters
    ----------
    n_slices, width : int
        Detector rows (volume slices) and columns.
    subsets : int
        ``K``: frame ``i`` (acquisition index) goes to subset ``i % K``.
    center : float, optional
        Rotation axis column (default ``(width - 1) / 2``, as :func:`reconstruct`).
    filter : str
        Ramp-filter window (see :data:`bluesky_lowdose.recon.FILTERS`).
    ncore : int, optional
        Threads for filtering and back-projection.

    Examples
    --------
    >>> acc = SubsetBackprojector(n_slices=4, width=32)  # doctest: +SKIP
    >>> for i, (angle, frame) in enumerate(zip(theta, line_integrals)):  # doctest: +SKIP
    ...     acc.add(i, angle, frame)
    >>> even, odd = acc.subset_volumes()  # doctest: +SKIP
    >>> full = acc.volume()  # doctest: +SKIP
    """

    def __init__(
        self,
        n_slices: int,
        width: int,
        *,
        subsets: int = 2,
        center: float | None = None,
        filter: str = "parzen",
        ncore: int | None = None,
    ) -> None:
        if n_slices < 1 or width < 2:
            raise ValueError(f"need at least 1 slice and 2 columns, got {n_slices} x {width}")
        if subsets < 1:
            raise ValueError(f"subsets must be >= 1, got {subsets}")
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; choose one of {', '.join(FILTERS)}")
        self.n_slices, self.width, self.subsets = int(n_slices), int(width), int(subsets)
        self.center = (width - 1) / 2.0 if center is None else float(center)
        if not (np.isfinite(self.center) and 0.0 <= self.center <= width - 1):
            raise ValueError(f"center {center!r} lies outside the detector [0, {width - 1}]")
        self.filter = filter
        self.ncore = int(ncore or os.cpu_count() or 1)
        self._sums = np.zeros((self.subsets, self.n_slices, self.width, self.width), np.float32)
        self._theta: list[list[float]] = [[] for _ in range(self.subsets)]
        self._next = 0

    @property
    def n_frames(self) -> int:
        """Frames added so far.

        Returns
        -------
        int
            The count.
        """
        return self._next

    def add(self, index: int, theta_deg: Any, frames: np.ndarray) -> None:
        """Add line-integral frames (``-log`` transmission) that follow the ones already added.

        Parameters
        ----------
        index : int
            Acquisition index of the first frame; must equal :attr:`n_frames` (frames come in
            order, each once).
        theta_deg : float or array_like
            Angle(s) in degrees, one per frame.
        frames : numpy.ndarray
            ``(n_slices, width)`` or ``(n, n_slices, width)`` line integrals.

        Raises
        ------
        ValueError
            A frame out of order, a wrong shape or NaN/inf values.
        """
        import numba

        from ._kernels import backproject
        from .filters import filter_sinogram

        block = np.asarray(frames, dtype=np.float32)
        if block.ndim == 2:
            block = block[None]
        theta = np.atleast_1d(np.asarray(theta_deg, dtype=np.float64))
        if block.shape[1:] != (self.n_slices, self.width):
            raise ValueError(
                f"frames of {block.shape[1:]} do not match the detector {(self.n_slices, self.width)}"
            )
        if theta.shape != (block.shape[0],):
            raise ValueError(f"{theta.size} angle(s) for {block.shape[0]} frame(s)")
        if index != self._next:
            raise ValueError(f"frame {index} out of order: frame {self._next} is next")
        if not (np.all(np.isfinite(block)) and np.all(np.isfinite(theta))):
            raise ValueError("frames or angles contain NaN or infinite values")
        # one frame per filter call: the same arithmetic whatever the blocks the frames came in
        filtered = np.stack([filter_sinogram(f, self.filter, workers=self.ncore) for f in block])
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.ncore, numba.config.NUMBA_NUM_THREADS)))
        try:
            for j in range(block.shape[0]):
                k = (index + j) % self.subsets
                backproject(filtered[j : j + 1], np.deg2rad(theta[j : j + 1]), self.center, self.width,
                            out=self._sums[k])  # fmt: skip
                self._theta[k].append(float(theta[j]))
        finally:
            numba.set_num_threads(previous)
        self._next += block.shape[0]

    def theta(self, subset: int | None = None) -> np.ndarray:
        """Angles (degrees) added so far, of one subset or (None) of the whole scan in order.

        Parameters
        ----------
        subset : int, optional
            The subset.

        Returns
        -------
        numpy.ndarray
            Angles in degrees.
        """
        if subset is not None:
            return np.asarray(self._theta[subset], np.float64)
        out = np.empty(self._next, np.float64)
        for k in range(self.subsets):
            out[k :: self.subsets] = self._theta[k]
        return out

    def _finish(self, total: np.ndarray, theta_deg: np.ndarray, mask: bool) -> np.ndarray:
        vol = total * np.float32(angle_weight(np.deg2rad(theta_deg)))
        if mask:
            from .core import zero_outside_circle

            zero_outside_circle(vol)
        return vol

    def subset_volumes(self, *, mask: bool = True) -> list[np.ndarray]:
        """Reconstruction of each subset from its own angles.

        Parameters
        ----------
        mask : bool
            Zero voxels outside the inscribed circle (as :func:`reconstruct`).

        Returns
        -------
        list of numpy.ndarray
            ``K`` float32 volumes ``(n_slices, width, width)``.
        """
        self._need_frames()
        return [self._finish(self._sums[k].copy(), self.theta(k), mask) for k in range(self.subsets)]

    def volume(self, *, mask: bool = True) -> np.ndarray:
        """Reconstruction of the whole scan (all subsets).

        Parameters
        ----------
        mask : bool
            Zero voxels outside the inscribed circle.

        Returns
        -------
        numpy.ndarray
            Float32 ``(n_slices, width, width)``, equal to :func:`reconstruct` with ``backend="fbp"``
            on the same frames.
        """
        self._need_frames()
        if self.subsets == 1:
            total = self._sums[0].copy()
        else:
            # sum the subsets angle by angle in acquisition order would be the single-call order;
            # subsets are summed instead (float32 rounding differs from one call by ~1e-7 relative)
            total = self._sums.sum(axis=0, dtype=np.float32)
        return self._finish(total, self.theta(), mask)

    def _need_frames(self) -> None:
        if any(len(t) == 0 for t in self._theta):
            raise ValueError(
                f"every one of the {self.subsets} subsets needs at least one frame, got {self._next}"
            )
