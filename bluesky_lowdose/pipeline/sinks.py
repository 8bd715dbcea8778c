"""Where a scan's frames go while they arrive: one interface, three ways of keeping them.

:class:`~bluesky_lowdose.pipeline.scan.ScanPipeline` appends named streams of blocks (``"li"``:
the line integrals reconstructed; ``"raw"``: those without the projection step; ``"half0"``,
``"half1"``: the binomial halves; ``"inputs"``: ``auto``'s frames as given) and at the end asks for
volumes. The sink decides how the blocks are kept:

- :class:`MemorySink`: in memory, concatenated at the end (the default);
- :class:`DiskSink`: in HDF5 stacks in the scan's work folder, so memory is bounded by a slab
  (a work directory);
- :class:`AccumulatingSink`: back-projected frame by frame into the volumes (the ``"fbp"``
  backend in process): nothing is kept but the volumes.

The first two reconstruct slab by slab (:func:`~bluesky_lowdose.recon.slabs.reconstruct_volumes`);
for ``"fbp"`` all three give the same volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AccumulatingSink", "DiskSink", "FrameSink", "MemorySink", "Wanted"]

#: ``(volume name, stream, frame indices or None for all)``: one volume to reconstruct.
Wanted = tuple[str, str, Any]


class FrameSink:
    """The interface: append blocks of named streams, then take a stream or reconstruct volumes."""

    def append(self, name: str, index: int, theta: np.ndarray, block: np.ndarray) -> None:
        """Keep frames ``index .. index + len(block)`` of stream ``name`` (at angles ``theta``).

        Parameters
        ----------
        name : str
            The stream.
        index : int
            Acquisition index of the first frame.
        theta : numpy.ndarray
            Angles in degrees, one per frame.
        block : numpy.ndarray
            ``(n, rows, width)``.
        """
        raise NotImplementedError

    def take(self, name: str) -> Any:
        """Stream ``name`` whole, handed over (the sink keeps nothing of it).

        Parameters
        ----------
        name : str
            The stream.

        Returns
        -------
        numpy.ndarray or StoredArray or None
            ``(n, rows, width)`` (a file is then the caller's to delete); None when nothing was
            appended to it.
        """
        raise NotImplementedError

    def volumes(self, theta: np.ndarray, wanted: list[Wanted], **reconstruct: Any) -> dict[str, Any]:
        """Reconstruct the ``wanted`` volumes from the streams (by default slab by slab from the
        streams kept, :meth:`_sources`).

        Parameters
        ----------
        theta : numpy.ndarray
            Every frame's angle in degrees.
        wanted : list of tuple
            ``(volume name, stream, frame indices or None)``; a stream's subsets in their order.
        **reconstruct
            Keywords of :func:`~bluesky_lowdose.recon.slabs.reconstruct_volumes` (``mapper``,
            ``progress``, ``out_dir``, ``backend``, ``center``).

        Returns
        -------
        dict
            Volume name -> ``(rows, width, width)`` array or StoredArray.
        """
        from ..recon.slabs import reconstruct_volumes

        return reconstruct_volumes(self._sources(), theta, wanted, **reconstruct)

    def _sources(self) -> dict[str, Any]:
        """Every stream kept, whole: name -> array or StoredArray."""
        raise NotImplementedError

    def discard(self) -> None:
        """Drop whatever is kept (files included)."""


class MemorySink(FrameSink):
    """Blocks kept in memory, concatenated when the volumes are reconstructed."""

    def __init__(self) -> None:
        self._blocks: dict[str, list[np.ndarray]] = {}

    def append(self, name: str, index: int, theta: np.ndarray, block: np.ndarray) -> None:
        self._blocks.setdefault(name, []).append(block)

    def take(self, name: str) -> np.ndarray | None:
        blocks = self._blocks.pop(name, None)
        return None if not blocks else np.concatenate(blocks)

    def _sources(self) -> dict[str, Any]:
        return {name: np.concatenate(blocks) for name, blocks in self._blocks.items() if blocks}

    def discard(self) -> None:
        self._blocks.clear()


class DiskSink(FrameSink):
    """Each stream in an HDF5 stack ``line_integrals_<name>.h5`` of a folder made at first use.

    Parameters
    ----------
    folder : callable
        Returns the scan's folder (called when the first block arrives).
    shape : tuple of int
        ``(rows, width)`` of a frame.
    """

    def __init__(self, folder: Callable[[], Path], shape: tuple[int, int]) -> None:
        self._folder = folder
        self._shape = shape
        self._stacks: dict[str, Any] = {}

    def append(self, name: str, index: int, theta: np.ndarray, block: np.ndarray) -> None:
        if name not in self._stacks:
            from ..recon.stored import StackWriter

            self._stacks[name] = StackWriter(self._folder() / f"line_integrals_{name}.h5", "li", self._shape)
        self._stacks[name].append(block)

    def take(self, name: str) -> Any:
        stack = self._stacks.pop(name, None)
        return None if stack is None else stack.close()

    def _sources(self) -> dict[str, Any]:
        return {name: stack.close() for name, stack in self._stacks.items()}

    def discard(self) -> None:
        for stack in self._stacks.values():
            stack.discard()
        self._stacks.clear()


class AccumulatingSink(FrameSink):
    """Frames filtered and back-projected as they arrive (``"fbp"`` in process).

    Parameters
    ----------
    shape : tuple of int
        ``(rows, width)`` of a frame.
    subsets : dict
        Stream name -> its number of angle subsets (1: the whole volume only). Streams not named
        are refused.
    center : float, optional
        Rotation axis (default: the detector's middle).
    """

    def __init__(self, shape: tuple[int, int], subsets: dict[str, int], center: float | None) -> None:
        from ..recon.subsets import SubsetBackprojector

        self._accs = {
            name: SubsetBackprojector(*shape, subsets=k, center=center) for name, k in subsets.items()
        }

    def append(self, name: str, index: int, theta: np.ndarray, block: np.ndarray) -> None:
        self._accs[name].add(index, theta, block)

    def take(self, name: str) -> None:
        raise TypeError(f"an accumulating sink keeps volumes, not the frames of {name!r}")

    def volumes(self, theta: np.ndarray, wanted: list[Wanted], **reconstruct: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        subsets: dict[str, Any] = {}  # a stream's subset volumes, handed out in the order asked
        for name, stream, index in wanted:
            acc = self._accs[stream]
            if index is None:
                out[name] = acc.volume()
            else:
                if stream not in subsets:
                    subsets[stream] = iter(acc.subset_volumes())
                out[name] = next(subsets[stream])
        return out

    def discard(self) -> None:
        self._accs.clear()
