"""BM3D with pip ``bm3d`` 4.x's default profile against its conventional mode (shipped since
2026-12-05), on the realistic protocols: the seconds each costs and the quality each gives.

The library's default profile (``nf=32``, ``k=4``, ``gamma=3``) refines its thresholds from the noise PSD
(Mäkinen, Azzari & Foi 2020, for correlated noise). That refinement costs ~0.3 s per call whatever
the image's size, in the compiled library's hard-thresholding loop: 48² images take 0.36 s instead
of 0.03 s, 128² 0.98 s instead of 0.23 s (one thread). ``nf=0`` is the conventional BM3D. This
benchmark measures what the refinement buys: ``bm3d`` (on projections) and ``bm3d-slices``
through ``lowdose-tomo evaluate --mode poisson`` at 1/10 dose (the one pipeline), with the filter of
``bluesky_lowdose.model.baselines`` set to each profile in this process in turn.

Run: ``.venv/bin/python benchmarks/bench_bm3d_modes.py --size 64`` (~10 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_protocols import CASES


def _filter(changes: dict[str, Any]) -> Callable[..., np.ndarray]:
    """The shipped filter with ``changes`` to the library's profile, for both BM3D methods."""
    from bluesky_lowdose.model.baselines import _bm3d

    return lambda frame, sigma, _changes=None: _bm3d(frame, sigma, changes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cases", nargs="+", default=["under-blur", "real-like", "textured-3000"],
                    choices=list(CASES))  # fmt: skip
    ap.add_argument("--methods", nargs="+", default=["bm3d", "bm3d-slices"])
    args = ap.parse_args()

    from bluesky_lowdose.evaluation import EvaluationConfig, run_evaluation
    from bluesky_lowdose.model import baselines

    shipped = baselines._bm3d
    rows = []
    for name in args.cases:
        c = CASES[name]
        cfg = EvaluationConfig(mode="poisson", size=args.size, angles=max(8, round(c["angles"] * args.size)),
                               dose_ratios=(10.0,), dose_ladder=(), methods=("none", *args.methods),
                               phantom=c["phantom"], flux=c["flux"], psf_sigma=c["psf_sigma"])  # fmt: skip
        for mode, filt in (("refined (nf=32)", _filter({})), ("conventional (nf=0)", _filter({"nf": 0}))):
            baselines._bm3d = filt
            try:
                t0 = time.perf_counter()
                entry = run_evaluation(cfg)["levels"][0]
                wall = time.perf_counter() - t0
            finally:
                baselines._bm3d = shipped
            for m in args.methods:
                sc = entry["scores"][m]
                rows.append((name, m, mode, sc["psnr"], sc["ssim"], entry["seconds"].get(m, float("nan"))))
                print(rows[-1], f"(run {wall:.0f} s)", file=sys.stderr, flush=True)
            raw = entry["scores"]["none"]
            rows.append((name, "none", mode, raw["psnr"], raw["ssim"], 0.0))
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/bench_bm3d_modes.py --size {args.size} --cases {' '.join(args.cases)}")
    print()
    print("| case | method | BM3D mode | PSNR (dB) | SSIM | seconds |")
    print("|---|---|---|---|---|---|")
    for case, m, mode, psnr, ssim, sec in rows:
        if m == "none" and "conventional" in mode:
            continue  # the same raw reconstruction
        shown = "raw" if m == "none" else mode
        print(f"| {case} | {m} | {shown} | {psnr:.2f} | {ssim:.3f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
