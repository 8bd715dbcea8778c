"""Does the long-exposure judge rank methods as the truth does? The residual weighted as the volume's
error is (by frequency along the detector row) against the plain residual the judge compares.

Run: ``.venv/bin/python benchmarks/bench_judge_weighting.py --size 64 --cases standard under-blur
textured-3000 real-like --cache /tmp/judge-cache --record judge.jsonl`` (then ``--record judge.jsonl
--figure judge.png`` draws the recorded cases) (at 64^3 ~6-9 min per case on 2 cores, every method
twice: on every frame for the truth, without the long exposures' views for the judge; the volumes are
kept in ``--cache`` so a second run only scores). Prints, per case, each method's gain over the raw
reconstruction: the truth (PSNR inside the object against the evaluation's ``R_o``) and the judge's
gain under each weighting, on every judged pair, on the last pair only, leave-one-out (a method that
learns from the pairs judged on each pair by its volume trained without that pair: one extra run per
pair and such method), and as ``auto`` judges (methods that learn from the pairs on the held-out last
pair, the others on every pair), then which method each weighting picks and what that costs against
the truth.

Why a weighting: a projection sums a slice along the ray, so the volume's noise (high frequencies)
is mostly averaged away in the projection the judge compares, while blur is not (docs/evaluation.md,
"The judge on views no reconstruction saw"). By the Fourier slice theorem a volume's squared error is
the integral over angles of its projections' error spectra weighted by ``|w|`` (the ramp): weighting
the residual at the judged angles by ``|w|`` estimates the volume's error from those angles' slices.
The long frames' own noise adds the same amount to every method's residual (it is not in any
reconstruction on held-out views), so the ranking is kept; ``ramp-debiased`` subtracts its expected
ramp-weighted energy (from the photon statistics) so the gains read as gains.

Weightings of the residual ``P(volume) - window(-log long)`` along each detector row of the object's
shadow (rows that hold the object, the whole row):

- ``plain``: none (the judge's PSNR on the shadow mask, every row of the slab: the package's judge
  before 2026-12-05);
- ``plain, scored rows``: the same on the rows the truth scores only (the slab's margins left out,
  as ``auto`` and the evaluation now judge);
- ``ramp``: ``|w|``;
- ``ramp-debiased``: ``|w|``, minus the long frames' expected noise energy.
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

METHODS = ("none", "paper", "n2i", "bm3d", "bm3d-slices")
WEIGHTINGS = ("plain", "plain, scored rows", "ramp", "ramp-debiased")


def scan_volumes(
    case: str, size: int, methods: list[str], cache: Path | None, seed: int = 0, train_angles: tuple = ()
) -> dict:
    """Every method's volume on every frame (``full``) and without the long views (``keep``), the
    truth, and what the judge needs; read from / written to ``cache``."""
    from bluesky_lowdose.pipeline.judge import holdout_index
    from bluesky_lowdose.pipeline.methods import METHODS as SPECS

    name = (
        f"{case}-{size}"
        + (f"-seed{seed}" if seed else "")
        + (f"-{len(train_angles)}pairs" if train_angles else "")
    )
    path = None if cache is None else cache / f"{name}.npz"
    data: dict = {}
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            data = dict(z)
        n_pairs = len(data["ref_idx"])
        folds = [f"fold{k}_{m}" for m in methods if SPECS[m].pairs for k in range(n_pairs - 1)]
        if all(f"full_{m}" in data for m in methods) and all(f in data for f in folds):
            return data
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import enhance_scan
    from bluesky_lowdose.pipeline.angles import same_view_indices

    c = CASES[case]
    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(c["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"], seed=seed,
                           **({"train_angles": train_angles} if train_angles else {}))  # fmt: skip
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)
    ref_idx = P._reference_indices(theta, cfg.train_angles)
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    truth, _ = P.reference_volume(cfg, phys, theta)
    long_refs = full["transmission"][ref_idx]
    keep = np.setdiff1d(np.arange(theta.size), same_view_indices(theta, theta[ref_idx]))
    common = dict(open_beam_counts=low["open_beam_counts"], read_noise=low["read_noise"],
                  long_open_beam_counts=full["open_beam_counts"], n2i_options=cfg.n2i_options(),
                  projection_training=cfg.projection_training(), keep_projections=False,
                  seed=seed)  # fmt: skip
    data.update({"truth": truth, "scored": np.array([rows.start - slab.start, rows.stop - slab.start]),
                 "theta": theta, "ref_idx": np.asarray(ref_idx), "long_refs": long_refs,
                 "long_n0": np.asarray(full["open_beam_counts"], np.float64)})  # fmt: skip
    n_pairs = len(ref_idx)
    for m in dict.fromkeys(["none", *methods]):
        t0 = time.perf_counter()
        runs = [("full", np.arange(theta.size), n_pairs - 1), ("keep", keep, n_pairs - 1)]
        if SPECS[m].pairs and holdout_index(n_pairs) is not None:  # leave-one-out: pair k held out
            runs += [(f"fold{k}", keep, k) for k in range(n_pairs - 1)]
        for label, frames, held in runs:
            if f"{label}_{m}" in data:
                continue
            order = [i for i in range(n_pairs) if i != held] + [held]  # the pipeline holds out the last
            res = enhance_scan(low["transmission"][frames], theta[frames], long_refs=long_refs[order],
                               short_refs=low["transmission"][np.asarray(ref_idx)[order]],
                               reference_angles=theta[np.asarray(ref_idx)[order]],
                               method=m, **common)  # fmt: skip
            data[f"{label}_{m}"] = np.asarray(res.volume)
        print(f"{case} {m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    return data


def weighted_error(residual: np.ndarray, rows: np.ndarray, weight: np.ndarray) -> float:
    """``sum |R(w)|^2 weight(w)`` over the object's rows of each judged view (``rfft`` of the row)."""
    spec = np.fft.rfft(residual[:, rows].astype(np.float64), weight.size * 2 - 2, axis=-1)
    return float(np.sum(np.abs(spec) ** 2 * weight))


def gains(data: dict, methods: list[str], which: list[int], loo: bool = False) -> dict[str, dict[str, float]]:
    """Each weighting's gain over raw (dB) of every method, judged on the pairs ``which``; with
    ``loo`` a method that learns from the pairs is judged on each pair by its volume trained
    without that pair (leave-one-out), the residuals pooled."""
    from bluesky_lowdose.metrics import psnr
    from bluesky_lowdose.pipeline import LongExposureJudge
    from bluesky_lowdose.recon.filters import apodize, padded_length
    from bluesky_lowdose.recon.project import forward_project

    theta, ref_idx = data["theta"], data["ref_idx"]
    judge = LongExposureJudge.from_transmission(data["long_refs"], theta[ref_idx],
                                                open_beam_counts=data["long_n0"])  # fmt: skip
    ref, mask = judge.reference[which], judge.mask[which]
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    a, b = (int(v) for v in data["scored"])
    central = mask.copy()  # as the evaluation and auto now judge: the slab's margins left out
    central[:, :a] = False
    central[:, b:] = False
    width = ref.shape[-1]
    length = padded_length(width)
    ramp = np.abs(np.fft.rfftfreq(length))
    # the long frames' noise through the window, per judged view and row: its expected ramp energy
    n0 = np.broadcast_to(data["long_n0"], ref.shape[1:])
    li = np.asarray(judge.long_line_integrals, np.float64)[which]
    var = 1.0 / np.maximum(n0[None] * np.exp(-li), 0.5)
    impulse = np.zeros((1, 1, width), np.float32)
    impulse[..., width // 2] = 1.0
    window = np.abs(np.fft.rfft(apodize(impulse, judge.filter)[0, 0].astype(np.float64), length)) ** 2
    # white noise of variance v per pixel: E|N(w)|^2 = sum_u v(u), times the window's |H(w)|^2
    noise = float(np.sum(var[:, rows].sum(axis=-1)[..., None] * window * ramp))
    out: dict[str, dict[str, float]] = {}
    last = len(ref_idx) - 1
    for m in methods:
        if loo and f"fold0_{m}" in data:
            vols = {k: data[f"fold{k}_{m}" if k < last else f"keep_{m}"] for k in which}
            angles = theta[ref_idx]
            p = np.concatenate([forward_project(v, angles[[k]], width=width) for k, v in vols.items()])
        else:
            p = forward_project(data[f"keep_{m}"], theta[ref_idx][which], width=width)
        r = p - ref
        e_ramp = weighted_error(r, rows, ramp)
        out[m] = {"plain": psnr(p, ref, mask=mask), "plain, scored rows": psnr(p, ref, mask=central),
                  "ramp": -10 * np.log10(e_ramp),
                  "ramp-debiased": -10 * np.log10(max(e_ramp - noise, 1e-12 * e_ramp))}  # fmt: skip
    base = out["none"]
    return {m: {k: v - base[k] for k, v in sc.items()} for m, sc in out.items()}


def figure(records: list[dict], out: Path) -> None:
    """Per case, every method's true gain over raw (bars); the method each rule picks is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = {
        "auto": "held-out last pair (auto until 2026-12-05)",
        "leave-one-out": "leave-one-out (auto now)",
    }
    methods = [m for m in METHODS if m != "none" and any(m in r["truth"] for r in records)]
    colours = dict(zip(methods, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, len(rules), figsize=(6 * len(rules), 4), sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, (rule, title) in zip(axes[0], rules.items(), strict=True):
        regret = []
        for i, r in enumerate(records):
            truth, judged = r["truth"], r["judged"][rule]
            pick = max(judged, key=judged.get)
            best = max(truth, key=truth.get)
            regret.append(truth[best] - truth[pick])
            for k, m in enumerate(m for m in methods if m in truth):
                x = i + (k - (len(methods) - 1) / 2) * width
                ax.bar(x, truth[m], width, color=colours[m], edgecolor="black" if m == best else "none")
                if m == pick:
                    ax.plot(x, truth[m] + 0.4, marker="v", color="black", markersize=7)
        ax.set_title(f"{title}\nbest picked in {sum(g < 1e-9 for g in regret)}/{len(regret)}, "
                     f"mean regret {np.mean(regret):.2f} dB", fontsize=9)  # fmt: skip
        ax.set_xticks(range(len(records)))
        labels = [f"{r['case']}\n{r['size']}³ s{r['seed']}" for r in records]
        labels = [
            t + (f" {r['pairs']}p" if r.get("pairs", 3) != 3 else "")
            for t, r in zip(labels, records, strict=True)
        ]
        ax.set_xticklabels(labels, fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("true PSNR gain over raw (dB)")
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[m], label=m) for m in methods]
    fig.legend(handles=handles, fontsize=7, loc="lower right", ncol=len(handles), frameon=False)
    fig.text(0.01, 0.012, "▼ the judge's pick; outlined: the truly best", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seed", type=int, default=0, help="phantom, noise and training seed (as bench_tta)")
    ap.add_argument(
        "--train-angles",
        type=float,
        nargs="+",
        default=(),
        help="the long exposures' angles (default the evaluation's: 0, 45, 90)",
    )
    ap.add_argument("--cache", type=Path, default=None, help="keep the volumes here (npz per case)")
    ap.add_argument(
        "--record",
        type=Path,
        default=None,
        help="append each case's true and judged gains (scored rows) to this JSON-lines file",
    )
    ap.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="with --record: only draw the recorded cases (true gains, the judge's picks) to this PNG",
    )
    args = ap.parse_args()
    if args.figure is not None:
        if args.record is None or not args.record.exists():
            ap.error("--figure draws the cases of an existing --record file")
        figure(
            [json.loads(line) for line in args.record.read_text().splitlines() if line.strip()], args.figure
        )
        print(f"wrote {args.figure}")
        return 0

    from bluesky_lowdose.metrics import object_mask, psnr
    from bluesky_lowdose.pipeline.judge import holdout_index
    from bluesky_lowdose.pipeline.methods import METHODS as SPECS

    methods = list(dict.fromkeys(["none", *args.methods]))
    print(f"machine: {machine()}\n")
    picks: dict[str, list[float]] = {
        f"{w} {j}": [] for w in WEIGHTINGS for j in ("every", "last", "leave-one-out", "auto")
    }
    for case in args.cases:
        data = scan_volumes(case, args.size, methods, args.cache, args.seed, tuple(args.train_angles))
        a, b = (int(v) for v in data["scored"])
        truth = data["truth"][a:b]
        tmask = object_mask(truth)
        true = {m: psnr(data[f"full_{m}"][a:b], truth, mask=tmask) for m in methods}
        true = {m: v - true["none"] for m, v in true.items()}
        n_pairs = len(data["ref_idx"])
        judged = {"every": gains(data, methods, list(range(n_pairs))),
                  "last": gains(data, methods, [n_pairs - 1]),
                  "leave-one-out": gains(data, methods, list(range(n_pairs)), loo=True)}  # fmt: skip
        # as auto judges: a method that learns from the pairs on the held-out one, the others on all
        held = holdout_index(n_pairs)
        judged["auto"] = {m: judged["last" if SPECS[m].pairs and held is not None else "every"][m]
                          for m in methods}  # fmt: skip
        print(f"### {case}: {args.size}^3, {data['theta'].size} angles, 1/10 dose; gains over raw (dB)\n")
        print("| method | truth | " + " | ".join(f"{w} ({j})" for j in judged for w in WEIGHTINGS) + " |")
        print("|---|---|" + "---|" * (len(WEIGHTINGS) * len(judged)))
        for m in methods:
            cells = [f"{judged[j][m][w]:+.2f}" for j in judged for w in WEIGHTINGS]
            print(f"| {m} | {true[m]:+.2f} | " + " | ".join(cells) + " |")
        best = max(true.values())
        line = []
        for j in judged:
            for w in WEIGHTINGS:
                pick = max(methods, key=lambda m, j=j, w=w: judged[j][m][w])
                picks[f"{w} {j}"].append(best - true[pick])
                line.append(f"{w} ({j}): {pick} ({true[pick] - best:+.2f})")
        print("\npicks (regret against the truly best): " + "; ".join(line) + "\n", flush=True)
        if args.record is not None:
            rec = {
                "case": case,
                "size": args.size,
                "seed": args.seed,
                "pairs": n_pairs,
                "truth": true,
                "judged": {j: {m: judged[j][m]["plain, scored rows"] for m in methods} for j in judged},
            }
            with args.record.open("a") as f:
                f.write(json.dumps(rec) + "\n")
    print("| weighting | cases picking the best | within 0.5 dB | mean regret (dB) |\n|---|---|---|---|")
    for k, regrets in picks.items():
        r = np.asarray(regrets)
        best, near = int(np.sum(r < 1e-9)), int(np.sum(r <= 0.5))
        print(f"| {k} | {best}/{r.size} | {near}/{r.size} | {r.mean():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
