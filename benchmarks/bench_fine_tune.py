"""Fine-tuning a registered Noise2Inverse model on a second sample, scored against the truth (issue 19).

Scan A (seed 1) trains a denoiser from scratch; scan B (seed 2: another sample, the same simulated
instrument) is denoised by A's model alone, by A's model fine-tuned with several recipes
(``ScanPipeline(fine_tune=)``: a fraction of the steps at a fraction of the learning rate), and by a
model trained on B from scratch. Every result is scored inside the object against the noise-free
reconstruction of its sample (the evaluation's Poisson protocol: 1/10 dose, 128^3, 181 angles,
no blur), which the long exposures cannot do on views the volumes were made from (see
``pipeline.result.keep_better``).

Run: ``.venv/bin/python benchmarks/bench_fine_tune.py`` (~12 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

RECIPES = ((0.2, 0.1), (0.2, 0.3), (0.2, 1.0), (0.1, 0.3))


def scan(size: int, angles: int, seed: int) -> tuple[np.ndarray, dict]:
    """The noise-free reference and the ``enhance_scan`` arguments of one 1/10-dose scan."""
    from bluesky_lowdose.evaluation.config import EvaluationConfig
    from bluesky_lowdose.evaluation.protocol import poisson_physics, poisson_scan, reference_volume

    theta = np.linspace(0.0, 180.0, angles)
    cfg = EvaluationConfig(mode="poisson", size=size, angles=angles, slices=0, dose_ratios=(10.0,),
                           flux=300.0, exposure=2.0, seed=seed)  # fmt: skip
    physics = poisson_physics(cfg)
    ref, _ = reference_volume(cfg, physics, theta)
    s = poisson_scan(cfg, physics, theta, 10.0)
    return ref, {"projections": s["transmission"], "theta_deg": theta, "input": "transmission",
                 "open_beam_counts": s["open_beam_counts"], "read_noise": s["read_noise"], "judge": False,
                 "keep_projections": False, "method": "n2i"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=181)
    args = parser.parse_args()

    from bluesky_lowdose.pipeline import enhance_scan, score_volume

    ref_a, a = scan(args.size, args.angles, 1)
    ref_b, b = scan(args.size, args.angles, 2)
    rows = []

    def run(name: str, ref: np.ndarray, **kw) -> object:
        t0 = time.perf_counter()
        res = enhance_scan(**kw)
        rows.append((name, score_volume(res.volume, ref), time.perf_counter() - t0))
        print(rows[-1], file=sys.stderr, flush=True)
        return res

    model = run("A from scratch", ref_a, **a).models["slices"]
    run("B: A's model alone", ref_b, slice_model=model, **b)
    for fraction, rate in RECIPES:
        run(f"B: A's model fine-tuned, {fraction:g} of the steps at {rate:g} of the rate", ref_b,
            warm_start={"slices": model}, fine_tune={"fraction": fraction, "learning_rate_fraction": rate},
            **b)  # fmt: skip
    run("B from scratch", ref_b, **b)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_fine_tune.py --size {args.size} --angles {args.angles}")
    print()
    print("| denoiser | PSNR / SSIM inside the object (vs noise-free) | seconds |")
    print("|---|---|---|")
    for name, score, seconds in rows:
        print(f"| {name} | {score['psnr']:.2f} / {score['ssim']:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
