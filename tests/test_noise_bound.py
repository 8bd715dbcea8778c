"""The most a denoiser can gain by the long exposures by removing noise, and ``auto``'s warning above it."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_lowdose.evaluation import EvaluationConfig
from bluesky_lowdose.evaluation import protocol as P
from bluesky_lowdose.pipeline import LongExposureJudge, enhance_scan
from bluesky_lowdose.pipeline.angles import same_view_indices
from bluesky_lowdose.pipeline.auto import noise_bound
from bluesky_lowdose.pipeline.choice import NOISE_BOUND_MARGIN_DB, NOISE_SHARE_FLOOR, noise_warning


def _bound(flux: float, phantom: str, angles: int, psf: float) -> tuple[dict, float]:
    """``noise_bound`` of a 1/10-dose scan (48³) judged as ``auto`` judges, and the true share of
    noise in the raw reconstruction's residual (from the noise-free reconstruction on the same views)."""
    cfg = EvaluationConfig(mode="poisson", size=48, angles=angles, dose_ladder=(), methods=("none",),
                           phantom=phantom, flux=flux, psf_sigma=psf, slices=8, margin=4)  # fmt: skip
    scan = P.low_dose_scan(cfg)
    theta, low, pairs = scan["theta"], scan["low"], scan["pairs"]
    keep = np.setdiff1d(np.arange(angles), same_view_indices(theta, pairs["reference_angles"]))
    judge = LongExposureJudge.from_transmission(pairs["long_refs"], pairs["reference_angles"],
                                                open_beam_counts=pairs["long_open_beam_counts"])  # fmt: skip
    frames = low["transmission"][keep]
    raw = enhance_scan(frames, theta[keep], method="none", open_beam_counts=low["open_beam_counts"],
                       read_noise=low["read_noise"]).volume  # fmt: skip
    out = noise_bound(judge, raw, frames, theta[keep], low["open_beam_counts"], read_noise=low["read_noise"])
    clean = judge.score(P.reference_volume(cfg, scan["physics"], theta[keep])[0])["psnr_db"]
    return out, 1 - 10 ** (-(clean - judge.score(raw)["psnr_db"]) / 10)


def test_the_noise_bound_is_small_at_a_real_scans_counts_and_large_at_few_photons() -> None:
    high, true_high = _bound(19000.0, "textured", 29, 1.0)  # a real scan's counts, sparse angles, blur
    low, true_low = _bound(300.0, "spheres", 68, 0.0)  # the photon protocol: ~30 quanta at 1/10 dose
    assert true_high < 0.2 and true_low > 0.6  # the premise, measured with the noise-free volume
    assert high["share"] < 0.2 and abs(high["share"] - true_high) < 0.1
    assert high["most_gain_db"] is not None and high["most_gain_db"] < 1.0
    assert low["share"] > 0.6
    assert low["most_gain_db"] is None or low["most_gain_db"] > 4.0
    assert high["raw_psnr_db"] >= high["doubled_noise_psnr_db"] - 0.05


@pytest.mark.parametrize(
    ("winner", "gain", "bound", "share", "warns"),
    [("n2i", 2.1, 0.06, 0.01, True), ("n2i", 0.5, 0.06, 0.01, False), ("none", 0.0, 0.06, 0.01, False),
     ("n2i", 5.0, None, 0.99, False), ("paper+n2i", 1.0 + NOISE_BOUND_MARGIN_DB, 0.3, 0.03, True),
     ("n2i", 1.45, 0.64, 0.14, False)],  # make demo: the long exposures see its noise; n2i +5.6 dB in truth
)  # fmt: skip
def test_auto_warns_when_its_winner_is_judged_above_what_removing_noise_could_give(
    winner: str, gain: float, bound: float | None, share: float, warns: bool
) -> None:
    assert share < NOISE_SHARE_FLOOR or not warns
    record = {"winner": winner, "candidates": {winner: {"gain_psnr_db": gain}},
              "noise": {"share": share, "most_gain_db": bound}}  # fmt: skip
    message = noise_warning(record)
    assert (message is not None) == warns
    if warns:
        assert winner in message and f"{gain:+.2f} dB" in message
        assert "compare with the raw reconstruction" in message
    unestimated = {"winner": "n2i", "candidates": {"n2i": {"gain_psnr_db": 3.0}}}
    assert noise_warning(unestimated) is None
