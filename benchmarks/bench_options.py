"""Issue 17 §4: the learned default's options side by side on the realistic protocols, and the judge.

One run (``--case``, ``--methods``, ``--n2i KEY=VALUE``...) is one ``lowdose-tomo evaluate --mode
poisson`` at 1/10 dose (:func:`bluesky_lowdose.evaluation.run_evaluation`): every method's true
PSNR/SSIM inside the object, and the long exposures' judgement of it both ways (held out as
``auto`` judges: each method run again without the frames on the long exposures' views; in view:
the result on every frame). It appends one JSON line to ``--jsonl``. Runs of one case with the
same data (``--seed``) can run in separate processes (e.g. BM3D beside the learned methods on a
many-core machine: ``benchmarks/options_device.sh``) and are merged by ``--merge``, which prints
per case the table, what the judge (held out and in view) picks, and the judge's agreement::

    .venv/bin/python benchmarks/bench_options.py --case real-like --methods none n2i --jsonl runs.jsonl
    .venv/bin/python benchmarks/bench_options.py --case real-like --methods none n2i --n2i steps=9600 \\
        --label steps-9600 --jsonl runs.jsonl
    .venv/bin/python benchmarks/bench_options.py --merge runs.jsonl
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


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args: argparse.Namespace) -> dict:
    """One evaluation run, reduced to one JSON-ready line."""
    from bluesky_lowdose.evaluation import EvaluationConfig, run_evaluation

    c = CASES[args.case]
    n2i = dict(kv.split("=", 1) for kv in args.n2i)
    cfg = EvaluationConfig(mode="poisson", size=args.size, angles=max(8, round(c["angles"] * args.size)),
                           dose_ratios=(10.0,), dose_ladder=(1.5, 2.0, 3.0, 5.0) if args.ladder else (),
                           methods=tuple(args.methods), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"], seed=args.seed, n2i_steps=args.n2i_steps,
                           extra={"n2i_options": {k: _value(v) for k, v in n2i.items()}})  # fmt: skip
    t0 = time.perf_counter()
    res = run_evaluation(cfg)
    e = res["levels"][0]

    def gains(judge: dict) -> dict:
        return {m: {"gain_psnr_db": j["psnr_db"] - j["raw_psnr_db"], "gain_ssim": j["ssim"] - j["raw_ssim"],
                    "held_out_pair": j["held_out"]} for m, j in judge.items()}  # fmt: skip

    return {
        "case": args.case, "label": args.label, "size": args.size, "angles": cfg.angles, "seed": args.seed,
        "n2i_options": res["n2i_options"], "scores": e["scores"], "seconds": e["seconds"],
        "judge_held_out": gains(e.get("judge", {})),
        "judge_in_view": gains(e.get("judge_in_view", e.get("judge", {}))),
        "judged_views": e.get("judged_views"), "equivalent_dose": e.get("equivalent_dose"),
        "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
    }  # fmt: skip


def _agreement(scores: dict, gains: dict) -> dict | None:
    judged = [m for m in gains if m in scores]
    if len(judged) < 2:
        return None
    g = np.array([gains[m]["gain_psnr_db"] for m in judged])
    t = np.array([scores[m]["psnr"] for m in judged])
    from bluesky_lowdose.pipeline.choice import pick_winner

    picked, _ = pick_winner({m: {"status": "run", **gains[m]} for m in judged})  # auto's rule
    rg, rt = np.argsort(np.argsort(g)), np.argsort(np.argsort(t))
    sd = float(np.std(rg) * np.std(rt))
    rho = float(np.mean((rg - rg.mean()) * (rt - rt.mean())) / sd) if sd > 0 else None
    best = judged[int(np.argmax(t))]
    return {
        "picked": picked,
        "best": best,
        "regret_db": float(t.max() - scores[picked]["psnr"]),
        "spearman": rho,
    }


def merge(path: str) -> int:
    """Print per case the methods (base runs merged), the variants, and the judge's agreement."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        print(f"no runs in {path}")
        return 1
    print(f"machine: {rows[0]['machine']}\n")
    summary = {"held-out": [], "in-view": []}
    for case in dict.fromkeys(r["case"] for r in rows):
        base = [r for r in rows if r["case"] == case and r["label"] == "base"]
        scores, secs, held, inview, eq = {}, {}, {}, {}, {}
        for r in base:
            scores.update({m: s for m, s in r["scores"].items()})
            secs.update(r["seconds"])
            held.update(r["judge_held_out"])
            inview.update(r["judge_in_view"])
            eq.update(r.get("equivalent_dose") or {})
        c = CASES[case]
        print(f"### {case}: {base[0]['angles'] if base else '?'} angles, psf {c['psf_sigma']:g} px, "
              f"{c['flux']:g} quanta/px, {c['phantom']}, 1/10 dose\n")  # fmt: skip
        print("| method | PSNR (dB) | SSIM | judge gain held out (dB) | judge gain in view (dB) "
              "| eq. dose PSNR | s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for m, s in scores.items():
            h, v = held.get(m, {}).get("gain_psnr_db"), inview.get(m, {}).get("gain_psnr_db")
            d = (eq.get(m) or {}).get("psnr", {}).get("dose")
            print(f"| {m} | {s['psnr']:.2f} | {s['ssim']:.3f} | {'-' if h is None else f'{h:+.2f}'} | "
                  f"{'-' if v is None else f'{v:+.2f}'} | {'-' if d is None else f'{d:.2f}'} | "
                  f"{secs.get(m, 0):.0f} |")  # fmt: skip
        for name, gains in (("held-out", held), ("in-view", inview)):
            a = _agreement(scores, gains)
            if a:
                summary[name].append(a)
                print(f"\njudge {name}: picks **{a['picked']}**, truly best {a['best']}, regret "
                      f"{a['regret_db']:.2f} dB, Spearman {a['spearman']:.2f}")  # fmt: skip
        variants = [r for r in rows if r["case"] == case and r["label"] != "base"]
        if variants:
            print(
                "\n| n2i variant | PSNR (dB) | SSIM | judge gain held out (dB) | s |\n|---|---|---|---|---|"
            )
            ref = scores.get("n2i")
            if ref:
                g = held.get("n2i", {}).get("gain_psnr_db", float("nan"))
                print(f"| default (base run) | {ref['psnr']:.2f} | {ref['ssim']:.3f} | {g:+.2f} | "
                      f"{secs.get('n2i', 0):.0f} |")  # fmt: skip
            for r in variants:
                s = r["scores"].get("n2i")
                if s:
                    g = r["judge_held_out"].get("n2i", {}).get("gain_psnr_db", float("nan"))
                    print(f"| {r['label']} | {s['psnr']:.2f} | {s['ssim']:.3f} | {g:+.2f} | "
                          f"{r['seconds']['n2i']:.0f} |")  # fmt: skip
        print()
    for name, agg in summary.items():
        if agg:
            print(f"judge {name} over {len(agg)} case(s): picks the best in "
                  f"{sum(a['picked'] == a['best'] for a in agg)}, within 0.5 dB in "
                  f"{sum(a['regret_db'] <= 0.5 for a in agg)}, mean Spearman "
                  f"{np.mean([a['spearman'] or 0 for a in agg]):.2f}")  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=list(CASES))
    ap.add_argument("--methods", nargs="+", default=["none", "n2i"])
    ap.add_argument(
        "--n2i",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Noise2Inverse options (steps, base_filters, context, seed, ...)",
    )
    ap.add_argument("--n2i-steps", type=int, default=None)
    ap.add_argument("--label", default="base", help="'base' runs of a case are merged as one table")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="the data (phantom, noise) and every learned step")
    ap.add_argument("--ladder", action="store_true", help="plain scans at 1/1.5..1/5: equivalent doses")
    ap.add_argument("--jsonl", default="options.jsonl")
    ap.add_argument("--merge", metavar="JSONL", help="print the tables of the runs in JSONL, run nothing")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge)
    if not args.case:
        ap.error("--case is needed to run")
    line = json.dumps(run(args))
    with open(args.jsonl, "a") as f:  # one write per run: processes may share the file
        f.write(line + "\n")
    print(line[:300])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
