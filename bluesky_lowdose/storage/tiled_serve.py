"""``tiled serve`` with its DuckDB tables used by one request at a time (tiled 0.2.20).

tiled 0.2.20 hands every request the same DuckDB connection (``tiled.storage.SQLStorage`` keeps a
``StaticPool`` of one for DuckDB). Requests run in threads, so two writers appending events at once
interleave their transactions on it: "No active transaction", a table that "does not exist" right
after it was created, appends that a retry then writes twice, and at worst the whole server process
dies (``terminate called after throwing an instance of 'std::system_error'``).
``benchmarks/bench_tiled_writes.py`` reproduces all of it with two to eight writers.

SQLite tables avoid the shared connection but cannot hold array-valued event fields (a waveform,
an ROI's statistics vector): tiled 0.2.20 refuses list columns there ("Unsupported PyArrow type").
So the tables stay in DuckDB, and this entry point runs tiled's own command line with
``SQLStorage.connect`` of DuckDB storages taking a process-wide lock that the connection releases
when it is closed. Every use of a table storage in tiled 0.2.20 opens and closes its connection in
one block (``with closing(storage.connect())``), so the lock is held for one request's table
operation. ``tests/test_storage.py`` checks the patched method is still tiled's.

Run as ``python -m bluesky_lowdose.storage.tiled_serve serve catalog ...`` (the arguments of
``tiled``); :class:`~bluesky_lowdose.storage.TiledServer` does.

``serve catalog CATALOG --init`` creates a new catalog in this process before serving, with
tiled's own ``tiled catalog init --if-not-exists`` function, where tiled 0.2.20 starts a second
Python process for it (its SQLite and alembic must not meet the server's threads, and here there
are none yet): a new server answers 2-3 s of CPU sooner.
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["install", "main"]

_LOCK = threading.RLock()


class _LockedConnection:
    """A pooled DuckDB connection that releases the table lock when it is closed (once)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._held = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def close(self) -> None:
        try:
            self._connection.close()
        finally:
            if self._held:
                self._held = False
                _LOCK.release()


def install() -> None:
    """Make ``tiled.storage.SQLStorage.connect`` serialise DuckDB storages (idempotent)."""
    from tiled.storage import SQLStorage

    original = SQLStorage.connect
    if getattr(original, "_lowdose_serialised", False):
        return

    def connect(self: Any) -> Any:
        if self.dialect != "duckdb":
            return original(self)
        _LOCK.acquire()
        try:
            return _LockedConnection(original(self))
        except BaseException:
            _LOCK.release()
            raise

    connect._lowdose_serialised = True  # type: ignore[attr-defined]
    connect.__wrapped__ = original  # type: ignore[attr-defined]
    connect.__doc__ = original.__doc__
    SQLStorage.connect = connect  # type: ignore[method-assign]


def init_in_process(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--init``, the catalog it names created here (``serve catalog CATALOG``).

    Parameters
    ----------
    argv : sequence of str
        ``tiled``'s arguments. Left as they are unless they are ``serve catalog`` with the catalog
        right after and ``--init``.

    Returns
    -------
    list of str
        The arguments tiled then gets.
    """
    args = list(argv)
    if args[:2] != ["serve", "catalog"] or "--init" not in args or len(args) < 3 or args[2].startswith("-"):
        return args
    from tiled.commandline._catalog import init

    database = args[2]
    if urllib.parse.urlparse(database).scheme in ("", "file"):  # as tiled serve catalog reads a path
        database = f"sqlite:///{urllib.parse.urlparse(database).path}"
    with warnings.catch_warnings():  # alembic 1.16 on tiled's alembic.ini: a deprecation, not ours
        warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
        init(database, if_not_exists=True)
    args.remove("--init")
    return args


def main() -> None:
    """``tiled`` with :func:`install` applied first (and ``--init`` done in this process)."""
    install()
    from tiled.commandline.main import main as tiled_main

    sys.argv[1:] = init_in_process(sys.argv[1:])
    tiled_main()


if __name__ == "__main__":
    main()
