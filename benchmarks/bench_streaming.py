"""Cost of streaming enhancement: RunEngine wall time with vs without the enhancer.

The detector really waits ``time_scale`` × the exposure time, so the scan is paced like a
real one; the enhancer trains and enhances on other threads. Also reports the per-frame
enhancement latency against the short exposure time, and the end-to-end time.

Run: ``.venv/bin/python benchmarks/bench_streaming.py [--size 128] [--angles 181] [--time-scale 0.05]``.
``--service`` adds a third scan with the enhancer out of the RunEngine's process: a 0MQ
``Publisher`` → ``bluesky-0MQ-proxy`` → ``lowdose-tomo enhancer --zmq`` (both subprocesses).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
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
    preview_interval: float | None = 5.0,
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
            client,
            method=method,
            train_kwargs=training,
            n2i_options={"steps": steps},
            volume_directory=server.layout.volumes,
            preview_interval=preview_interval,
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
        out["preview_per_frame_s"] = res.timings.get("pipeline_preview_s", 0.0) / max(len(res.latencies), 1)
        out["previews"] = 0
        if preview_interval is not None:
            from bluesky_lowdose.storage import PROCESSED, stream_array

            run = client[PROCESSED][res.processed_uid]
            out["previews"] = int(stream_array(run, "preview", "frames").shape[0]) if "preview" in run else 0
    return out


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def scan_service(size, angles, time_scale, server, client, epochs, method, steps) -> dict:
    """The scan with the enhancer as a 0MQ service: RunEngine wall time and the processed run's end."""
    from bluesky import RunEngine
    from bluesky.callbacks.zmq import Publisher
    from event_model import compose_run

    from bluesky_lowdose.callbacks import ThreadedCallback
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.plans import lowdose_tomo_scan
    from bluesky_lowdose.storage import make_raw_writer

    tmp = tempfile.TemporaryDirectory(prefix="bench-service-")  # removed at exit
    work = Path(tmp.name)
    in_port, out_port = _free_ports(2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TILED_API_KEY": server.api_key}
    procs = []
    try:
        proxy_log = work / "proxy.log"
        procs.append(subprocess.Popen(
            [_script("bluesky-0MQ-proxy"), "--in-address", f"127.0.0.1:{in_port}",
             "--out-address", f"127.0.0.1:{out_port}"], stdout=proxy_log.open("wb"), stderr=subprocess.STDOUT,
            env=env))  # fmt: skip
        _wait(lambda: "Use Ctrl+C to exit" in proxy_log.read_text(errors="replace"), 60, "proxy start")
        log, ready = work / "enhancer.log", work / "enhancer.ready"
        procs.append(subprocess.Popen(
            [_script("lowdose-tomo"), "enhancer", "--zmq", f"127.0.0.1:{out_port}", "--tiled-uri", server.uri,
             "--data-dir", str(work / "data"), "--ready-file", str(ready), "--method", method, "--epochs",
             str(epochs), "--n2i-steps", str(steps), "--stop-after", "1"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env))  # fmt: skip
        _wait(ready.exists, 180, "service start")
        publisher = Publisher(f"127.0.0.1:{in_port}")
        for _ in range(600):  # 0MQ's slow joiners: probe until the service sees documents
            bundle = compose_run(metadata={"plan_name": "zmq_probe"})
            publisher("start", bundle.start_doc)
            publisher("stop", bundle.compose_stop())
            time.sleep(0.1)
            if bundle.start_doc["uid"] in log.read_text(errors="replace"):
                break
        txm = make_devices(server.layout.detector, size=size, time_scale=time_scale)
        RE = RunEngine({}, call_returns_result=False)
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        RE.subscribe(writer)
        RE.subscribe(publisher)
        t = time.perf_counter()
        RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=angles,
                             reference_angles=(0.0, 60.0, 120.0)))  # fmt: skip
        re_s = time.perf_counter() - t
        writer.flush()
        t_stop = time.perf_counter()
        rc = procs[-1].wait(timeout=3600)  # --stop-after 1: it ends when the run is processed
        done = time.perf_counter()
        return {"re_s": re_s, "stop_to_processed_s": done - t_stop, "end_to_end_s": done - t, "rc": rc}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=181)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--n2i-steps", type=int, default=2400)
    parser.add_argument("--service", action="store_true", help="also run the enhancer as a 0MQ service")
    parser.add_argument("--preview-interval", type=float, default=5.0,
                        help="seconds between live previews (negative: no preview)")  # fmt: skip
    args = parser.parse_args()

    from bluesky_lowdose.storage import TiledServer

    opts = (args.size, args.angles, args.time_scale)
    preview = None if args.preview_interval < 0 else args.preview_interval
    rest = (args.epochs, args.method, args.n2i_steps)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp, TiledServer(tmp) as server:
        client = server.client()
        base = scan(*opts, False, server, client, *rest)
        withe = scan(*opts, True, server, client, *rest, preview)
        service = scan_service(*opts, server, client, *rest) if args.service else None
    short = 2.0 * args.time_scale
    print(f"machine: {machine()}")
    print(
        f"command: python benchmarks/bench_streaming.py --size {args.size} --angles {args.angles} "
        f"--time-scale {args.time_scale} --epochs {args.epochs} --method {args.method} "
        f"--n2i-steps {args.n2i_steps} --preview-interval {args.preview_interval}"
        + (" --service" if args.service else "")
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
    print(f"| live preview: previews in Tiled during/after the scan | {withe['previews']} |")
    print(f"| live preview: back-projection per frame (3 central slices) | "
          f"{withe['preview_per_frame_s'] * 1000:.1f} ms |")  # fmt: skip
    print(f"| short exposure (as paced) | {short * 1000:.0f} ms |")
    lat = withe["latency_median_s"]
    print(f"| median frame latency (arrival → processed) | {lat:.2f} s |")
    print(f"| last frame → processed run finished (enhancer's clock) | {withe['after_last_frame_s']:.1f} s |")
    print(f"| of which the slice step (Noise2Inverse) | {withe['slice_step_s']:.1f} s |")
    print(f"| RunEngine stop → processed run written (wall) | {withe['stop_to_processed_s']:.1f} s |")
    print(f"| end-to-end (scan start → processed run written) | {withe['end_to_end_s']:.1f} s |")
    print(f"| status | {withe['status']} |")
    if service is not None:
        print(f"| RunEngine wall time, enhancer as a 0MQ service | {service['re_s']:.1f} s |")
        print(f"| ratio, service (target ≤ 1.05) | {service['re_s'] / base['re_s']:.3f} |")
        stop_s, e2e_s, rc = service["stop_to_processed_s"], service["end_to_end_s"], service["rc"]
        print(f"| RunEngine stop → service's processed run written (wall) | {stop_s:.1f} s |")
        print(f"| end-to-end with the service | {e2e_s:.1f} s (exit code {rc}) |")


if __name__ == "__main__":
    main()
