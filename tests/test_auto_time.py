"""``auto``'s budget covers choosing and the winner's whole scan: each candidate's whole scan is timed
from its run on the slab, and one that would not fit is passed over where another fits."""

from __future__ import annotations

import pytest

from bluesky_lowdose.pipeline.auto import REFIT
from bluesky_lowdose.pipeline.choice import (
    WHOLE_SCAN_SHARE,
    eligible,
    noise_free_eligible,
    pick_in_time,
    pick_noise_free,
    pick_winner,
    too_slow,
    whole_scan_allowance,
)
from bluesky_lowdose.pipeline.costs import whole_scan_seconds
from bluesky_lowdose.pipeline.result import ScanResult
from bluesky_lowdose.pipeline.slices import TUNING_SLICES

#: A 128-row scan of 180 frames; the candidates ran on a 48-row slab without 4 frames on the long
#: exposures' views.
GEOMETRY = {"frames": 180, "rows": 128, "slab_frames": 176, "slab_rows": 48}
PIXELS = 180 * 128 / (176 * 48)


def _result(timings: dict, slice_step: dict | None = None, projection_step: dict | None = None) -> ScanResult:
    return ScanResult(None, None, None, "x", {"slice_step": slice_step, "projection_step": projection_step},
                      timings=timings)  # fmt: skip


def test_the_whole_scan_is_timed_from_the_steps_of_the_slab_run() -> None:
    # BM3D on slices: its time per call on the slab (its tuning's calls counted, none on the whole scan,
    # which reuses the factor), for every slice, on every core (it ran on one beside a training)
    tuned = {str(f): 1.0 for f in (0.7, 1.4, 2.0, 2.8, 5.6)}
    step = {"kind": "bm3d", "tuning_losses": tuned, "denoised_slices": [5, 43]}
    r = _result({"reconstruction_s": 1.0, "slice_step_s": 68.0}, slice_step=step)
    per_call = 68.0 / (5 * TUNING_SLICES + 38)
    assert whole_scan_seconds(r, **GEOMETRY, bm3d_workers=(1, 2)) == pytest.approx(
        PIXELS + per_call * 128 / 2
    )
    assert whole_scan_seconds(r, **GEOMETRY) == pytest.approx(PIXELS + per_call * 128)
    # Noise2Inverse: its inference, by the slices (a training in the slice step is left out: the model is
    # reused); fine-tuned on every frame first: REFIT's share of its planned steps at its time per step
    model = {"wall_time_s": 90.0, "hyperparameters": {"steps": 3000, "planned_steps": 4400}}
    r = _result(
        {"slice_step_s": 92.0}, slice_step={"kind": "noise2inverse", "reused_model": False, "model": model}
    )
    assert whole_scan_seconds(r, **GEOMETRY) == pytest.approx(2.0 * 128 / 48)
    refit = REFIT["fraction"] * 4400 * 90.0 / 3000
    assert whole_scan_seconds(r, **GEOMETRY, refit=REFIT["fraction"]) == pytest.approx(2.0 * 128 / 48 + refit)
    r = _result(
        {"slice_step_s": 2.0}, slice_step={"kind": "noise2inverse", "reused_model": True, "model": model}
    )
    assert whole_scan_seconds(r, **GEOMETRY) == pytest.approx(2.0 * 128 / 48)
    # BM3D on projections: by frames x rows and the cores; tuned again on the scan's pairs: that time too
    r = _result({"projection_step_s": 10.0, "projection_training_s": 3.0}, projection_step={"kind": "bm3d"})
    assert whole_scan_seconds(r, **GEOMETRY, bm3d_workers=(1, 2)) == pytest.approx(10.0 * PIXELS / 2)
    assert whole_scan_seconds(r, **GEOMETRY, bm3d_workers=(1, 2), tuned_again=True) == pytest.approx(
        (10.0 * PIXELS + 3.0 * 128 / 48) / 2
    )
    # a CNN's inference: by frames x rows, whatever BM3D's cores
    r = _result({"projection_step_s": 10.0}, projection_step={"kind": "cnn"})
    assert whole_scan_seconds(r, **GEOMETRY, bm3d_workers=(1, 2)) == pytest.approx(10.0 * PIXELS)


def test_auto_passes_over_a_candidate_whose_whole_scan_would_not_fit_where_another_fits() -> None:
    def run(psnr: float, ssim: float, whole: float) -> dict:
        return {"status": "run", "gain_psnr_db": psnr, "gain_ssim": ssim, "whole_scan_s": whole}

    # what is left of (1 + share) x the budget, and at least share x the budget
    assert whole_scan_allowance(400.0, 130.0) == pytest.approx((1 + WHOLE_SCAN_SHARE) * 400.0 - 130.0)
    allowed = whole_scan_allowance(150.0, 163.5)
    assert allowed == pytest.approx(WHOLE_SCAN_SHARE * 150.0)
    # make demo at a 150 s budget on a slow run: BM3D on slices judged 0.12 dB ahead, its whole scan 67 s
    cands = {"none": run(0, 0, 0.5), "n2i": run(1.32, 0.017, 5.3), "bm3d-slices": run(1.44, 0.014, 67.0)}
    assert pick_winner(cands)[0] == "bm3d-slices"
    slow = too_slow(eligible(cands), allowed)
    assert list(slow) == ["bm3d-slices"] and "67 s" in slow["bm3d-slices"]
    cands["bm3d-slices"]["too_slow"] = slow["bm3d-slices"]
    assert pick_winner(cands)[0] == "n2i"
    # no candidate but none would fit: the judge's pick stands (the time is spent whatever is taken)
    cands = {"none": run(0, 0, 0.5), "n2i": run(1.32, 0.017, 45.0), "bm3d-slices": run(1.44, 0.014, 67.0)}
    assert too_slow(eligible(cands), allowed) == {}
    # a candidate below raw that would fit does not make the others too slow
    cands = {"none": run(0, 0, 0.5), "paper": run(2.0, -0.01, 1.0), "bm3d-slices": run(1.44, 0.014, 67.0)}
    assert too_slow(eligible(cands), allowed) == {}
    # where recorrupted scans judge: among the candidates surely above raw
    sure = {"gain_psnr_db": 2.0, "at_scan_noise_db": 1.0, "at_scan_noise_se_db": 0.1}
    cands = {"none": run(0, 0, 0.5), "n2i": {**run(0, 0, 20.0), "noise_free": {**sure, "gain_psnr_db": 1.9}},
             "bm3d-slices": {**run(0, 0, 67.0), "noise_free": sure}}  # fmt: skip
    slow = too_slow(noise_free_eligible(cands), allowed)
    assert list(slow) == ["bm3d-slices"]
    cands["bm3d-slices"]["too_slow"] = slow["bm3d-slices"]
    assert pick_noise_free({"candidates": cands})[0] == "n2i"


def test_auto_passes_over_only_the_judges_picks_whose_whole_scan_would_not_fit() -> None:
    def run(psnr: float, ssim: float, whole: float) -> dict:
        return {"status": "run", "gain_psnr_db": psnr, "gain_ssim": ssim, "whole_scan_s": whole}

    # the judge's pick fits: nothing is passed over, though another candidate would not fit
    cands = {"none": run(0, 0, 0.5), "n2i": run(1.5, 0.02, 5.0), "bm3d-slices": run(1.0, 0.01, 67.0)}
    record = {"candidates": cands, "whole_scan": {}}
    slow = too_slow(eligible(record["candidates"]), 30.0)
    assert list(slow) == ["bm3d-slices"]
    assert pick_in_time(record, slow)[0] == "n2i"
    assert record["whole_scan"]["passed_over"] == [] and "too_slow" not in record["candidates"]["bm3d-slices"]
    # it does not: the next pick that fits, and why says what was given up
    cands = {"none": run(0, 0, 0.5), "n2i": run(1.32, 0.017, 5.3), "bm3d": run(1.5, 0.01, 40.0),
             "bm3d-slices": run(2.0, 0.02, 67.0)}  # fmt: skip
    record = {"candidates": cands, "whole_scan": {}}
    winner, why = pick_in_time(record, too_slow(eligible(record["candidates"]), 30.0))
    assert winner == "n2i" and record["whole_scan"]["passed_over"] == ["bm3d", "bm3d-slices"]
    assert (
        "passed over for time: bm3d-slices (judged +2.00 dB over raw)" in why and "bm3d (judged +1.50" in why
    )
    # where recorrupted scans judge, by their estimates
    sure = {"at_scan_noise_db": 1.0, "at_scan_noise_se_db": 0.1}
    cands = {"none": run(0, 0, 0.5), "n2i": {**run(0, 0, 20.0), "noise_free": {**sure, "gain_psnr_db": 1.9}},
             "bm3d-slices": {**run(0, 0, 67.0), "noise_free": {**sure, "gain_psnr_db": 2.0}}}  # fmt: skip
    record = {"noise_free": {"raw_psnr_db": 30.0}, "candidates": cands}
    winner, why = pick_in_time(record, too_slow(noise_free_eligible(record["candidates"]), 30.0))
    assert winner == "n2i" and "bm3d-slices (judged +2.00 dB" in why
