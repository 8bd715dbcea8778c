"""Fine-tuning a registered Noise2Inverse model on a second sample, scored against the truth (issue 19).

Scan A (seed 1) trains a denoiser from scratch; scan B (seed 2: another sample, the same simulated
instrument) is denoised by A's model alone, by A's model fine-tuned with several recipes
(``ScanPipeline(fine_tune=)``: a fraction of the steps at a fraction of the learning rate), and by a
model trained on B from scratch. Every result is scored inside the object against the noise-free
reconstruction of its sample (the evaluation's Poisson protocol: 1/10 dose, 128^3, 181 angles,
no blur), which the long exposures cannot do on views the volumes were made from (see
``pipeline.result.keep_better``).

Run: ``.venv/bin/python benchmarks/bench_fine_tune.py`` (~12 min on 2 cores).

``--pairs N`` repeats the comparison that issue 19's targets name on N independent pairs of samples
(scans A and B with their own phantoms and noise, their own training seed), with the shipped
recipe only, and prints each pair's differences to from scratch and their mean and spread: a
single pair's from-scratch training varies by 0.4-0.8 dB with its seed alone (~9 min per pair).
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
    parser.add_argument(
        "--pairs", type=int, default=0, help="repeat on this many sample pairs (shipped recipe)"
    )
    args = parser.parse_args()
    if args.pairs:
        return pairs(args)

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


def pairs(args: argparse.Namespace) -> None:
    """The registered model alone and fine-tuned (shipped recipe) against from scratch, per pair."""
    from bluesky_lowdose.pipeline import FINE_TUNE, enhance_scan, score_volume

    rows = []
    for k in range(args.pairs):
        _, a = scan(args.size, args.angles, 11 + 2 * k)
        ref_b, b = scan(args.size, args.angles, 12 + 2 * k)
        t0 = time.perf_counter()
        model = enhance_scan(seed=k, **a).models["slices"]
        t_a = time.perf_counter() - t0
        row = {"pair": k + 1, "a_s": t_a}
        for name, kw in (("alone", {"slice_model": model}), ("fine", {"warm_start": {"slices": model}}),
                         ("scratch", {})):  # fmt: skip
            t0 = time.perf_counter()
            res = enhance_scan(seed=k, **kw, **b)
            row[name] = score_volume(res.volume, ref_b)
            row[name + "_s"] = time.perf_counter() - t0
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_fine_tune.py --size {args.size} --angles {args.angles} "
          f"--pairs {args.pairs}  (fine-tuning: {FINE_TUNE})")  # fmt: skip
    print()
    print("| pair (phantom seeds A, B) | B: A's model alone | B: fine-tuned | B: from scratch "
          "| alone − scratch | fine-tuned − scratch | seconds: alone / fine-tuned / scratch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    d_alone, d_fine = [], []
    for r in rows:
        k = r["pair"] - 1
        da, df = r["alone"]["psnr"] - r["scratch"]["psnr"], r["fine"]["psnr"] - r["scratch"]["psnr"]
        d_alone.append(da)
        d_fine.append(df)
        cells = " | ".join(f"{r[n]['psnr']:.2f} / {r[n]['ssim']:.3f}" for n in ("alone", "fine", "scratch"))
        print(f"| {r['pair']} ({11 + 2 * k}, {12 + 2 * k}) | {cells} | {da:+.2f} dB | {df:+.2f} dB | "
              f"{r['alone_s']:.0f} / {r['fine_s']:.0f} / {r['scratch_s']:.0f} |")  # fmt: skip
    sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")  # noqa: E731
    print()
    print(
        f"mean over {len(rows)} pairs: alone − scratch {np.mean(d_alone):+.2f} dB (sd {sd(d_alone):.2f}; "
        f"target ≥ −0.5), fine-tuned − scratch {np.mean(d_fine):+.2f} dB (sd {sd(d_fine):.2f}; target ≥ 0)"
    )


if __name__ == "__main__":
    main()
