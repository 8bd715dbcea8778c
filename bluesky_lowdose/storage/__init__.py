"""Tiled storage: an embedded server, the run catalogs and the run writers.

Heavy imports (tiled client, TiledWriter) happen inside the functions.
"""

from .catalog import (
    PROCESSED,
    RAW,
    TiledUnreachable,
    close_abandoned_runs,
    connect,
    ensure_run_catalogs,
    make_raw_writer,
    make_run_writer,
    replay_backups,
    stream_array,
)
from .server import DataDirectory, TiledServer, TiledServerError, resolve_api_key

__all__ = [
    "PROCESSED",
    "RAW",
    "DataDirectory",
    "TiledServer",
    "TiledServerError",
    "TiledUnreachable",
    "close_abandoned_runs",
    "connect",
    "ensure_run_catalogs",
    "make_raw_writer",
    "make_run_writer",
    "replay_backups",
    "resolve_api_key",
    "stream_array",
]
