"""Training in bfloat16 against float32: what the learned methods gain in time and lose in quality.

Each case of ``bench_protocols.CASES`` at 1/10 dose (the evaluation's Poisson protocol), each learned
method (``n2i``: Noise2Inverse on the slices, ``paper``: the projection CNN on the pairs) trained once
with ``precision="float32"`` and once with ``precision="bfloat16"`` (:mod:`bluesky_lowdose.model.precision`),
same seed, through the one pipeline (``enhance_scan`` on every frame). Prints the training seconds
(from the model's provenance), the whole method's seconds, and PSNR/SSIM inside the object on the
scored rows against the evaluation's reference (the noise-free reconstruction), plus the raw
reconstruction's. On a processor without native bfloat16 the bfloat16 rows are emulated and slow.

Options of Noise2Inverse can be set for every run (``--n2i steps=4800 --precisions bfloat16
--methods n2i --label steps-4800``: training length at the time bfloat16 saves).

Run: ``.venv/bin/python benchmarks/bench_precision.py --size 128 --cases standard under-blur``
(~7 min per case and seed on 2 cores at 128³; ``--record FILE`` appends JSON lines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_protocols import CASES

METHODS = ("n2i", "paper")
PRECISIONS = ("float32", "bfloat16")


def run_case(
    case: str, size: int, seed: int, methods: list[str], precisions: list[str], n2i: dict, label: str
) -> list[dict]:
    """Every (method, precision) of one case: seconds and scores against the reference."""
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import enhance_scan, score_volume

    c = CASES[case]
    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(c["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"], seed=seed)  # fmt: skip
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)
    ref_idx = np.asarray(P._reference_indices(theta, cfg.train_angles))
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    truth, _ = P.reference_volume(cfg, phys, theta)
    a, b = rows.start - slab.start, rows.stop - slab.start
    common = dict(long_refs=full["transmission"][ref_idx], short_refs=low["transmission"][ref_idx],
                  reference_angles=theta[ref_idx], open_beam_counts=low["open_beam_counts"],
                  read_noise=low["read_noise"], long_open_beam_counts=full["open_beam_counts"],
                  keep_projections=False, judge=False, seed=seed)  # fmt: skip
    out = []
    for m in ["none", *methods]:
        for precision in precisions if m != "none" else ("-",):
            options = {} if m == "none" else {"precision": precision}
            t0 = time.perf_counter()
            res = enhance_scan(low["transmission"], theta, method=m,
                               n2i_options={**cfg.n2i_options(), **n2i, **(options if m == "n2i" else {})},
                               projection_training={**cfg.projection_training(),
                                                    **(options if m == "paper" else {})},
                               **common)  # fmt: skip
            seconds = time.perf_counter() - t0
            score = score_volume(np.asarray(res.volume)[a:b], truth[a:b])
            model = res.models.get("slices" if m == "n2i" else "projection")
            prov = getattr(model, "provenance", {})
            out.append({"case": case, "size": size, "seed": seed, "method": m, "precision": precision,
                        "label": label, "n2i_options": n2i if m == "n2i" else None,
                        "policy": prov.get("hyperparameters", {}).get("precision"),
                        "training_s": prov.get("wall_time_s"), "method_s": round(seconds, 1),
                        "psnr": score["psnr"], "ssim": score["ssim"]})  # fmt: skip
            r = out[-1]
            print(f"| {case} | {m} | {precision} ({r['policy']}) | {r['training_s'] or 0:.1f} | "
                  f"{seconds:.1f} | {r['psnr']:.2f} | {r['ssim']:.3f} |", flush=True)  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cases", nargs="+", default=["standard", "under-blur"], choices=list(CASES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--n2i", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Noise2Inverse options for every run, e.g. steps=4800")  # fmt: skip
    ap.add_argument("--label", default="", help="a name for these runs in the records")
    ap.add_argument("--record", type=Path, help="append the rows as JSON lines to this file")
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    print("| case | method | precision (policy) | training s | method s | PSNR (dB) | SSIM |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        n2i = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.n2i)}
        rows = run_case(case, args.size, args.seed, args.methods, args.precisions, n2i, args.label)
        if args.record:
            with args.record.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
