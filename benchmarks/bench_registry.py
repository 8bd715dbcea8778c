"""Learn once per instrument: a registered Noise2Inverse model on a second sample of the same
simulated instrument, against training from scratch on it (issue 19).

Scan A (seed 1) trains and records its denoiser; scan B (seed 2, another sample, same instrument
key) runs three times: ``registry="only"`` (the model applied, no training), ``registry="auto"``
(the default: the model's first result, then fine-tuned for a fifth of the steps) and
``registry="off"`` (trained from scratch). Quality is scored against the simulator's noise-free reconstruction
(``simulator_reference``) inside the object; time is the enhancer's, from the last frame to the
processed run written.

Run: ``.venv/bin/python benchmarks/bench_registry.py [--size 128] [--angles 181] [--steps 2400]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine


def run_scan(
    server, client, size: int, angles: int, short: float, seed: int, steps: int, registry: str
) -> dict:
    from bluesky import RunEngine

    from bluesky_lowdose.callbacks import ProjectionEnhancer
    from bluesky_lowdose.demo import simulator_reference
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.pipeline import score_volume
    from bluesky_lowdose.plans import lowdose_tomo_scan

    txm = make_devices(server.layout.detector, size=size, seed=seed)
    layout = server.layout
    enhancer = ProjectionEnhancer(client, method="n2i", n2i_options={"steps": steps}, registry=registry,
                                  backup_directory=layout.backup, volume_directory=layout.volumes,
                                  preview_interval=None)  # fmt: skip
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(enhancer)
    plan = lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=angles,
                             reference_angles=(0.0, 45.0, 90.0, 135.0), short_exposure=short)  # fmt: skip
    (uid,) = RE(plan)
    enhancer.wait()
    res = enhancer.results[uid]
    ref = simulator_reference(txm.physics, res.theta)
    raw, enh = score_volume(res.recon_raw, ref), score_volume(res.recon_enhanced, ref)
    first = None
    if res.first_result is not None:  # the registered model's result, read back from Tiled
        from bluesky_lowdose.storage import PROCESSED, stream_array

        vol = stream_array(client[PROCESSED][res.processed_uid], "recon_first", "slice").read()
        first = {**score_volume(vol, ref), "s": res.first_result["seconds_after_last_frame"]}
    steps_run = None if res.slice_model is None else res.slice_model.provenance["hyperparameters"]["steps"]
    enhancer.close()
    reg = res.registry
    return {"seed": seed, "registry": registry, "status": res.status,
            "used": reg.get("used") or reg.get("started_from"), "first": first, "steps": steps_run,
            "kept": (res.provenance.get("warm_start") or {}).get("kept"),
            "after_last_frame_s": res.timings.get("after_last_frame_s", float("nan")),
            "slice_step_s": res.timings.get("pipeline_slice_step_s", 0.0),
            "raw_psnr": raw["psnr"], "raw_ssim": raw["ssim"], "psnr": enh["psnr"], "ssim": enh["ssim"],
            "judge_psnr": res.metrics.get("quality_psnr_db", float("nan"))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=181)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument(
        "--short-exposure", type=float, default=0.2, help="seconds (0.2: 1/10 of the default)"
    )
    parser.add_argument("--skip-scratch", action="store_true",
                        help="leave out B from scratch (e.g. when only the warm start changed)")  # fmt: skip
    args = parser.parse_args()

    from bluesky_lowdose.storage import TiledServer

    opts = (args.size, args.angles, args.short_exposure)
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp, TiledServer(tmp) as server:
        client = server.client()
        rows = [
            ("A: trained, recorded", run_scan(server, client, *opts, 1, args.steps, "record")),
            ("B: registry model only", run_scan(server, client, *opts, 2, args.steps, "only")),
            ("B: registry auto (fine-tuned)", run_scan(server, client, *opts, 2, args.steps, "auto")),
        ]
        if not args.skip_scratch:
            rows.append(("B: from scratch", run_scan(server, client, *opts, 2, args.steps, "off")))
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_registry.py --size {args.size} --angles {args.angles} "
          f"--steps {args.steps} --short-exposure {args.short_exposure}")  # fmt: skip
    print()
    print(
        "| scan | registry model | training steps | last frame → first result (PSNR / SSIM) "
        "| last frame → processed run | slice step | raw PSNR / SSIM | result PSNR / SSIM (vs noise-free) "
        "| status |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        used = (r["used"] or {}).get("slices", "—")
        f = r["first"]
        first = "—" if f is None else f"**{f['s']:.1f} s** ({f['psnr']:.2f} / {f['ssim']:.3f})"
        kept = f" (kept: {r['kept']})" if r["kept"] else ""
        print(f"| {name} | {used[:8] if used != '—' else used} | {r['steps'] or 0} | {first} | "
              f"{r['after_last_frame_s']:.1f} s | {r['slice_step_s']:.1f} s | "
              f"{r['raw_psnr']:.2f} / {r['raw_ssim']:.3f} | {r['psnr']:.2f} / {r['ssim']:.3f}{kept} | "
              f"{r['status']} |")  # fmt: skip


if __name__ == "__main__":
    main()
