"""Stacks on disk: memory bounded by a window of frames or slices, not by the scan.

A beamline scan is 1500-3000 projections of 2048^2 (12-25 GB per float32 stack). The pipeline
therefore appends line integrals to an HDF5 file as frames arrive (:class:`StackWriter`), the
reconstruction reads sinogram slabs back from it (:meth:`StoredArray.rows`, also from another
process: a Dask worker) and writes each reconstructed slab into another file; nothing holds a
whole stack or volume.

:class:`StoredArray` is the read side: a path and a dataset name (picklable, cheap to send to a
worker), opened for each read, so no file handle outlives a call. Indexing returns NumPy arrays
and ``numpy.asarray(stored)`` reads the whole array, for callers that want it in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._disk import check_free_space

__all__ = ["ArrayWriter", "LazySlice", "StackWriter", "StoredArray", "place_volume", "volume_writer"]

#: Slices read at a time when iterating over a stored volume.
ITER_SLAB = 16


class StoredArray:
    """A float32 array in an HDF5 file, read on demand.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    dataset : str
        The dataset's name in it.

    Raises
    ------
    FileNotFoundError
        No such file.
    KeyError
        No such dataset.
    """

    def __init__(self, path: str | Path, dataset: str) -> None:
        import h5py

        self.path = str(path)
        self.dataset = dataset
        with h5py.File(self.path, "r", locking=False) as f:  # read-only; NFS often refuses locks
            ds = f[dataset]
            self.shape: tuple[int, ...] = tuple(int(n) for n in ds.shape)
            self.dtype = np.dtype(ds.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes the array would take in memory."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r", locking=False) as f:
            return np.asarray(f[self.dataset][key])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self[()]
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, _, block in self.slabs(ITER_SLAB):
            yield from block

    def slabs(self, size: int = ITER_SLAB) -> Iterator[tuple[int, int, np.ndarray]]:
        """Read the array ``size`` entries of the first axis at a time.

        Parameters
        ----------
        size : int
            Entries per read.

        Yields
        ------
        tuple
            ``(start, stop, array[start:stop])``.
        """
        for a in range(0, len(self), size):
            b = min(a + size, len(self))
            yield a, b, self[a:b]

    def rows(self, start: int, stop: int) -> LazySlice:
        """A lazy reference to ``self[:, start:stop]`` (read when converted to an array).

        Parameters
        ----------
        start, stop : int
            Range of the second axis (detector rows of a projection stack).

        Returns
        -------
        LazySlice
            Converts to the array with ``numpy.asarray``.
        """
        return LazySlice(self, (slice(None), slice(int(start), int(stop))))

    def slices(self, start: int, stop: int) -> LazySlice:
        """A lazy reference to ``self[start:stop]`` (slices of a volume).

        Parameters
        ----------
        start, stop : int
            Range of the first axis.

        Returns
        -------
        LazySlice
            Converts to the array with ``numpy.asarray``.
        """
        return LazySlice(self, slice(int(start), int(stop)))

    def __repr__(self) -> str:
        return f"StoredArray({self.path!r}, {self.dataset!r}, shape={self.shape}, dtype={self.dtype})"


class LazySlice:
    """``source[key]`` of a :class:`StoredArray`, read when converted to an array (a task's
    input: a path, a dataset name and the key travel; the worker reads its part).

    Parameters
    ----------
    source : StoredArray
        The stored array.
    key : slice or tuple of slice
        What to read.
    """

    def __init__(self, source: StoredArray, key: Any) -> None:
        self.source, self.key = source, key

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self.source[self.key]
        return arr if dtype is None else arr.astype(dtype, copy=False)


class StackWriter:
    """An HDF5 dataset written block by block: a stack that grows along its first axis, or an
    array of known shape filled slab by slab.

    Parameters
    ----------
    path : str or Path
        The file to create (replaced if it exists; its directory is created, mode 0700).
    dataset : str
        The dataset's name.
    shape : tuple of int
        ``(rows, width)`` of one frame for a growing stack, or the whole shape with ``length``.
    length : int, optional
        The first axis' length of an array of known shape (None: a stack that grows).
    chunk_rows : int
        Rows of the second axis per chunk: chunks of ``(1, chunk_rows, width)`` make both a
        frame's append and a slab's read touch whole chunks.
    dtype : numpy dtype
        Stored type.
    swmr : bool
        Single-writer/multiple-reader mode: every :meth:`append` is flushed and readers (Tiled
        serving the file while a scan runs) see the rows written so far.

    Examples
    --------
    >>> w = StackWriter(tmp / "li.h5", "li", (64, 64))  # doctest: +SKIP
    >>> w.append(frames)  # doctest: +SKIP
    >>> stored = w.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        dataset: str,
        shape: tuple[int, ...],
        *,
        length: int | None = None,
        chunk_rows: int = 16,
        dtype: Any = np.float32,
        swmr: bool = False,
    ) -> None:
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dataset = dataset
        self.frame_shape = tuple(int(n) for n in shape)
        if len(self.frame_shape) != 2 or min(self.frame_shape) < 1:
            raise ValueError(f"shape must be (rows, width) of one entry, got {shape}")
        chunks = (1, min(int(chunk_rows), self.frame_shape[0]), self.frame_shape[1])
        self._file = h5py.File(self.path, "w", libver="latest") if swmr else h5py.File(self.path, "w")
        self.swmr = swmr
        try:
            if length is None:
                self._ds = self._file.create_dataset(
                    dataset, shape=(0, *self.frame_shape), maxshape=(None, *self.frame_shape),
                    chunks=chunks, dtype=dtype,
                )  # fmt: skip
            else:
                self._ds = self._file.create_dataset(
                    dataset, shape=(int(length), *self.frame_shape), chunks=chunks, dtype=dtype
                )
            if swmr:
                self._file.swmr_mode = True
        except BaseException:
            self.discard()
            raise
        self.n = 0

    def append(self, block: np.ndarray) -> None:
        """Append ``(n, rows, width)`` (or one ``(rows, width)``) entries.

        Parameters
        ----------
        block : numpy.ndarray
            The entries.
        """
        arr = np.asarray(block)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[1:] != self.frame_shape:
            raise ValueError(f"entries of {arr.shape[1:]} do not match the stack's {self.frame_shape}")
        self._room(len(arr))
        if self._ds.maxshape[0] is None:
            self._ds.resize(self.n + len(arr), axis=0)
        self._ds[self.n : self.n + len(arr)] = arr
        self.n += len(arr)
        if self.swmr:
            self._ds.flush()

    def write(self, start: int, block: np.ndarray) -> None:
        """Write entries ``start .. start + len(block)`` of an array of known shape.

        Parameters
        ----------
        start : int
            First entry.
        block : numpy.ndarray
            ``(n, rows, width)``.
        """
        self._room(len(block))
        self._ds[start : start + len(block)] = block
        self.n = max(self.n, start + len(block))

    def _room(self, entries: int) -> None:
        """Refuse entries the disk cannot take (HDF5 does not survive a full disk)."""
        nbytes = entries * int(np.prod(self.frame_shape)) * self._ds.dtype.itemsize
        check_free_space(self.path, nbytes, f"{entries} entries of {self.path.name}")

    def close(self) -> StoredArray:
        """Flush and close the file.

        Returns
        -------
        StoredArray
            The read side.
        """
        if self._file.id.valid:
            self._file.flush()
            self._file.close()
        return StoredArray(self.path, self.dataset)

    def discard(self) -> None:
        """Close and delete the file (a scan that will not be reconstructed)."""
        if self._file.id.valid:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ArrayWriter:
    """The in-memory counterpart of :class:`StackWriter` for an array of known shape (same
    ``write``/``close``/``discard``), so callers fill a volume the same way in memory or on disk.

    Parameters
    ----------
    shape : tuple of int
        The whole array's shape.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.array: np.ndarray | None = np.empty(shape, np.float32)

    def write(self, start: int, block: np.ndarray) -> None:
        """Write entries ``start .. start + len(block)``.

        Parameters
        ----------
        start : int
            First entry.
        block : numpy.ndarray
            The entries.
        """
        assert self.array is not None
        self.array[start : start + len(block)] = block

    def close(self) -> np.ndarray:
        """The array.

        Returns
        -------
        numpy.ndarray
            The filled array.
        """
        assert self.array is not None
        return self.array

    def discard(self) -> None:
        """Drop the array."""
        self.array = None


def volume_writer(path: str | Path | None, shape: tuple[int, ...]) -> StackWriter | ArrayWriter:
    """Where a ``(slices, rows, width)`` volume is filled slab by slab: an HDF5 file (dataset
    ``volume``, one chunk per slice) at ``path``, or memory when ``path`` is None.

    Parameters
    ----------
    path : str or Path or None
        The file, or None.
    shape : tuple of int
        The volume's shape.

    Returns
    -------
    StackWriter or ArrayWriter
        ``write(start, block)``, ``close()`` (a :class:`StoredArray` or the array), ``discard()``.
    """
    if path is None:
        return ArrayWriter(shape)
    return StackWriter(path, "volume", shape[1:], length=shape[0], chunk_rows=shape[1])


def place_volume(volume: Any, path: str | Path) -> StoredArray:
    """Put a ``(slices, rows, width)`` volume at ``path`` as HDF5 (dataset ``volume``, one chunk
    per slice), once: a volume already in a file is moved there (renamed; copied slab by slab
    only across file systems), one in memory is written.

    Parameters
    ----------
    volume : numpy.ndarray or StoredArray
        The volume.
    path : str or Path
        The new file (its folder is made, readable by its owner only).

    Returns
    -------
    StoredArray
        The volume at ``path``.
    """
    import errno

    path = Path(path)
    if isinstance(volume, StoredArray) and volume.dataset == "volume":
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.replace(volume.path, path)
            return StoredArray(path, "volume")
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    shape = tuple(int(n) for n in volume.shape)
    writer = StackWriter(path, "volume", shape[1:], length=shape[0], chunk_rows=shape[1])
    try:
        if isinstance(volume, StoredArray):
            for start, _stop, slab in volume.slabs():
                writer.write(start, slab)
        else:
            writer.write(0, np.asarray(volume, dtype=np.float32))
    except BaseException:
        writer.discard()
        raise
    out = writer.close()
    if isinstance(volume, StoredArray):  # copied across file systems: the original goes
        Path(volume.path).unlink(missing_ok=True)
    return out
