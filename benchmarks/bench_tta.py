"""The projection CNN with and without averaging its 8 flips/rotations (``inference_tta``, shipped
since 2026-12-05), on the realistic protocols: what it gives and what it costs.

The projection networks (``paper``, ``hybrid``, ``auto``'s paper candidate) are trained on every
flip/rotation by 90° of their patches. Since 2026-12-05 :meth:`bluesky_lowdose.model.Enhancer.enhance`
averages the network's outputs for the 8 views of each frame (each undone on its output) for models
trained that way. This benchmark runs ``lowdose-tomo evaluate --mode poisson`` at 1/10 dose (the one
pipeline, ``benchmarks/bench_options.py``'s run) twice per case: with ``Enhancer.tta`` set to False
in this process, and as shipped. BM3D on projections is run once, as the baseline the target names.

Run: ``.venv/bin/python benchmarks/bench_tta.py --size 128 --cases under-blur real-like``
(~4 min on 2 cores at 128³).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_options import run
from bench_protocols import CASES


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cases", nargs="+", default=["under-blur", "real-like"], choices=list(CASES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from bluesky_lowdose.model import Enhancer

    shipped = Enhancer.tta
    print(f"machine: {machine()}\n")
    print("| case | method | TTA | PSNR (dB) | SSIM | judge gain held out (dB) | eq. dose (PSNR) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        for tta in (False, True):
            Enhancer.tta = shipped if tta else property(lambda self: False)  # type: ignore[method-assign]
            # "none" in both runs: the judge's held-out views are chosen with it
            methods = ["none", "paper"] if tta else ["none", "bm3d", "paper"]
            row = run(SimpleNamespace(case=case, methods=methods, n2i=[], n2i_steps=None, label=f"tta-{tta}",
                                      size=args.size, seed=args.seed, ladder=True))  # fmt: skip
            for m in methods[1:] if tta else methods:
                s, g = row["scores"][m], row["judge_held_out"].get(m, {}).get("gain_psnr_db")
                label = ("on" if tta else "off") if m == "paper" else ""
                gain = "-" if g is None else f"{g:+.2f}"
                dose = (row["equivalent_dose"].get(m) or {}).get("psnr", {}).get("dose")
                eq = "-" if dose is None else f"{dose:.2f}"
                print(f"| {case} | {m} | {label} | {s['psnr']:.2f} | {s['ssim']:.3f} | {gain} | {eq} | "
                      f"{row['seconds'][m]:.1f} |", flush=True)  # fmt: skip
    Enhancer.tta = shipped  # type: ignore[method-assign]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
