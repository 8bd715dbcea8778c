"""Which reference should the long-exposure judge compare with? Methods judged on views left out,
against the apodisation window (what ``pipeline.judge`` uses) and against measured transfers.

Run: ``.venv/bin/python benchmarks/bench_judge_references.py --case real-like`` (~10 min at 128 on
2 cores: every method twice, on every frame for the truth and without the long exposures' views for
the judge). Cases: ``bench_protocols.CASES`` plus ``demo-like`` (the demo's counts: 181 angles,
600 photons at 1/10 dose, no blur). Prints a Markdown table of gains over the raw reconstruction:
the truth (PSNR inside the object against the evaluation's ``R_o``) and the judge's PSNR gain with
each reference, on all judged views and on the last pair only (as pair-trained methods are judged).

References of the long frames' line integrals at the judged angles:

- ``window``: the reconstruction's Parzen window along the row (the package's judge);
- ``white`` / ``self``: the transfer of *the judged volume's* reconstruction (the frames left, views
  left out) followed by a projection, measured per judged angle as a cross-spectrum on random white
  objects, or on the raw reconstruction itself;
- ``white-all`` / ``self-all``: the same with every frame's angles (the truth ``R_o``'s operator).

The transfers raise the judge's floor (a noise-free scan scores 4 dB higher) but are not used: on
the undersampled real-like case they rate every denoiser below the raw reconstruction (measured
2026-12-04, ``docs/evaluation.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from bench_protocols import CASES

CASES = {**CASES, "demo-like": {"angles": 1.414, "psf_sigma": 0.0, "flux": 6000.0, "phantom": "spheres"}}
METHODS = ("none", "n2i", "bm3d-slices", "paper", "bm3d")


def transfer(objects: np.ndarray, scan: np.ndarray, judged: np.ndarray, width: int) -> np.ndarray:
    """Per judged angle, the response of reconstruct-from-``scan``-then-project on ``objects``."""
    from bluesky_lowdose.recon import reconstruct
    from bluesky_lowdose.recon.filters import padded_length
    from bluesky_lowdose.recon.project import forward_project

    length = padded_length(width)
    volume = reconstruct(forward_project(objects, scan, width=width), scan)
    direct = np.fft.rfft(forward_project(objects, judged, width=width), length, axis=-1)
    again = np.fft.rfft(forward_project(volume, judged, width=width), length, axis=-1)
    power = np.maximum((np.abs(direct) ** 2).sum(axis=1), 1e-30)
    response = np.real(again * np.conj(direct)).sum(axis=1) / power
    padded = np.pad(response, ((0, 0), (1, 1)), mode="edge")
    return (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0


def filtered(rows: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Rows filtered by a per-angle response (zero-padded ``rfft`` of ``padded_length``)."""
    from bluesky_lowdose.recon.filters import padded_length

    length = padded_length(rows.shape[-1])
    spec = np.fft.rfft(rows, length, axis=-1) * response[:, None, :]
    return np.fft.irfft(spec, length, axis=-1)[..., : rows.shape[-1]].astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="real-like", choices=list(CASES))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    args = ap.parse_args()

    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.metrics import compare, object_mask
    from bluesky_lowdose.pipeline import LongExposureJudge, enhance_scan
    from bluesky_lowdose.pipeline.angles import same_view_indices
    from bluesky_lowdose.recon import transmission_to_line_integrals
    from bluesky_lowdose.recon.project import forward_project

    c, size = CASES[args.case], args.size
    cfg = EvaluationConfig(mode="poisson", size=size, angles=max(8, round(c["angles"] * size)),
                           dose_ladder=(), methods=("none",), phantom=c["phantom"], flux=c["flux"],
                           psf_sigma=c["psf_sigma"])  # fmt: skip
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    phys = P.poisson_physics(cfg)
    ref_idx = P._reference_indices(theta, cfg.train_angles)
    full, low = P.poisson_scan(cfg, phys, theta, 1.0), P.poisson_scan(cfg, phys, theta, 10.0)
    truth, _ = P.reference_volume(cfg, phys, theta)
    truth_mask = object_mask(truth[scored])
    long_refs = full["transmission"][ref_idx]
    judge = LongExposureJudge.from_transmission(long_refs, theta[ref_idx],
                                                open_beam_counts=full["open_beam_counts"])  # fmt: skip
    keep = np.setdiff1d(np.arange(theta.size), same_view_indices(theta, theta[ref_idx]))
    common = dict(open_beam_counts=low["open_beam_counts"], read_noise=low["read_noise"],
                  long_open_beam_counts=full["open_beam_counts"], n2i_options=cfg.n2i_options(),
                  projection_training=cfg.projection_training(), keep_projections=False, seed=0)  # fmt: skip
    volumes = {}
    for m in dict.fromkeys(["none", *args.methods]):
        t0 = time.perf_counter()
        for label, frames in (("full", np.arange(theta.size)), ("keep", keep)):
            res = enhance_scan(low["transmission"][frames], theta[frames], long_refs=long_refs,
                               short_refs=low["transmission"][ref_idx], reference_angles=theta[ref_idx],
                               method=m, **common)  # fmt: skip
            volumes[m, label] = np.asarray(res.volume)
        print(f"{m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    width, judged = size, theta[ref_idx]
    long_li = transmission_to_line_integrals(long_refs)
    centre = (width - 1) / 2
    yy, xx = np.mgrid[:width, :width]
    white = np.random.default_rng(0).standard_normal((64, width, width)).astype(np.float32)
    white *= (yy - centre) ** 2 + (xx - centre) ** 2 < (0.45 * width) ** 2
    refs = {
        "window": judge.reference,
        "white": filtered(long_li, transfer(white, theta[keep], judged, width)),
        "self": filtered(long_li, transfer(volumes["none", "keep"], theta[keep], judged, width)),
        "white-all": filtered(long_li, transfer(white, theta, judged, width)),
        "self-all": filtered(long_li, transfer(volumes["none", "full"], theta, judged, width)),
    }
    table = {}
    for m in dict.fromkeys(["none", *args.methods]):
        true = compare(volumes[m, "full"][scored], truth[scored], mask=truth_mask)["psnr"]
        p = forward_project(volumes[m, "keep"], judged, width=width)
        every = {k: compare(p, r, mask=judge.mask)["psnr"] for k, r in refs.items()}
        last = {k: compare(p[-1:], r[-1:], mask=judge.mask[-1:])["psnr"] for k, r in refs.items()}
        table[m] = (true, every, last)
    t0, e0, l0 = table["none"]
    print(
        f"machine: {machine()}\n\n### {args.case}: {size}^3, {cfg.angles} angles, 1/10 dose; "
        "gains over raw (dB)\n"
    )
    print("| method | truth | " + " | ".join(refs) + " | last pair: " + " / ".join(refs) + " |")
    print("|---|---|" + "---|" * len(refs) + "---|")
    for m, (true, every, last) in table.items():
        print(f"| {m} | {true - t0:+.2f} | " + " | ".join(f"{every[k] - e0[k]:+.2f}" for k in refs)
              + " | " + " / ".join(f"{last[k] - l0[k]:+.2f}" for k in refs) + " |")  # fmt: skip
    print("\nraw reconstruction's judge PSNR (dB): " + ", ".join(f"{k} {v:.2f}" for k, v in e0.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
