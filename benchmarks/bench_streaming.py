"""Cost of streaming enhancement: RunEngine wall time with vs without the enhancer.

The detector really waits ``time_scale`` × the exposure time, so the scan is paced like a
real one; the enhancer trains and enhances on other threads. Also reports the per-frame
enhancement latency against the short exposure time, and the end-to-end time.

Run: ``.venv/bin/python benchmarks/bench_streaming.py [--size 128] [--angles 181] [--time-scale 0.05]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine


def scan(size: int, angles: int, time_scale: float, enhance: bool, server, client, epochs: int) -> dict:
    from bluesky import RunEngine

    from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.plans import lowdose_tomo_scan
    from bluesky_lowdose.storage import make_raw_writer

    txm = make_devices(server.layout.detector, size=size, time_scale=time_scale)
    RE = RunEngine({}, call_returns_result=False)
    writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
    RE.subscribe(writer)
    enhancer = None
    if enhance:
        enhancer = ProjectionEnhancer(client, train_kwargs={"epochs": epochs, "patience": epochs})
        RE.subscribe(enhancer)
    t = time.perf_counter()
    (uid,) = RE(
        lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=angles,
                          reference_angles=(0.0, 60.0, 120.0))
    )  # fmt: skip
    out = {"re_s": time.perf_counter() - t}
    writer.flush()
    if enhancer is not None:
        enhancer.wait()
        res = enhancer.results[uid]
        out["end_to_end_s"] = time.perf_counter() - t
        out["training_s"] = res.timings.get("training_s", float("nan"))
        out["training_started_s"] = res.timings.get("training_started_s", float("nan"))
        n_train_end = res.timings.get("training_started_s", 0) + res.timings.get("training_s", 0)
        out["latency_median_s"] = statistics.median(res.latencies) if res.latencies else float("nan")
        out["enhance_per_frame_s"] = res.timings.get("enhance_s", float("nan")) / max(len(res.latencies), 1)
        out["status"] = res.status
        out["train_end_s"] = n_train_end
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=181)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    from bluesky_lowdose.storage import TiledServer

    with TiledServer(tempfile.mkdtemp(prefix="bench-stream-")) as server:
        client = server.client()
        base = scan(args.size, args.angles, args.time_scale, False, server, client, args.epochs)
        withe = scan(args.size, args.angles, args.time_scale, True, server, client, args.epochs)
    short = 2.0 * args.time_scale
    print(f"machine: {machine()}")
    print(
        f"command: python benchmarks/bench_streaming.py --size {args.size} --angles {args.angles} "
        f"--time-scale {args.time_scale} --epochs {args.epochs}"
    )
    print()
    print("| quantity | value |")
    print("|---|---|")
    print(f"| RunEngine wall time without enhancer | {base['re_s']:.1f} s |")
    print(f"| RunEngine wall time with enhancer | {withe['re_s']:.1f} s |")
    print(f"| ratio (target ≤ 1.05) | {withe['re_s'] / base['re_s']:.3f} |")
    print(f"| training started after run start | {withe['training_started_s']:.1f} s |")
    print(f"| training time | {withe['training_s']:.1f} s |")
    print(f"| enhancement compute per frame | {withe['enhance_per_frame_s'] * 1000:.1f} ms |")
    print(f"| short exposure (as paced) | {short * 1000:.0f} ms |")
    lat = withe["latency_median_s"]
    print(f"| median frame latency (arrival → enhanced, incl. waiting for the model) | {lat:.1f} s |")
    print(f"| end-to-end (scan start → processed run written) | {withe['end_to_end_s']:.1f} s |")
    print(f"| status | {withe['status']} |")


if __name__ == "__main__":
    main()
