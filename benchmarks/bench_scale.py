"""Memory and time of a streamed scan as it grows: simulated TXM -> RunEngine -> enhancer -> Tiled.

Run: ``.venv/bin/python benchmarks/bench_scale.py --size 512 --angles 361 --json``
(``--method none`` measures correction + reconstruction; ``--dask-scheduler tcp://...`` or
``local`` sends the reconstruction slabs to Dask). By default the enhancer runs as the profile and
the 0MQ service run it: line integrals and volumes in the data directory's ``work`` folder, read
back slab by slab (``--in-memory``: the previous path, everything in this process).
Prints one JSON line: ``frames``, ``height``,
``width``, ``stack_mb`` (one float32 stack), ``baseline_rss_mb`` (this process after set-up),
``peak_rss_mb`` (sampled every 20 ms until the processed run is written), ``growth_stacks``
((peak - baseline) / stack_mb: issue 11's target is <= 0.5 at any size), timings
(``after_last_frame_s``: from the end of the scan to the processed run written) and ``storage``
(the volume files of the processed run and the growth of Tiled's own storage: one copy of each
volume, issue 18). The Tiled server and Dask workers are other processes and are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=361)
    parser.add_argument("--method", default="none")
    parser.add_argument("--dask-scheduler", default=None)
    parser.add_argument("--keep-frames", action="store_true", help="as the demo (default: as the profile)")
    parser.add_argument("--cold", action="store_true", help="no warm-up scan first")
    parser.add_argument("--in-memory", action="store_true", help="no work directory (the old path)")
    parser.add_argument("--n2i-steps", type=int, default=None, help="Noise2Inverse steps (method n2i)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bluesky import RunEngine

    from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.plans import lowdose_tomo_scan
    from bluesky_lowdose.storage import TiledServer, make_raw_writer

    engine = None
    if args.dask_scheduler:
        from bluesky_lowdose.engine import DaskEngine

        engine = DaskEngine(args.dask_scheduler)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, TiledServer(tmp) as server:
        client = server.client()
        txm = make_devices(server.layout.detector, size=args.size)
        RE = RunEngine({}, call_returns_result=False)
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        enhancer = ProjectionEnhancer(client, method=args.method, backup_directory=server.layout.backup,
                                      mapper=None if engine is None else engine.map,
                                      keep_frames=args.keep_frames,
                                      work_directory=None if args.in_memory else server.layout.work,
                                      volume_directory=server.layout.volumes,
                                      n2i_options={} if args.n2i_steps is None else {"steps": args.n2i_steps},
                                      )  # fmt: skip
        RE.subscribe(writer)
        RE.subscribe(enhancer)
        if not args.cold:
            # the baseline of a process that has run a scan already (a profile's second scan):
            # numba's compiled kernels (~250 MB of LLVM), the clients, the simulator's caches are in
            # it; they come once per process, at any scan size
            (warm,) = RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage,
                                           num_angles=4, num_darks=4, num_flats=4,
                                           reference_angles=(0.0, 60.0, 120.0)))  # fmt: skip
            assert enhancer.wait(timeout=3600) and writer.flush(timeout=600)  # n2i: a whole slice step
            enhancer.forget(warm)
            import gc

            gc.collect()
        baseline = _rss_mb()
        tiled_bytes = _bytes(server.layout.tiled)
        peak = {"mb": baseline}
        done = threading.Event()

        stages: dict[str, float] = {}  # the enhancer's stage -> the highest RSS seen in it

        def sample() -> None:
            while not done.is_set():
                rss = _rss_mb()
                peak["mb"] = max(peak["mb"], rss)
                jobs = list(enhancer._jobs.values())
                stage = jobs[-1].progress["stage"] if jobs else "set-up"
                stage = "scanning" if stage == "enhancing" and not scanned.is_set() else stage
                stages[stage] = round(max(stages.get(stage, 0.0), rss), 1)
                time.sleep(0.02)

        scanned = threading.Event()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        (uid,) = RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage,
                                      num_angles=args.angles, num_darks=4, num_flats=4,
                                      reference_angles=(0.0, 60.0, 120.0)))  # fmt: skip
        scan_s = time.perf_counter() - t0
        scanned.set()
        assert enhancer.wait(timeout=3600) and writer.flush(timeout=600)
        total_s = time.perf_counter() - t0
        done.set()
        sampler.join()
        status = enhancer.results[uid].status
        processed_uid = enhancer.results[uid].processed_uid
        # one copy of each volume: the files in volumes/<processed uid>/, and what Tiled's own
        # storage (catalog, arrays written through it, tables) grew by for the whole run
        grown = _bytes(server.layout.tiled) - tiled_bytes
        storage = {"volume_files_mb": round(_bytes(server.layout.volumes / processed_uid) / 2**20, 1),
                   "one_volume_mb": round(args.size**3 * 4 / 2**20, 1),
                   "tiled_storage_growth_mb": round(grown / 2**20, 1)}  # fmt: skip
    stack_mb = args.angles * args.size * args.size * 4 / 2**20
    row = {
        "frames": args.angles, "height": args.size, "width": args.size, "method": args.method,
        "keep_frames": args.keep_frames, "work_directory": not args.in_memory, "cold": args.cold,
        "stack_mb": round(stack_mb, 1), "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak["mb"], 1), "peak_rss_mb_by_stage": stages,
        "growth_stacks": round((peak["mb"] - baseline) / stack_mb, 2), "scan_s": round(scan_s, 1),
        "total_s": round(total_s, 1), "after_last_frame_s": round(total_s - scan_s, 1), "status": status,
        "storage": storage,
        "dask": None if engine is None else engine.report(), "machine": machine(),
    }  # fmt: skip
    if engine is not None:
        engine.close()
    print(json.dumps(row) if args.json else "\n".join(f"{k:16s} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
