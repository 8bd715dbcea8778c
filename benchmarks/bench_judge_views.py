"""Does the long-exposure judge rank like the truth? A family of smoothings, judged in view and held out.

Run: ``.venv/bin/python benchmarks/bench_judge_views.py [--case real-like] [--size 128]`` (~30 s at 128 on
2 cores). The raw reconstruction of a 1/10-dose scan of a realistic case (``bench_protocols.CASES``,
the evaluation's simulation and slab) is smoothed in the slice plane with Gaussian σ = 0 ... 2.2 px and
scored three ways: the truth (PSNR inside the object against the evaluation's ``R_o``), the judge
on the same volume ("in view": the frames at the long exposures' angles are in it), and the judge on
the reconstruction without those frames ("held out", as ``auto`` judges). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_protocols import CASES

SIGMAS = (0.0, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="real-like", choices=list(CASES))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--reference", default="detector", choices=("detector", "sample"),
                    help="the truth: the detector record without noise, or the sample")  # fmt: skip
    args = ap.parse_args()

    from scipy.ndimage import gaussian_filter

    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import LongExposureJudge, enhance_scan
    from bluesky_lowdose.pipeline.angles import same_view_indices

    c, size = CASES[args.case], args.size
    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(c["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"], reference=args.reference)  # fmt: skip
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)  # the evaluation's simulation, scans and R_o
    ref_idx = P._reference_indices(theta, cfg.train_angles)
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    truth, _ = P.reference_volume(cfg, phys, theta)
    scorer = P._Scorer(truth, scored, None)
    kw = {"method": "none", "open_beam_counts": low["open_beam_counts"], "read_noise": low["read_noise"]}
    drop = same_view_indices(theta, theta[ref_idx])
    keep = np.setdiff1d(np.arange(theta.size), drop)
    raw = enhance_scan(low["transmission"], theta, **kw).volume
    unseen = enhance_scan(low["transmission"][keep], theta[keep], **kw).volume
    judge = LongExposureJudge.from_transmission(full["transmission"][ref_idx], theta[ref_idx],
                                                open_beam_counts=full["open_beam_counts"])  # fmt: skip
    ceiling = judge.noise["ceiling_psnr_db"]
    print(f"machine: {machine()}\n\n{args.case}: {size}^3, {cfg.angles} angles, 1/10 dose; frames left "
          f"out for 'held out': {drop.tolist()}; judge ceiling {ceiling:.1f} dB\n")  # fmt: skip
    print(f"truth: R_o of the {args.reference}\n")
    print("| σ (px) | truth PSNR (dB) | judge in view (dB) | judge held out (dB) |\n|---|---|---|---|")
    out = []
    for s in SIGMAS:
        f = (lambda v, s=s: gaussian_filter(v, (0, s, s))) if s else (lambda v: v)
        row = (scorer(f(raw))[0]["psnr"], judge.score(f(raw))["psnr_db"], judge.score(f(unseen))["psnr_db"])
        out.append(row)
        print(f"| {s:g} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} |")
    best = [SIGMAS[int(np.argmax([r[k] for r in out]))] for k in range(3)]
    print(f"\nbest σ: truth {best[0]:g}, judge in view {best[1]:g}, judge held out {best[2]:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
