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

Every request of tiled 0.2.20 on FastAPI 0.165 also rebuilds its dependency tree: tiled overrides
``get_settings`` (``app.dependency_overrides``), and while any override is set FastAPI's
``solve_dependencies`` calls ``get_dependant`` for every sub-dependency of every request, which reads
every dependency's signature again. :func:`memoise_dependants` keeps what ``get_dependant`` built for
the same arguments (a pure function of them: the route's path, the callable, its name, scopes and
cache flags): a third less server CPU per metadata read, 16 % less per small array written, 4 % per
run of events written (most of that is tiled's SQL; ``benchmarks/bench_tiled_requests.py``).

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

__all__ = ["install", "main", "memoise_dependants"]

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


def memoise_dependants() -> None:
    """Make FastAPI's ``get_dependant`` return what it built before for the same arguments (idempotent).

    ``fastapi.dependencies.utils.solve_dependencies`` looks ``get_dependant`` up in its module on
    every call: with dependency overrides set (tiled sets one), it rebuilds every sub-dependency of
    every request from its signature. The result depends only on the arguments, so one per distinct
    argument set is kept (a few hundred: one per route and dependency). ``tests/test_storage.py``
    checks that the pinned FastAPI still looks it up there and that a kept one equals a new one.
    """
    from fastapi.dependencies import utils

    original = utils.get_dependant
    if getattr(original, "_lowdose_memoised", False):
        return
    kept: dict[tuple[Any, ...], Any] = {}

    def get_dependant(
        *,
        path: str,
        call: Any,
        name: str | None = None,
        own_oauth_scopes: list[str] | None = None,
        parent_oauth_scopes: list[str] | None = None,
        use_cache: bool = True,
        scope: Any = None,
        concurrency: Any = None,
    ) -> Any:
        key = (path, call, name, tuple(own_oauth_scopes or ()), tuple(parent_oauth_scopes or ()),
               use_cache, scope, concurrency)  # fmt: skip
        try:
            return kept[key]
        except KeyError:
            hashable = True
        except TypeError:  # an unhashable callable or option: built each time, as FastAPI does
            hashable = False
        dependant = original(path=path, call=call, name=name, own_oauth_scopes=own_oauth_scopes,
                             parent_oauth_scopes=parent_oauth_scopes, use_cache=use_cache, scope=scope,
                             concurrency=concurrency)  # fmt: skip
        if hashable:
            kept[key] = dependant
        return dependant

    get_dependant._lowdose_memoised = True  # type: ignore[attr-defined]
    get_dependant.__wrapped__ = original  # type: ignore[attr-defined]
    get_dependant.__doc__ = original.__doc__
    utils.get_dependant = get_dependant


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
    """``tiled`` with :func:`install` and :func:`memoise_dependants` applied first (and ``--init`` done
    in this process)."""
    install()
    memoise_dependants()
    from tiled.commandline.main import main as tiled_main

    sys.argv[1:] = init_in_process(sys.argv[1:])
    tiled_main()


if __name__ == "__main__":
    main()
