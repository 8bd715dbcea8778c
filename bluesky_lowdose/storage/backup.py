"""Keep every document of a run when Tiled cannot take it: JSON lines, numpy included.

While Tiled takes a run, its documents are kept in memory up to :data:`MEMORY_BYTES` of arrays
(enough for a scan's small documents); beyond that they go to a journal on disk as they pass
(``<uid>.jsonl.journal``, large arrays in the binary ``<uid>.arrays`` beside it), so a processed
run of a beamline-size scan (its volumes are sent slice by slice) never sits in memory whole. At
the stop document the journal is deleted. If a write fails, the journal (or the buffer) becomes
the backup ``<uid>.jsonl`` that :func:`~bluesky_lowdose.storage.replay_backups` reads, and every
later document of the run is appended to it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from event_model import RunRouter

from .._paths import safe_name

__all__ = ["MEMORY_BYTES", "ArrayRef", "BackedUpWriter", "dumps", "loads", "resolve_arrays"]

logger = logging.getLogger(__name__)

#: Array bytes of one run held in memory before its documents go to a journal on disk.
MEMORY_BYTES = 32 * 2**20
#: Arrays of at least this many bytes go to the binary sidecar instead of JSON lists.
BLOB_BYTES = 4096
_MARK = "__ndarray__"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(name: str, doc: dict, arrays: IO[bytes] | None = None) -> str:
    """One JSON line ``{"name": ..., "doc": ...}``.

    Parameters
    ----------
    name, doc : str, dict
        The document.
    arrays : binary file, optional
        Arrays of :data:`BLOB_BYTES` or more are appended to it and written as a reference
        ``{"__ndarray__": {"file", "offset", "dtype", "shape"}}`` (the file's name, relative to
        the JSON file's directory); without it, numpy arrays become lists.

    Returns
    -------
    str
        The line, without its newline.
    """
    if arrays is None:
        return json.dumps({"name": name, "doc": doc}, default=_default)

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and obj.nbytes >= BLOB_BYTES and obj.dtype.kind in "biuf":
            offset = arrays.tell()
            arrays.write(np.ascontiguousarray(obj).tobytes())
            ref = {"file": Path(arrays.name).name, "offset": offset, "dtype": obj.dtype.str,
                   "shape": list(obj.shape)}  # fmt: skip
            return {_MARK: ref}
        return _default(obj)

    return json.dumps({"name": name, "doc": doc}, default=default)


class ArrayRef:
    """An array in a backup's binary sidecar, read by :meth:`read` (replay reads one document's
    arrays at a time, never a whole run's)."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> None:
        self.path, self.dtype, self.shape, self.offset = path, dtype, shape, offset

    def read(self) -> np.ndarray:
        """The array.

        Returns
        -------
        numpy.ndarray
            As it was written.

        Raises
        ------
        ValueError
            The reference runs beyond the end of the file.
        """
        count = int(np.prod(self.shape))
        arr = np.fromfile(self.path, dtype=self.dtype, count=count, offset=self.offset)
        if arr.size != count:
            raise ValueError(f"array reference beyond the end of {self.path.name}")
        return arr.reshape(self.shape)


def resolve_arrays(value: Any) -> Any:
    """``value`` with every :class:`ArrayRef` in it read.

    Parameters
    ----------
    value : object
        A document (or part of one) parsed with ``loads(..., lazy=True)``.

    Returns
    -------
    object
        The same structure with arrays.
    """
    if isinstance(value, ArrayRef):
        return value.read()
    if isinstance(value, dict):
        return {k: resolve_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_arrays(v) for v in value]
    return value


def loads(line: str, directory: str | Path, *, lazy: bool = False) -> dict:
    """Parse a line written by :func:`dumps`, reading referenced arrays from ``directory``.

    Parameters
    ----------
    line : str
        One JSON line.
    directory : str or Path
        Where the arrays' file is.
    lazy : bool
        Leave references as :class:`ArrayRef` (read them with :func:`resolve_arrays`).

    Returns
    -------
    dict
        ``{"name": ..., "doc": ...}`` with numpy arrays where the line references them.

    Raises
    ------
    ValueError
        A reference outside ``directory`` or beyond the end of its file.
    """
    base = Path(directory)

    def hook(obj: dict) -> Any:
        if len(obj) != 1 or _MARK not in obj:
            return obj
        ref = obj[_MARK]
        if Path(ref["file"]).name != ref["file"]:
            raise ValueError(f"array reference {ref['file']!r} points outside {base}")
        arr = ArrayRef(base / ref["file"], np.dtype(ref["dtype"]), tuple(int(n) for n in ref["shape"]),
                       int(ref["offset"]))  # fmt: skip
        return arr if lazy else arr.read()

    return json.loads(line, object_hook=hook)


def _array_bytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_array_bytes(v) for v in value)
    return 0


class _RunBackup:
    """One run: documents in memory up to ``memory_bytes`` of arrays, then in a journal file."""

    def __init__(
        self,
        primary: Callable[[str, dict], Any],
        directory: Path,
        start: dict,
        failed: set[str],
        backup_failed: set[str],
        memory_bytes: int,
    ) -> None:
        self.primary = primary
        self.uid = start["uid"]
        self.failed_runs = failed
        self.backup_failed = backup_failed
        name = safe_name(self.uid)  # a uid from the network never names a path elsewhere
        self.path = directory / f"{name}.jsonl"
        self.journal_path = directory / f"{name}.jsonl.journal"
        self.arrays_path = directory / f"{name}.arrays"
        self.memory_bytes = memory_bytes
        self.buffer: list[tuple[str, dict]] = []
        self.buffered_bytes = 0
        self.failed = False
        self._lines: IO[bytes] | None = None  # the journal, then the backup (same file, renamed)
        self._arrays: IO[bytes] | None = None
        self._journal_broken = False

    def __call__(self, name: str, doc: dict) -> None:
        if not self.failed:
            self._keep(name, doc)
            try:
                self.primary(name, doc)
            except Exception:
                logger.exception("writing a %r document to Tiled failed; the run goes to %s", name, self.path)
                self.failed = True
                self.failed_runs.add(self.uid)
            if not self.failed:
                if name == "stop":
                    self._done()
                return
            pending, self.buffer = self.buffer, []
        else:
            pending = [(name, doc)]
        try:
            self._write(pending, durable=True)
            if self._lines is not None and self.journal_path.exists():
                os.replace(self.journal_path, self.path)  # the journal is the backup from now on
        except OSError:
            # Tiled failed AND the backup cannot be written (full disk, missing mount...): the
            # documents of this run are now only in memory. Say so as loudly as we can.
            self.backup_failed.add(self.uid)
            logger.critical(
                "run %s: Tiled write failed and the backup %s cannot be written: %d document(s) NOT SAVED "
                "(detector files are kept where the detector wrote them)", self.uid, self.path, len(pending),
                exc_info=True,
            )  # fmt: skip
            raise
        if name == "stop":
            self._close_files()

    def _keep(self, name: str, doc: dict) -> None:
        """Keep a document until the run has been written: in memory, or in the journal."""
        if self._lines is not None and not self._journal_broken and self._journal([(name, doc)]):
            return
        self.buffer.append((name, doc))
        self.buffered_bytes += _array_bytes(doc)
        if (
            self.buffered_bytes > self.memory_bytes
            and not self._journal_broken
            and self._journal(self.buffer)
        ):
            self.buffer, self.buffered_bytes = [], 0

    def _journal(self, docs: list[tuple[str, dict]]) -> bool:
        """Append to the journal; on any error, roll it back to its last complete document and
        keep later documents in memory (the journal keeps the run's beginning)."""
        marks = None if self._lines is None else (self._lines.tell(), self._arrays.tell())  # type: ignore[union-attr]
        try:
            self._write(docs, durable=False)
            return True
        except Exception:
            logger.warning("run %s: the journal %s cannot be written; later documents stay in memory",
                           self.uid, self.journal_path, exc_info=True)  # fmt: skip
            self._journal_broken = True
            if marks is None:  # nothing of value in it: the documents are still in the buffer
                self._close_files(delete=True)
            else:
                try:
                    for f, pos in zip((self._lines, self._arrays), marks, strict=True):
                        f.truncate(pos)  # type: ignore[union-attr]
                        f.seek(pos)  # type: ignore[union-attr]  # tell() gives the next array's offset
                except OSError:
                    logger.exception("run %s: the journal could not be rolled back", self.uid)
            return False

    def _write(self, docs: list[tuple[str, dict]], *, durable: bool) -> None:
        if self._lines is None:
            if not docs:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = self.path if self.failed else self.journal_path
            self._arrays = open(self.arrays_path, "ab")
            self._lines = open(target, "ab")
        assert self._arrays is not None
        text = "".join(dumps(n, d, self._arrays) + "\n" for n, d in docs)
        self._lines.write(text.encode())
        self._arrays.flush()
        self._lines.flush()
        if durable:
            os.fsync(self._arrays.fileno())
            os.fsync(self._lines.fileno())

    def _done(self) -> None:
        """The run is in Tiled: drop what was kept."""
        self.buffer, self.buffered_bytes = [], 0
        self._close_files(delete=True)

    def _close_files(self, delete: bool = False) -> None:
        for f in (self._lines, self._arrays):
            if f is not None:
                f.close()
        self._lines = self._arrays = None
        if delete:
            for p in (self.journal_path, self.arrays_path):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass


class BackedUpWriter:
    """Send documents to ``primary``; once a write fails, the whole run goes to JSON lines.

    Like bluesky-tiled-plugins' own backup, but the files also hold inline numpy arrays
    (enhanced frames, reconstructed slices, the model), so nothing is lost. Replay them with
    :func:`bluesky_lowdose.storage.replay_backups`.

    Parameters
    ----------
    primary : callable
        E.g. a ``TiledWriter``.
    directory : str or Path
        Where ``<run uid>.jsonl`` files go.
    """

    def __init__(
        self, primary: Callable[[str, dict], Any], directory: str | Path, *, memory_bytes: int = MEMORY_BYTES
    ) -> None:
        self.primary = primary
        self.directory = Path(directory)
        self.memory_bytes = int(memory_bytes)
        #: Uids of the runs whose Tiled writes failed (they are in the backup directory).
        self.failed_runs: set[str] = set()
        #: Uids of the runs whose backup could not be written either (logged as CRITICAL).
        self.backup_failed: set[str] = set()
        self._router = RunRouter([self._factory])

    def _factory(self, name: str, start: dict) -> tuple[list[Any], list[Any]]:
        backup = _RunBackup(self.primary, self.directory, start, self.failed_runs, self.backup_failed,
                            self.memory_bytes)  # fmt: skip
        return [backup], []

    def __call__(self, name: str, doc: dict) -> None:
        self._router(name, doc)
