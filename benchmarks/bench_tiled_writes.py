"""Concurrent event-table writes into the embedded Tiled server: DuckDB used serially (shipped),
tiled's DuckDB as it is, and SQLite tables.

Several ``TiledWriter`` threads each write one run whose events are appended one at a time (the
most requests per row there is), into one server started as ``lowdose-tomo`` starts it. For each
variant: the writers' errors, whether the server process survived, the runs whose rows are not
exactly the events sent (lost or duplicated by a retry), the wall time, and what the server's log
holds. tiled 0.2.20 shares one DuckDB connection between all requests (``StaticPool``): under
concurrent appends it fails with "No active transaction" and can take the whole process down;
``bluesky_lowdose.storage.tiled_serve`` makes each request's table operation hold a lock.
SQLite gets one connection per request and answers "database is locked" to a concurrent writer
(the client retries), but cannot store array-valued event fields.

Run: ``.venv/bin/python benchmarks/bench_tiled_writes.py`` (~4 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

from bluesky_lowdose.storage.server import TiledServer


class UnpatchedTiledServer(TiledServer):
    """tiled's own command line: DuckDB's one connection shared by concurrent requests."""

    def command(self) -> list[str]:
        return ["tiled" if a == "bluesky_lowdose.storage.tiled_serve" else a for a in super().command()]


class SQLiteTiledServer(TiledServer):
    """Event tables in SQLite (no list columns in tiled 0.2.20)."""

    def command(self) -> list[str]:
        duckdb = f"duckdb:///{self.layout.tabular}"
        sqlite = f"sqlite:///{self.layout.tiled / 'tables.sqlite'}"
        return [sqlite if a == duckdb else a for a in super().command()]


def write_runs(client, writers: int, events: int) -> tuple[list[str], list[str]]:
    """``writers`` threads each write one run of ``events`` events; (errors, runs with wrong rows)."""
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    errors: list[str] = []
    wrong: list[str] = []

    def one(i: int) -> None:
        try:
            writer = TiledWriter(client, batch_size=1)
            run = compose_run()
            writer("start", run.start_doc)
            keys = {k: {"dtype": "number", "shape": [], "source": "bench"} for k in ("x", "y")}
            desc = run.compose_descriptor(name="primary", data_keys=keys)
            writer("descriptor", desc.descriptor_doc)
            for j in range(events):
                data = {"x": float(j), "y": float(i)}
                event = desc.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0), seq_num=j + 1)
                writer("event", event)
            writer("stop", run.compose_stop())
            seq = list(client[run.start_doc["uid"]]["primary"].base["internal"].read()["seq_num"])
            if sorted(seq) != list(range(1, events + 1)):
                wrong.append(f"run {i}: {len(seq)} rows, {len(set(seq))} distinct")
        except Exception as exc:  # the table reports every writer's failure
            errors.append(f"{i}: {type(exc).__name__}: {str(exc)[:120]}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--events", type=int, default=150)
    args = parser.parse_args()

    rows = []
    variants = (("duckdb, serialised (shipped)", TiledServer), ("duckdb, tiled as is", UnpatchedTiledServer),
                ("sqlite", SQLiteTiledServer))  # fmt: skip
    for backend, cls in variants:
        for writers in args.writers:
            with tempfile.TemporaryDirectory() as d:
                server = cls(Path(d)).start()
                try:
                    t0 = time.perf_counter()
                    errors, wrong = write_runs(server.client(), writers, args.events)
                    seconds = time.perf_counter() - t0
                    alive = server.running
                finally:
                    server.close()
                log = (Path(d) / "tiled" / "server.log").read_text(errors="replace")
                counts = (log.count("database is locked"), log.count("No active transaction"))
                rows.append((backend, writers, len(errors), alive, len(wrong), seconds, *counts))
                print(rows[-1], *errors[:3], *wrong[:3], sep="\n  ", file=sys.stderr, flush=True)

    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_tiled_writes.py --writers {' '.join(map(str, args.writers))} "
          f"--events {args.events}")  # fmt: skip
    print()
    print("| tables | writers | writer errors | server alive | runs with wrong rows | seconds "
          "| log: database is locked | log: No active transaction |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for backend, writers, errors, alive, wrong, seconds, locked, no_txn in rows:
        state = "yes" if alive else "**no**"
        print(
            f"| {backend} | {writers} | {errors} | {state} | {wrong} | {seconds:.0f} | {locked} | {no_txn} |"
        )


if __name__ == "__main__":
    main()
