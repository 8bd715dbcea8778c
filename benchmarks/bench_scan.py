"""Frames per second of ``lowdose_tomo_scan`` on the simulated TXM, with and without Tiled.

Run: ``.venv/bin/python benchmarks/bench_scan.py [--sizes 128 512] [--angles 181]``.
Prints a Markdown table; paste it into docs/benchmarks.md with the machine line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine


def run_once(size: int, angles: int, with_tiled: bool, server=None, client=None) -> tuple[int, float]:
    from bluesky import RunEngine

    from bluesky_lowdose.callbacks import ThreadedCallback
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.plans import lowdose_tomo_scan
    from bluesky_lowdose.storage import make_raw_writer

    root = server.layout.detector if with_tiled else Path(tempfile.mkdtemp())
    txm = make_devices(root, size=size)
    RE = RunEngine({}, call_returns_result=False)
    writer = None
    if with_tiled:
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        RE.subscribe(writer)
    n = {"events": 0}
    RE.subscribe(lambda name, doc: n.__setitem__("events", n["events"] + (name == "event")))
    t = time.perf_counter()
    RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=angles))
    if writer is not None:
        writer.flush()
        writer.close()
    return n["events"], time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--angles", type=int, default=181)
    args = parser.parse_args()

    from bluesky_lowdose.storage import TiledServer

    rows = []
    with TiledServer(tempfile.mkdtemp(prefix="bench-scan-")) as server:
        client = server.client()
        for size in args.sizes:
            run_once(size, 11, False)  # warm caches and imports
            n0, t0 = run_once(size, args.angles, False)
            n1, t1 = run_once(size, args.angles, True, server, client)
            rows.append((size, n0, n0 / t0, n1 / t1, t1 / t0))
    print(f"machine: {machine()}")
    sizes = " ".join(map(str, args.sizes))
    print(f"command: python benchmarks/bench_scan.py --sizes {sizes} --angles {args.angles}")
    print()
    print(
        "| frame | frames per scan | frames/s, no Tiled | frames/s, TiledWriter (HDF5 registered) | ratio |"
    )
    print("|---|---|---|---|---|")
    for size, n, f0, f1, ratio in rows:
        print(f"| {size}×{size} | {n} | {f0:.0f} | {f1:.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
