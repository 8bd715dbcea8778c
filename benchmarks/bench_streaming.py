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


def scan(
    size: int,
    angles: int,
    time_scale: float,
    enhance: bool,
    server,
    client,
    epochs: int,
    method: str,
    steps: int,
) -> dict:
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
        training = {"epochs": epochs, "patience": epochs}
        enhancer = ProjectionEnhancer(
            client, method=method, train_kwargs=training, n2i_options={"steps": steps}
        )
        RE.subscribe(enhancer)
    t = time.perf_counter()
    (uid,) = RE(
        lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=angles,
                          reference_angles=(0.0, 60.0, 120.0))
    )  # fmt: skip
    out = {"re_s": time.perf_counter() - t}
    writer.flush()
    if enhancer is not None:
        t_stop = time.perf_counter()
        enhancer.wait()
        res = enhancer.results[uid]
        done = time.perf_counter()
        out["end_to_end_s"] = done - t
        out["stop_to_processed_s"] = done - t_stop
        out["method"] = res.method
        out["training_s"] = res.timings.get("training_s", 0.0)
        out["training_started_s"] = res.timings.get("training_started_s", float("nan"))
        out["latency_median_s"] = statistics.median(res.latencies) if res.latencies else float("nan")
        per_frame = res.timings.get("pipeline_projection_step_s", 0.0) + res.timings.get(
            "pipeline_backprojection_s", 0.0
        )
        out["per_frame_s"] = per_frame / max(len(res.latencies), 1)
        out["after_last_frame_s"] = res.timings.get("after_last_frame_s", float("nan"))
        out["slice_step_s"] = res.timings.get("pipeline_slice_step_s", 0.0)
        out["status"] = res.status
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=181)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--n2i-steps", type=int, default=2400)
    args = parser.parse_args()

    from bluesky_lowdose.storage import TiledServer

    opts = (args.size, args.angles, args.time_scale)
    rest = (args.epochs, args.method, args.n2i_steps)
    with TiledServer(tempfile.mkdtemp(prefix="bench-stream-")) as server:
        client = server.client()
        base = scan(*opts, False, server, client, *rest)
        withe = scan(*opts, True, server, client, *rest)
    short = 2.0 * args.time_scale
    print(f"machine: {machine()}")
    print(
        f"command: python benchmarks/bench_streaming.py --size {args.size} --angles {args.angles} "
        f"--time-scale {args.time_scale} --epochs {args.epochs} --method {args.method} "
        f"--n2i-steps {args.n2i_steps}"
    )
    print()
    print("| quantity | value |")
    print("|---|---|")
    print(f"| method | {withe['method']} |")
    print(f"| RunEngine wall time without enhancer | {base['re_s']:.1f} s |")
    print(f"| RunEngine wall time with enhancer | {withe['re_s']:.1f} s |")
    print(f"| ratio (target ≤ 1.05) | {withe['re_s'] / base['re_s']:.3f} |")
    print(
        f"| projection training started after run start (paper/hybrid) | {withe['training_started_s']:.1f} s"
        " |"
    )
    print(f"| projection training time | {withe['training_s']:.1f} s |")
    print(f"| per-frame work while the scan runs (projection step + -log + back-projection) | "
          f"{withe['per_frame_s'] * 1000:.1f} ms |")  # fmt: skip
    print(f"| short exposure (as paced) | {short * 1000:.0f} ms |")
    lat = withe["latency_median_s"]
    print(f"| median frame latency (arrival → processed) | {lat:.2f} s |")
    print(f"| last frame → processed run finished (enhancer's clock) | {withe['after_last_frame_s']:.1f} s |")
    print(f"| of which the slice step (Noise2Inverse) | {withe['slice_step_s']:.1f} s |")
    print(f"| RunEngine stop → processed run written (wall) | {withe['stop_to_processed_s']:.1f} s |")
    print(f"| end-to-end (scan start → processed run written) | {withe['end_to_end_s']:.1f} s |")
    print(f"| status | {withe['status']} |")


if __name__ == "__main__":
    main()
