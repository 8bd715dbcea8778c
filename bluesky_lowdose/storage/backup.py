"""Keep every document of a run when Tiled cannot take it: JSON lines, numpy included."""

from __future__ import annotations

import json
import logging
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
        self, primary: Callable[[str, dict], Any], directory: Path, start: dict, failed: set[str]
    ) -> None:
        self.primary = primary
        self.uid = start["uid"]
        self.failed_runs = failed
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.writelines(dumps(n, d) + "\n" for n, d in pending)
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
        self._router = RunRouter(
            [lambda name, start: ([_RunBackup(self.primary, self.directory, start, self.failed_runs)], [])]
        )

    def __call__(self, name: str, doc: dict) -> None:
        self._router(name, doc)
