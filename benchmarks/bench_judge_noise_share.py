"""How much of the judge's residual is noise? The most a denoiser can gain by the long exposures.

For each realistic case (``bench_protocols.CASES``, plus ``real-like`` at the issue's real scan's
19 000 quanta), at 1/10 dose, the raw reconstruction without the frames on the long exposures' views
(as ``auto`` judges) is scored by the long-exposure judge, and so is the reconstruction of the
noise-free projections on the same views. The difference is the most any denoiser can gain by the
judge by removing noise; the rest of the raw reconstruction's residual is the judge's own model
error (an FBP projected again at a view it did not see) and the long frames' noise. The noise share
of the residual is estimated without the truth too, as ``auto`` does
(:func:`bluesky_lowdose.pipeline.auto.noise_bound`: a second noise from the short frames' photon
statistics doubles the noise, and the judge's drop gives the share). Prints a Markdown table; a few
seconds per case at 128³ (the textured phantom takes a minute to build).

Run: ``.venv/bin/python benchmarks/bench_judge_noise_share.py [--cases ...]``.
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


def share_of(case: dict, size: int, seed: int) -> dict:
    """Judged PSNR of the raw and the noise-free reconstruction (same views) and the estimated share."""
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import LongExposureJudge, enhance_scan
    from bluesky_lowdose.pipeline.angles import same_view_indices
    from bluesky_lowdose.pipeline.auto import noise_bound

    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(case["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=case["phantom"], flux=case["flux"],
                           psf_sigma=case["psf_sigma"], seed=seed)  # fmt: skip
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)
    ref_idx = P._reference_indices(theta, cfg.train_angles)
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    keep = np.setdiff1d(np.arange(theta.size), same_view_indices(theta, theta[ref_idx]))
    kw = {"method": "none", "open_beam_counts": low["open_beam_counts"], "read_noise": low["read_noise"]}
    judge = LongExposureJudge.from_transmission(full["transmission"][ref_idx], theta[ref_idx],
                                                open_beam_counts=full["open_beam_counts"])  # fmt: skip
    t = low["transmission"][keep]
    volume = enhance_scan(t, theta[keep], **kw).volume
    raw = judge.score(volume)["psnr_db"]
    clean = judge.score(P.reference_volume(cfg, phys, theta[keep])[0])["psnr_db"]
    # what auto estimates without the truth: a second noise from the short frames' photon statistics
    est = noise_bound(judge, volume, t, theta[keep], low["open_beam_counts"], read_noise=low["read_noise"],
                      seed=seed)  # fmt: skip
    return {"angles": cfg.angles, "raw": raw, "clean": clean, "ceiling": judge.noise["ceiling_psnr_db"],
            "share": 1 - 10 ** (-(clean - raw) / 10), "bound": clean - raw, "est_share": est["share"],
            "est_bound": est["most_gain_db"]}  # fmt: skip


def main() -> int:
    cases = {**CASES, **EXTRA}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    print("| case | judge: raw (dB) | noise-free, same views | ceiling | noise share | most gain (dB) "
          "| estimated share | estimated most gain (dB) | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        t0 = time.perf_counter()
        r = share_of(cases[name], args.size, args.seed)
        print(f"| {name} ({r['angles']} angles) | {r['raw']:.2f} | {r['clean']:.2f} | {r['ceiling']:.1f} | "
              f"{r['share']:.2f} | {r['bound']:+.2f} | {r['est_share']:.2f} | "
              f"{'(saturated)' if r['est_bound'] is None else format(r['est_bound'], '+.2f')} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
