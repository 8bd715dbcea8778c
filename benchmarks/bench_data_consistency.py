"""Data-consistent refinement, one step preconditioned by the FBP: what it gains against the truth.

A step ``x + mu * FBP(y - P x)`` towards the measured data is ``(1 - mu) x + mu * x_raw`` wherever
the FBP inverts the projector (``FBP(P x) = x`` for the band-limited volumes the pipeline makes), so
it is a blend of a method's volume with the raw reconstruction. For every method of every case that
``bench_judge_weighting.py --cache DIR`` recorded (the volumes on every frame and the truth), this
prints the truth's PSNR change (dB, inside the object, scored rows) for each ``mu``, the mean over all
methods and over each case's truly best method. Rescoring only: seconds.

Run: ``.venv/bin/python benchmarks/bench_data_consistency.py --cache /tmp/judge-cache``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

METHODS = ("paper", "n2i", "bm3d", "bm3d-slices")
MUS = (0.05, 0.1, 0.2, 0.5)


def case_gains(path: Path) -> tuple[dict[str, list[float]], str]:
    """Per method, the truth's PSNR change for each ``mu``; and the truly best method."""
    from bluesky_lowdose.metrics import object_mask, psnr

    with np.load(path) as z:
        d = dict(z)
    a, b = (int(v) for v in d["scored"])
    truth = d["truth"][a:b]
    mask = object_mask(truth)
    raw = d["full_none"][a:b]
    gains, scores = {}, {}
    for m in METHODS:
        if f"full_{m}" not in d:
            continue
        x = d[f"full_{m}"][a:b]
        scores[m] = psnr(x, truth, mask=mask)
        gains[m] = [psnr((1 - mu) * x + mu * raw, truth, mask=mask) - scores[m] for mu in MUS]
    return gains, max(scores, key=scores.__getitem__)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="the folder bench_judge_weighting.py filled")
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    print("| case | best | " + " | ".join(f"{m} (mu {', '.join(map(str, MUS))})" for m in METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    every, best = [], []
    for path in sorted(args.cache.glob("*.npz")):
        gains, top = case_gains(path)
        cells = [" / ".join(f"{g:+.2f}" for g in gains[m]) if m in gains else "-" for m in METHODS]
        print(f"| {path.stem} | {top} | " + " | ".join(cells) + " |")
        every += list(gains.values())
        best.append(gains[top])
    for label, rows in (("every method", every), ("each case's truly best", best)):
        r = np.asarray(rows)
        means = ", ".join(f"mu {mu}: {v:+.2f}" for mu, v in zip(MUS, r.mean(0), strict=True))
        better = ", ".join(str(int(n)) for n in (r > 0).sum(0))
        print(f"\n{label} ({len(r)}): mean {means}; better in {better}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
