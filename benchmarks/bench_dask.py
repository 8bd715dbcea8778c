"""Reconstruction slabs on a Dask cluster: 1 vs 2 workers, against the same work in this process.

A ``dask scheduler`` and ``dask worker`` processes (``--nthreads`` each) on loopback; the line
integrals are an HDF5 stack on disk (as the enhancer's work directory holds them) and every slab
task reads its own rows. Prints a Markdown table (``--json``: one JSON line per row).

Run: ``.venv/bin/python benchmarks/bench_dask.py --size 512 --angles 361 [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster(n_workers: int, threads: int, log: Path) -> tuple[str, list[subprocess.Popen]]:
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = open(log, "ab")
    opts = {"stdout": out, "stderr": subprocess.STDOUT, "start_new_session": True}
    port = address.rsplit(":", 1)[1]
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
    procs = [subprocess.Popen(scheduler, **opts)]
    for i in range(n_workers):
        cmd = [DASK, "worker", address, "--nthreads", str(threads), "--no-dashboard", "--host", "127.0.0.1",
               "--name", f"w{i}"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, **opts))
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=361)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bluesky_lowdose.engine import DaskEngine
    from bluesky_lowdose.physics import make_phantom
    from bluesky_lowdose.recon.slabs import reconstruct_volumes
    from bluesky_lowdose.recon.stored import StackWriter

    n, a = args.size, args.angles
    tmp = tempfile.TemporaryDirectory(prefix="bench-dask-")  # removed at exit
    work = Path(tmp.name)
    theta = np.linspace(0.0, 180.0, a, endpoint=False)
    phantom = make_phantom(n, seed=0)
    writer = StackWriter(work / "li.h5", "li", (n, n))
    for t in theta:
        writer.append(phantom.project(t) * np.float32(2.0 / n))
    stored = writer.close()
    wanted = [("full", "li", None)]
    rows = []

    def record(where: str, seconds: float, tasks: int | None) -> None:
        rows.append({"where": where, "seconds": round(seconds, 2), "tasks": tasks, "size": n, "angles": a})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)

    _warm()  # numba compiles once per process
    t0 = time.perf_counter()
    reconstruct_volumes({"li": stored}, theta, wanted, backend="fbp", out_dir=work / "here")
    record(f"this process (numba, {os.cpu_count()} threads)", time.perf_counter() - t0, None)
    for workers in (1, 2):
        address, procs = _cluster(workers, args.threads, work / "dask.log")
        try:
            with DaskEngine(address, timeout=60) as engine:
                engine.client.wait_for_workers(workers, timeout=120)
                # warm-up: numba compiles once per worker process
                engine.client.run(_warm)
                t0 = time.perf_counter()
                reconstruct_volumes({"li": stored}, theta, wanted, backend="fbp", ncore=args.threads,
                                    mapper=engine.map, out_dir=work / f"dask{workers}")  # fmt: skip
                record(f"Dask, {workers} worker(s) x {args.threads} thread(s)", time.perf_counter() - t0,
                       engine.report()["tasks"])  # fmt: skip
        finally:
            _stop(procs)
    if not args.json:
        print(f"machine: {machine()}")
        print(f"{a} angles x {n}^2, reconstruction slabs of 16 slices read from an HDF5 stack")
        print("| where | seconds | tasks |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r['where']} | {r['seconds']:.1f} | {r['tasks'] if r['tasks'] is not None else '—'} |")
    return 0


def _warm() -> None:
    from bluesky_lowdose.recon import reconstruct

    reconstruct(np.zeros((8, 2, 16), np.float32), np.linspace(0.0, 180.0, 8), backend="fbp")


if __name__ == "__main__":
    sys.exit(main())
