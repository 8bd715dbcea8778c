"""Memory across runs: the resident memory of one process that scans and enhances five times.

The process is set up as the IPython profile sets itself up
(:func:`bluesky_lowdose.beamline.beamline_from_env`: the embedded Tiled server, the streaming
enhancer with ``keep_frames=False``, a work directory and ``keep_results=KEEP_RESULTS``; the
model registry on its default ``"auto"``, so scans 2-5 start from the models of the ones
before). After each scan and its processed run the resident set size (RSS,
``/proc/self/status``) is read after a garbage collection, and again after glibc's
``malloc_trim(0)`` (freed heap the allocator still holds); the peak so far is ``VmHWM``.
Target (issue 19): growth over the five scans < 10 % of one scan's peak.

The profile trains in a child process per training (``isolate_training``); the largest child's
peak RSS is printed too. ``--in-process-training`` trains in this process instead, to compare.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--size 64] [--angles 91] [--scans 5]
[--in-process-training]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine


def _status(field: str) -> float:
    """A ``/proc/self/status`` field in MiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _trimmed_rss() -> float:
    """RSS after glibc hands freed heap back to the system (``malloc_trim(0)``): what is left is
    held, not merely freed and cached by the allocator (NaN where there is no glibc)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return float("nan")
    return _status("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--angles", type=int, default=91)
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600, help="Noise2Inverse steps (from scratch)")
    parser.add_argument(
        "--in-process-training",
        action="store_true",
        help="train in this process (the profile trains in a child process)",
    )
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-memory-")  # kept: the RunEngine's metadata lives there until exit
    env = {"LOWDOSE_DATA_DIR": tmp, "LOWDOSE_SIZE": str(args.size), "LOWDOSE_METHOD": "n2i",
           "LOWDOSE_N2I_STEPS": str(args.steps)}  # fmt: skip
    from bluesky_lowdose.beamline import beamline_from_env
    from bluesky_lowdose.plans import lowdose_tomo_scan

    ns = beamline_from_env({**os.environ, **env})
    RE, enhancer = ns["RE"], ns["enhancer"]
    if args.in_process_training:
        enhancer.isolate_training = False
    rows = []
    for i in range(args.scans):
        t0 = time.perf_counter()
        RE(lowdose_tomo_scan(ns["txm_cam"], ns["rotation"], ns["shutter"], ns["sample_x"],
                             num_angles=args.angles, short_exposure=0.2,
                             md={"sample": f"bench-memory {i}"}))  # fmt: skip
        assert enhancer.wait(timeout=3600)
        gc.collect()
        uid = next(reversed(enhancer.results))
        res = enhancer.results[uid]
        rss = _status("VmRSS")
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        trimmed = _trimmed_rss()
        rows.append({"scan": i + 1, "rss": rss, "trimmed": trimmed, "peak": _status("VmHWM"),
                     "child": child_peak, "s": time.perf_counter() - t0, "status": res.status,
                     "kept": len(enhancer.results),
                     "started_from": (res.registry.get("started_from") or {}).get("slices")})  # fmt: skip
    ns["tiled_writer"].close()
    if ns["tiled_server"] is not None:
        ns["tiled_server"].close()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_memory.py --size {args.size} --angles {args.angles} "
          f"--scans {args.scans} --steps {args.steps}"
          f"{' --in-process-training' if args.in_process_training else ''}")  # fmt: skip
    where = "in a child process per training" if enhancer.isolate_training else "in this process"
    print(f"training: {where}")
    print()
    print("| scan | RSS after (MiB) | after malloc_trim (MiB) | peak so far (MiB) | largest child's peak "
          "(MiB) | scan + processing | results kept | warm start | status |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        warm = "from scratch" if r["started_from"] is None else f"from {r['started_from'][:8]}"
        print(f"| {r['scan']} | {r['rss']:.0f} | {r['trimmed']:.0f} | {r['peak']:.0f} | {r['child']:.0f} | "
              f"{r['s']:.0f} s | {r['kept']} | {warm} | {r['status']} |")  # fmt: skip
    growth = rows[-1]["rss"] - rows[0]["rss"]
    print()
    print(f"RSS growth from scan 1 to scan {args.scans}: {growth:+.0f} MiB = "
          f"{100 * growth / rows[0]['peak']:+.1f} % of the first scan's peak ({rows[0]['peak']:.0f} MiB); "
          "target < 10 %")  # fmt: skip


if __name__ == "__main__":
    main()
