"""The judge of recorrupted scans against the truth: estimated and true PSNR gains over raw, per method.

For each realistic case (``bench_protocols.CASES``, plus ``real-like`` at the issue's real scan's
19 000 quanta), at 1/10 dose: every method runs on the scan (its true PSNR against the noise-free
reconstruction of the same views, inside the object, as ``lowdose-tomo evaluate`` scores) and on
the first recorrupted scan (:func:`bluesky_lowdose.pipeline.recorrupt.recorrupted_slab`, as ``auto``
makes it), where :class:`~bluesky_lowdose.pipeline.recorrupt.NoiseFreeJudge` estimates its PSNR with
no truth. Prints a Markdown table per case; every method trains twice, so 8-10 min per case at 128³
on 2 cores.

Run: ``.venv/bin/python benchmarks/bench_noise_free_judge.py [--cases ...] [--methods ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_protocols import CASES

EXTRA = {"real-like-19000": {**CASES["real-like"], "flux": 19000.0}}


def judge_case(case: dict, size: int, seed: int, methods: list[str]) -> dict:
    """True and estimated PSNR of every method on one case."""
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import enhance_scan
    from bluesky_lowdose.pipeline.recorrupt import recorrupted_slab
    from bluesky_lowdose.pipeline.stack import pair_from_projections

    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(case["angles"] * size)),
                           dose_ladder=(), methods=tuple(methods), phantom=case["phantom"], flux=case["flux"],
                           psf_sigma=case["psf_sigma"], seed=seed, progress=False)  # fmt: skip
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)
    ref = P._reference_indices(theta, cfg.train_angles)
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    truth = P.reference_volume(cfg, phys, theta)[0]
    scorer = P._Scorer(truth, scored, None)
    t = low["transmission"]
    kw = {"long_refs": full["transmission"][ref], "reference_angles": theta[ref], "input": "transmission",
          "long_open_beam_counts": full["open_beam_counts"], "open_beam_counts": low["open_beam_counts"],
          "read_noise": low["read_noise"], "projection_training": cfg.projection_training(),
          "n2i_options": cfg.n2i_options(), "keep_projections": False, "judge": False,
          "seed": seed}  # fmt: skip
    short = pair_from_projections(t, theta, theta[ref])[0]
    made = recorrupted_slab(t, slice(0, t.shape[1]), theta, short=short, long_=full["transmission"][ref],
                            open_beam_counts=low["open_beam_counts"], read_noise=low["read_noise"],
                            long_open_beam_counts=full["open_beam_counts"], judged_rows=scored,
                            seed=seed)  # fmt: skip
    out = {"angles": cfg.angles, "noise": made.record["noise"], "methods": {}}
    for m in methods:
        t0 = time.perf_counter()
        true = scorer(enhance_scan(t, theta, method=m, **kw).volume)[0]["psnr"]
        recorrupted = enhance_scan(made.frames, theta, method=m, **{**kw, "short_refs": made.short}).volume
        est = made.judge.score(recorrupted)["psnr_db"]
        out["methods"][m] = {"true": true, "estimated": est,
                             "true_on_recorrupted": scorer(recorrupted)[0]["psnr"],
                             "seconds": time.perf_counter() - t0}  # fmt: skip
    return out


def main() -> int:
    cases = {**CASES, **EXTRA}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["real-like-19000", "real-like", "textured-3000"],
                    choices=list(cases))  # fmt: skip
    ap.add_argument("--methods", nargs="+", default=["none", "n2i", "bm3d-slices", "bm3d", "paper"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    for name in args.cases:
        r = judge_case(cases[name], args.size, args.seed, args.methods)
        corr = r["noise"]["neighbour_correlation"]
        print(f"\n{name} ({r['angles']} angles; noise's neighbour correlation {corr['along_rows']:.2f} along "
              f"rows, {corr['along_columns']:.2f} across)\n")  # fmt: skip
        print("| method | true PSNR | true gain | estimated gain | true gain on the recorrupted scan | s |")
        print("|---|---|---|---|---|---|")
        base = r["methods"]["none"]
        for m, v in r["methods"].items():
            print(f"| {m} | {v['true']:.2f} | {v['true'] - base['true']:+.2f} | "
                  f"{v['estimated'] - base['estimated']:+.2f} | "
                  f"{v['true_on_recorrupted'] - base['true_on_recorrupted']:+.2f} | {v['seconds']:.0f} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
