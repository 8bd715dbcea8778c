"""The embedded Tiled server's CPU per request: shipped (dependency trees kept) against FastAPI
rebuilding every request's dependency tree.

tiled 0.2.20 sets a FastAPI dependency override (``get_settings``); while one is set, FastAPI 0.165
rebuilds every sub-dependency of every request from its signature.
``bluesky_lowdose.storage.tiled_serve.memoise_dependants`` keeps what it built for the same arguments.
For each variant one server is started as ``lowdose-tomo`` starts it and the server process's CPU
time (user + system, from ``/proc``) is read around: metadata reads, metadata writes, small arrays
written, and a ``TiledWriter`` run of events (what the scans and the test suite send most).

Run: ``.venv/bin/python benchmarks/bench_tiled_requests.py`` (~1 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

from bluesky_lowdose.storage.server import TiledServer


class RebuildingTiledServer(TiledServer):
    """The shipped entry point without :func:`~bluesky_lowdose.storage.tiled_serve.memoise_dependants`."""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("-m")
        code = ("from bluesky_lowdose.storage import tiled_serve as t; t.memoise_dependants = lambda: None; "
                "t.main()")  # fmt: skip
        return [*command[:at], "-c", code, *command[at + 2 :]]


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: TiledServer, repeats: int) -> dict[str, float]:
    """Milliseconds of server CPU per request (or per run, for the ``TiledWriter`` run)."""
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    client = server.client()
    pid = server._proc.pid  # type: ignore[union-attr]
    node = client.create_container("bench", metadata={"i": 0})
    http = client.context.http_client

    def events() -> None:
        writer = TiledWriter(client, batch_size=1)
        run = compose_run()
        writer("start", run.start_doc)
        desc = run.compose_descriptor(name="primary", data_keys={"x": {"dtype": "number", "shape": [],
                                                                       "source": "bench"}})  # fmt: skip
        writer("descriptor", desc.descriptor_doc)
        for i in range(20):
            writer("event", desc.compose_event(data={"x": float(i)}, timestamps={"x": 0.0}))
        writer("stop", run.compose_stop())

    url = f"{server.uri}/api/v1/metadata/bench"
    steps: dict[str, tuple[Callable[[int], object], int]] = {
        "metadata read": (lambda i: http.get(url).raise_for_status(), repeats),
        "metadata write": (lambda i: node.update_metadata({"i": i}), repeats // 3),
        "64² array written": (lambda i: client.write_array(np.ones((64, 64)), key=f"a{i}"), repeats // 6),
        "run of 20 events (TiledWriter)": (lambda i: events(), max(repeats // 60, 2)),
    }
    result = {}
    for name, (step, n) in steps.items():
        step(-1)  # warm: the first request of a kind imports and caches
        before = server_cpu(pid)
        for i in range(n):
            step(i)
        result[name] = (server_cpu(pid) - before) / n * 1000
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="metadata reads per variant (default 300)")
    args = parser.parse_args()
    variants = {"shipped (trees kept)": TiledServer, "rebuilt per request": RebuildingTiledServer}
    rows = {}
    for label, cls in variants.items():
        with tempfile.TemporaryDirectory() as tmp, cls(tmp) as server:
            rows[label] = measure(server, args.repeats)
            print(label, rows[label], file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_tiled_requests.py --repeats {args.repeats}")
    print()
    labels = list(variants)
    print(f"| request (server CPU, ms) | {' | '.join(labels)} | change |")
    print("|---|" + "---|" * (len(labels) + 1))
    for name in rows[labels[0]]:
        shipped, rebuilt = rows[labels[0]][name], rows[labels[1]][name]
        print(f"| {name} | {shipped:.1f} | {rebuilt:.1f} | {100 * (shipped - rebuilt) / rebuilt:+.0f} % |")


if __name__ == "__main__":
    main()
