"""How ``auto`` should break near-ties: the judge's PSNR gain, its SSIM gain, or PSNR with ties to SSIM.

Rescoring only (no training): reads the volumes ``bench_judge_weighting.py --cache DIR`` kept (every
method on every frame for the truth, without the long exposures' views for the judge, and the
leave-one-out folds of the methods that learn from the pairs), judges each method as ``auto`` does
(leave-one-out where it learns from the pairs, the slab's central rows), and prints for each rule
how often it picks the truly best method (PSNR inside the object against the evaluation's
reference), how often within 0.5 dB, the mean and the worst regret. The rule ``auto`` uses is
:func:`bluesky_lowdose.pipeline.choice.pick_winner` (ties within ``TIE_DB``), after racing
(:func:`bluesky_lowdose.pipeline.choice.race`: a candidate that learns from the pairs, more than
``RACE_DB`` behind the best so far on the last pair with the run that did not see it, is stopped
there, in ``auto``'s order); the racing table says which candidates stop, and how far each one's
lead on that pair was from its pooled lead.

Run: ``.venv/bin/python benchmarks/bench_judge_ties.py --cache /tmp/judge-cache`` (after the
``bench_judge_weighting.py`` runs that fill it; about a minute).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

METHODS = ("none", "paper", "n2i", "bm3d", "bm3d-slices")


def judged(path: Path) -> dict:
    """Truth and judged gains (PSNR, SSIM) over raw of every method of one cached case."""
    from bluesky_lowdose.metrics import object_mask, psnr
    from bluesky_lowdose.pipeline import LongExposureJudge

    with np.load(path) as z:
        d = dict(z)
    theta, ref_idx = d["theta"], d["ref_idx"]
    n = len(ref_idx)
    judge = LongExposureJudge.from_transmission(d["long_refs"], theta[ref_idx], open_beam_counts=d["long_n0"])
    a, b = (int(v) for v in d["scored"])
    judge.mask[:, :a] = False  # the slab's central rows, as auto judges
    judge.mask[:, b:] = False
    every = list(range(n))
    raw = judge.score_projections(judge.project(d["keep_none"], every), every)
    truth = d["truth"][a:b]
    mask = object_mask(truth)
    base = psnr(d["full_none"][a:b], truth, mask=mask)
    out: dict = {"case": path.stem, "truth": {}, "gain_psnr_db": {}, "gain_ssim": {}, "per_pair": {},
                 "pairs": []}  # fmt: skip
    rawp = judge.project(d["keep_none"], every)
    out["projected"], out["judge"], full = {}, judge, {}
    for m in METHODS:
        if f"keep_{m}" not in d:
            continue
        if f"fold0_{m}" in d:  # leave-one-out: pair k judged by the run without it
            vols = [d[f"fold{k}_{m}"] if k < n - 1 else d[f"keep_{m}"] for k in every]
            p = np.concatenate([judge.project(v, [k]) for k, v in zip(every, vols, strict=True)])
            out["pairs"].append(m)
        else:
            p = judge.project(d[f"keep_{m}"], every)
        s = judge.score_projections(p, every)
        out["per_pair"][m] = [
            judge.score_projections(p[[k]], [k])["psnr_db"]
            - judge.score_projections(rawp[[k]], [k])["psnr_db"]
            for k in every
        ]
        out["gain_psnr_db"][m] = s["psnr_db"] - raw["psnr_db"]
        out["gain_ssim"][m] = s["ssim"] - raw["ssim"]
        out["truth"][m] = psnr(d[f"full_{m}"][a:b], truth, mask=mask) - base
        out["projected"][m] = (p, rawp)
        full[m] = d[f"full_{m}"][a:b]
    # every blend's truth (the mean of two methods' volumes): auto may choose one (pipeline.auto.blends)
    from bluesky_lowdose.pipeline import blend_name

    done = [m for m in METHODS if m in full and m != "none"]
    out["blend_truth"] = {blend_name(x, y): psnr(0.5 * full[x] + 0.5 * full[y], truth, mask=mask) - base
                          for i, x in enumerate(done) for y in done[i + 1 :]}  # fmt: skip
    return out


def raced(r: dict) -> dict:
    """``auto``'s record of one case's candidates, raced in ``auto``'s order (a stopped one: not run)."""
    from bluesky_lowdose.pipeline.auto import AUTO_CANDIDATES
    from bluesky_lowdose.pipeline.choice import eligible, race

    out: dict = {}
    for m in (m for m in AUTO_CANDIDATES if m in r["gain_psnr_db"]):
        last = len(r["per_pair"][m]) - 1
        ok = eligible(out)
        leader = max(ok, key=lambda k: r["per_pair"][k][last], default=None)
        pooled = max(ok, key=lambda k: r["gain_psnr_db"][k], default=None)
        if m in r["pairs"] and race(out, r["per_pair"][m][last], last) is not None:
            out[m] = {"status": "stopped", "leader": leader, "pooled_leader": pooled}
            continue
        out[m] = {"status": "run", "gain_psnr_db": r["gain_psnr_db"][m], "gain_ssim": r["gain_ssim"][m],
                  "gain_psnr_db_per_pair": r["per_pair"][m], "leader": leader,
                  "pooled_leader": pooled}  # fmt: skip
    return out


def racing_table(cases: list[dict]) -> None:
    """Per case and pair-trained candidate: its lead on the last pair and pooled, and whether it stops."""
    from bluesky_lowdose.pipeline.choice import RACE_DB

    print(f"\nRacing ({RACE_DB:g} dB): each pair-trained candidate's lead over the best candidate before it "
          "(not below raw), on the last pair (its first run) and pooled leave-one-out")  # fmt: skip
    print("| case | candidate | lead on the last pair (dB) | lead pooled (dB) | stopped | truly best |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        record = raced(c)
        best = max(c["truth"], key=c["truth"].get)
        for m in c["pairs"]:
            lead, pooled = record[m]["leader"], record[m]["pooled_leader"]
            first = c["per_pair"][m][-1] - c["per_pair"][lead][-1]
            stopped = "yes" if record[m]["status"] == "stopped" else "no"
            print(f"| {c['case']} | {m} | {first:+.2f} (vs {lead}) | "
                  f"{c['gain_psnr_db'][m] - c['gain_psnr_db'][pooled]:+.2f} (vs {pooled}) | {stopped} | "
                  f"{'yes' if m == best else 'no'} |")  # fmt: skip


def rules() -> dict[str, Callable[[dict], str]]:
    """Each rule: the method it picks from one case's judged gains."""
    from bluesky_lowdose.pipeline.auto import BLEND_WEIGHT, blends
    from bluesky_lowdose.pipeline.choice import RACE_DB, TIE_DB, pick_winner

    def with_blends(r: dict) -> str:
        record = raced(r)
        return pick_winner({**record, **blends(record, r["projected"], r["judge"])})[0]

    def eligible(r: dict) -> list[str]:
        return [m for m in r["gain_psnr_db"] if r["gain_psnr_db"][m] >= 0 and r["gain_ssim"][m] >= 0]

    def ssim_within(delta: float) -> Callable[[dict], str]:
        def pick(r: dict) -> str:
            ok = eligible(r)
            top = max(r["gain_psnr_db"][m] for m in ok)
            return max(
                (m for m in ok if r["gain_psnr_db"][m] >= top - delta), key=lambda m: r["gain_ssim"][m]
            )

        return pick

    def candidates(r: dict) -> dict:
        return {m: {"status": "run", "gain_psnr_db": r["gain_psnr_db"][m], "gain_ssim": r["gain_ssim"][m]}
                for m in r["gain_psnr_db"]}  # fmt: skip

    out: dict[str, Callable[[dict], str]] = {
        "largest PSNR gain": ssim_within(0.0),
        f"auto (pick_winner, ties within {TIE_DB:g} dB)": lambda r: pick_winner(candidates(r))[0],
        f"auto with racing ({RACE_DB:g} dB)": lambda r: pick_winner(raced(r))[0],
        f"auto with racing and blends ({BLEND_WEIGHT:g}/{1 - BLEND_WEIGHT:g}), as shipped": with_blends,
    }
    for delta in (0.25, 0.5, 1.0):
        out[f"within {delta:g} dB, the largest SSIM gain"] = ssim_within(delta)
    out["the largest SSIM gain"] = ssim_within(float("inf"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="bench_judge_weighting.py's --cache")
    args = ap.parse_args()
    cases = [judged(p) for p in sorted(args.cache.glob("*.npz"))]
    if not cases:
        print(f"no cached cases in {args.cache}")
        return 1
    print(f"machine: {machine()}\n{len(cases)} cases: {', '.join(c['case'] for c in cases)}\n")
    print("Regret: the truly best single method's PSNR (against the truth) minus the pick's; a blend can "
          "score above the best single method (negative regret).\n")  # fmt: skip
    print("| rule | at or above the truly best method | within 0.5 dB | mean regret (dB) | worst (dB) | "
          "mean gain over raw (dB) | picks |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, rule in rules().items():
        regret, gains, picks = [], [], []
        for c in cases:
            pick, t = rule(c), c["truth"]
            gains.append({**t, **c["blend_truth"]}[pick])
            regret.append(max(t.values()) - gains[-1])
            picks.append(pick)
        n = len(cases)
        best = sum(r <= 0 for r in regret)
        close = sum(r <= 0.5 for r in regret)
        print(f"| {name} | {best}/{n} | {close}/{n} | {np.mean(regret):.2f} | {max(regret):.2f} | "
              f"{np.mean(gains):.2f} | {', '.join(picks)} |")  # fmt: skip
    print(
        "\nThe truly best blend (the mean of two methods' volumes) against the truly best method, per case:"
    )
    for c in cases:
        top, blend = max(c["truth"], key=c["truth"].get), max(c["blend_truth"], key=c["blend_truth"].get)
        print(f"- {c['case']}: {top} {c['truth'][top]:+.2f} dB, {blend} {c['blend_truth'][blend]:+.2f} dB")
    racing_table(cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
