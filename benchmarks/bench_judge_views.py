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
    from bluesky_lowdose.physics import DetectorModel, TXMPhysics
    from bluesky_lowdose.pipeline import LongExposureJudge, enhance_scan, flat_field, photon_statistics
    from bluesky_lowdose.pipeline.angles import same_view_indices
    from bluesky_lowdose.pipeline.flatfield import FLOOR_PHOTONS
    from bluesky_lowdose.recon import transmission_to_line_integrals

    c, size = CASES[args.case], args.size
    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(c["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"])  # fmt: skip
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    phantom = P._make_phantom(cfg)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = TXMPhysics(phantom, DetectorModel((size, size), flux=cfg.flux, psf_sigma=cfg.psf_sigma),
                      seed=cfg.seed + 2, cache_size=cfg.angles + 8)  # fmt: skip
    ref_idx = P._reference_indices(theta, cfg.train_angles)

    def scan(ratio: float) -> tuple[np.ndarray, np.ndarray, float]:
        """As the evaluation's Poisson scans: long flats scaled, photon statistics."""
        exposure = 1.0 / ratio
        phys.rng = np.random.default_rng([0, P._tag(ratio), 2])
        n = P.N_REFERENCE_FRAMES
        lf = np.stack([phys.frame(0.0, 1.0, sample_offset_mm=10.0) for _ in range(n)])
        ld = np.stack([phys.frame(0.0, 1.0, shutter_open=False) for _ in range(n)])
        d = ld if ratio == 1 else np.stack([phys.frame(0.0, exposure, shutter_open=False) for _ in range(n)])
        frames = np.stack([phys.frame(t, exposure) for t in theta])
        ff = flat_field(None, d, exposure=exposure, long_flats=lf, long_darks=ld, long_exposure=1.0)
        st = photon_statistics(lf, ld, exposure_ratio=exposure)
        return ff.correct(frames)[:, slab], st.open_beam_counts[slab], st.read_noise

    full, full_n0, _ = scan(1.0)
    low, low_n0, read_noise = scan(10.0)
    recorded = (phys.recorded_line_integrals(theta) if args.reference == "detector"
                else phys.mu * phantom.project_many(theta))  # fmt: skip
    truth = P._plain(recorded[:, slab], theta, input="line_integrals")
    scorer = P._Scorer(truth, scored, None)
    kw = {"method": "none", "open_beam_counts": low_n0, "read_noise": read_noise}
    drop = same_view_indices(theta, theta[ref_idx])
    keep = np.setdiff1d(np.arange(theta.size), drop)
    raw = enhance_scan(low, theta, **kw).volume
    unseen = enhance_scan(low[keep], theta[keep], **kw).volume
    floor = np.minimum(FLOOR_PHOTONS / np.maximum(np.asarray(full_n0, np.float32), 1e-3), 0.5)
    judge = LongExposureJudge(transmission_to_line_integrals(full[ref_idx], floor=floor), theta[ref_idx],
                              open_beam_counts=full_n0)  # fmt: skip
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
