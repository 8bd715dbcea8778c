"""What a trained Noise2Inverse denoiser is applied to: the whole scan's reconstruction, or each
subset's complement (the paper's "X:1"), and blends of the two.

Run: ``.venv/bin/python benchmarks/bench_n2i_inference.py [--size 128] [--cases standard under-blur
textured-3000 real-like] [--seed 0] [--json FILE]``.

Per case (one ``lowdose-tomo evaluate`` protocol at 1/10 dose, a whole scan of ``size`` rows): the scan
goes through the pipeline's own Noise2Inverse path (``ScanPipeline``: correction, the low-count bias of
``-log``, the angle subsets), one denoiser is trained with the default options, then applied with
:func:`bluesky_lowdose.model.n2i.denoise_splits` both ways (``inference="subsets"`` and ``"full"``) and
their blends are scored. PSNR / SSIM inside the object against the noise-free reconstruction of what the
detector records, the central ``size / 8`` slices. About 3 minutes a case at 128 on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from _protocol import append_json, protocol_scan
from bench_protocols import CASES

#: Weights of the whole scan's prediction in the blends scored.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append each case's numbers to this file")
    args = ap.parse_args()

    import numpy as np

    from bluesky_lowdose.model.n2i import denoise_splits
    from bluesky_lowdose.pipeline.scan import ScanPipeline

    print(f"machine: {machine()}\n")
    print("| case | raw | " + " | ".join(f"whole scan {w:g}" for w in WEIGHTS) + " | training s |")
    print("|---|---|" + "---|" * (len(WEIGHTS) + 1))
    for name in args.cases:
        case = protocol_scan(name, args.size, seed=args.seed)
        frames, theta = case["frames"], case["theta"]
        pipe = ScanPipeline(
            frames.shape[1:],
            "n2i",
            **case["scan"]["counts"],
            keep_projections=False,
            judge=False,
            seed=args.seed,
        )
        for i in range(0, len(frames), 16):
            pipe.add(i, theta[i : i + 16], frames[i : i + 16])
        parts, _, raw = pipe._subset_volumes()
        parts = [np.asarray(p) for p in parts]
        t0 = time.perf_counter()
        denoiser = pipe._fit_denoiser(parts, {"seed": args.seed, **pipe.n2i_options})
        trained = time.perf_counter() - t0
        each = denoise_splits(denoiser, parts, mask=True, inference="subsets")
        whole = denoise_splits(denoiser, parts, mask=True, inference="full")
        blends = {str(w): case["score"]((1 - w) * each + w * whole) for w in WEIGHTS}
        raw_score = case["score"](np.asarray(raw))
        append_json(
            args.json,
            {
                **case["record"],
                "raw": raw_score,
                "training_s": round(trained, 1),
                "whole_scan_weight": blends,
            },
        )
        cells = [f"{p:.2f} / {q:.3f}" for p, q in [raw_score, *blends.values()]]
        print(f"| {name} | " + " | ".join(cells) + f" | {trained:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
