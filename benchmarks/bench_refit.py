"""``auto``'s Noise2Inverse winner on the whole scan: reused as its candidate trained it, or fine-tuned
on every frame first, at sparse angles.

Run: ``.venv/bin/python benchmarks/bench_refit.py [--size 64] [--cases under-blur real-like]
[--angles-per-width 0.6] [--steps 800] [--long-exposures-judge]``.

``auto``'s candidates run without the frames on the long exposures' views (so that no reconstruction
saw the views it is judged on), and the winner's trained model then denoises the whole scan, every
view. A Noise2Inverse model learns its angle subsets' streaks, which another set of angles does not
share. Per case (one ``lowdose-tomo evaluate`` protocol, 1/10 dose, a whole scan of ``size`` rows,
its central ``size / 8`` slices scored): the raw reconstruction, Noise2Inverse run directly on the
scan, and ``auto`` (candidates none and n2i) with its winner reused as it was and fine-tuned at three
settings
(:data:`bluesky_lowdose.pipeline.auto.REFIT`'s fraction of the steps and of the learning rate).
PSNR/SSIM inside the object against the noise-free reconstruction of what the detector records.
``--long-exposures-judge`` keeps the long exposures judging where ``auto`` would use recorrupted scans
(real-like counts). About 6 minutes per case at 64 on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from _protocol import append_json, protocol_scan
from bench_protocols import CASES

#: (label, fraction of the steps, fraction of the learning rate); None: reused as it was.
SETTINGS: tuple[tuple[str, float | None, float | None], ...] = (
    ("reused", None, None),
    ("fine-tuned 0.2 / 0.1", 0.2, 0.1),
    ("fine-tuned 0.3 / 0.3", 0.3, 0.3),
    ("fine-tuned 1 / 1", 1.0, 1.0),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cases", nargs="+", default=["under-blur", "real-like"], choices=list(CASES))
    ap.add_argument("--angles-per-width", type=float, default=None, help="default: the case's")
    ap.add_argument("--steps", type=int, default=800, help="Noise2Inverse steps (batches of 16)")
    ap.add_argument("--long-exposures-judge", action="store_true")
    ap.add_argument("--json", default=None, help="append each case's numbers to this file")
    args = ap.parse_args()

    import numpy as np

    from bluesky_lowdose.pipeline import auto as A
    from bluesky_lowdose.pipeline import choice, enhance_scan

    if args.long_exposures_judge:  # where auto decides which judge, and where its warning reads it
        A.NOISE_SHARE_FLOOR = choice.NOISE_SHARE_FLOOR = 0.0
    print(f"machine: {machine()}\n")
    print("| case | angles | raw | n2i direct | " + " | ".join(s[0] for s in SETTINGS) + " |")
    print("|---|---|---|---|" + "---|" * len(SETTINGS))
    for name in args.cases:
        case = protocol_scan(name, args.size, angles_per_width=args.angles_per_width)
        cfg, scan, theta, frames = case["cfg"], case["scan"], case["theta"], case["frames"]
        kw = dict(**scan["pairs"], **scan["counts"], keep_projections=False,
                  n2i_options={"steps": args.steps, "batch_size": 16})  # fmt: skip
        row: dict = {"case": name, "size": args.size, "angles": cfg.angles, "steps": args.steps}

        def scored(volume: np.ndarray, score: Any = case["score"]) -> str:
            psnr, ssim = score(volume)
            return f"{psnr:.2f} / {ssim:.3f}"

        row["raw"] = scored(enhance_scan(frames, theta, method="none", **kw).volume)
        row["n2i direct"] = scored(enhance_scan(frames, theta, method="n2i", **kw).volume)
        for label, fraction, rate in SETTINGS:
            A.REFIT_BELOW_ANGLES_PER_WIDTH = 0.0 if fraction is None else 1e9
            if fraction is not None:
                A.REFIT = {"fraction": fraction, "learning_rate_fraction": rate}
            t0 = time.perf_counter()
            res = enhance_scan(frames, theta, method="auto", auto_candidates=("none", "n2i"), **kw)
            judged = "recorrupted" if res.provenance["auto"].get("noise_free") else "long exposures"
            row[label] = f"{res.method}: {scored(res.volume)} ({time.perf_counter() - t0:.0f} s; {judged})"
        shown = [row[k] for k in ["raw", "n2i direct", *(s[0] for s in SETTINGS)]]
        print(f"| {name} | {cfg.angles} | " + " | ".join(shown) + " |", flush=True)
        append_json(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
