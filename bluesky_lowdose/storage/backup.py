"""Keep every document of a run when Tiled cannot take it: JSON lines, numpy included."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from event_model import RunRouter

__all__ = ["BackedUpWriter", "dumps"]

logger = logging.getLogger(__name__)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(name: str, doc: dict) -> str:
    """One JSON line ``{"name": ..., "doc": ...}`` (numpy arrays become lists)."""
    return json.dumps({"name": name, "doc": doc}, default=_default)


class _RunBackup:
    def __init__(
        self,
        primary: Callable[[str, dict], Any],
        directory: Path,
        start: dict,
        failed: set[str],
        backup_failed: set[str],
    ) -> None:
        self.primary = primary
        self.uid = start["uid"]
        self.failed_runs = failed
        self.backup_failed = backup_failed
        self.path = directory / f"{start['uid']}.jsonl"
        self.buffer: list[tuple[str, dict]] = []
        self.failed = False

    def __call__(self, name: str, doc: dict) -> None:
        if not self.failed:
            self.buffer.append((name, doc))
            try:
                self.primary(name, doc)
            except Exception:
                logger.exception("writing a %r document to Tiled failed; the run goes to %s", name, self.path)
                self.failed = True
                self.failed_runs.add(self.uid)
            if name == "stop" and not self.failed:
                self.buffer.clear()
            if not self.failed:
                return
            pending = self.buffer
        else:
            pending = [(name, doc)]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.writelines(dumps(n, d) + "\n" for n, d in pending)
                f.flush()
                os.fsync(f.fileno())
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
        self.buffer = []


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

    def __init__(self, primary: Callable[[str, dict], Any], directory: str | Path) -> None:
        self.primary = primary
        self.directory = Path(directory)
        #: Uids of the runs whose Tiled writes failed (they are in the backup directory).
        self.failed_runs: set[str] = set()
        #: Uids of the runs whose backup could not be written either (logged as CRITICAL).
        self.backup_failed: set[str] = set()
        self._router = RunRouter([self._factory])

    def _factory(self, name: str, start: dict) -> tuple[list[Any], list[Any]]:
        return [_RunBackup(self.primary, self.directory, start, self.failed_runs, self.backup_failed)], []

    def __call__(self, name: str, doc: dict) -> None:
        self._router(name, doc)
