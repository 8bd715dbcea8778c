"""``auto`` under its time budget, end to end: how much of Noise2Inverse's training the budget lets it
make beside the other candidates, what it chooses, and how long the whole scan takes.

Run: ``.venv/bin/python benchmarks/bench_auto_budget.py [--size 128] [--cases real-like]
[--budgets 150 400] [--seed 0] [--json FILE]``.

Per case (one ``lowdose-tomo evaluate`` protocol at 1/10 dose, a whole scan of ``size`` rows) and per
budget (``auto_budget_s``): ``enhance_scan(method="auto")`` with the default candidates, its
Noise2Inverse steps made of those planned, the candidates' seconds, the whole run's seconds, the
winner, its whole scan's seconds as estimated before choosing (``whole_scan_s``) and as taken, the
candidates passed over for time (:func:`bluesky_lowdose.pipeline.choice.too_slow`), and the winner
against the noise-free reconstruction of what the detector records (PSNR / SSIM inside the object,
the central ``size / 8`` slices). About 4-5 minutes a run at 128 on 2 cores; nothing else should run
meanwhile.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cases", nargs="+", default=["real-like"], choices=list(CASES))
    ap.add_argument("--budgets", nargs="+", type=float, default=None, help="default: AUTO_BUDGET_S")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append each run's numbers to this file")
    args = ap.parse_args()

    from bluesky_lowdose.pipeline import auto as A
    from bluesky_lowdose.pipeline import enhance_scan

    budgets = [A.AUTO_BUDGET_S] if args.budgets is None else args.budgets
    print(f"machine: {machine()}\n")
    print(
        "| case | budget s | n2i steps (of planned) | candidates s | whole s | winner | its whole scan: "
        "estimated / took s | passed over for time | vs the truth |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        case = protocol_scan(name, args.size, seed=args.seed)
        for budget in budgets:
            t0 = time.perf_counter()
            res = enhance_scan(
                case["frames"],
                case["theta"],
                method="auto",
                auto_budget_s=budget,
                **case["scan"]["pairs"],
                **case["scan"]["counts"],
                keep_projections=False,
            )
            whole = time.perf_counter() - t0
            rec = res.provenance["auto"]
            steps = rec["candidates"].get("n2i", {}).get("training_steps") or {}
            psnr, ssim = case["score"](res.volume)
            timed = rec.get("whole_scan") or {}
            estimated = (rec["candidates"].get(rec["winner"]) or {}).get("whole_scan_s")
            append_json(
                args.json,
                {
                    **case["record"],
                    "budget_s": budget,
                    "n2i_steps": steps,
                    "candidates_s": rec["seconds"],
                    "whole_s": round(whole, 1),
                    "winner": res.method,
                    "psnr": round(psnr, 2),
                    "ssim": round(ssim, 4),
                    "side_by_side": rec.get("side_by_side"),
                    "judged_by": "recorrupted scans" if rec.get("noise_free") else "long exposures",
                    "whole_scan": {**timed, "estimated_s": estimated},
                    "candidates": {
                        m: {k: e.get(k) for k in ("status", "seconds", "whole_scan_s", "too_slow")}
                        for m, e in rec["candidates"].items()
                    },
                },
            )
            made = f"{steps.get('made')} of {steps.get('planned')}" if steps else "-"
            print(
                f"| {name} | {budget:g} | {made} | {rec['seconds']:.1f} | {whole:.0f} | {res.method} | "
                f"{estimated} / {timed.get('seconds')} | {', '.join(timed.get('passed_over', [])) or '-'} | "
                f"{psnr:.2f} / {ssim:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
