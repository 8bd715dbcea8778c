"""Evaluation harness: tiny end-to-end runs through the pipeline (both modes), the report, bad configs."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from bluesky_lowdose.evaluation import EvaluationConfig, run_evaluation, summary, to_json, to_markdown
from bluesky_lowdose.evaluation.__main__ import main
from bluesky_lowdose.evaluation.config import DEFAULT_METHODS
from bluesky_lowdose.evaluation.targets import target_check
from bluesky_lowdose.pipeline import AUTO_WITH_PAIRS

# 32^3, 31 angles, 2 epochs, 50 Noise2Inverse steps: plumbing, not quality (BM3D costs ~1 s per call
# whatever the frame size, so the BM3D methods are exercised by the report tests on a fake result)
TINY = ["--size", "32", "--angles", "31", "--noise", "30", "--epochs", "2", "--n2i-steps", "50"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main([*TINY, "--methods", "none", "hybrid", "--json", "--no-progress", "--out", str(out)])
    return status, buf.getvalue(), out


@pytest.mark.slow
def test_gaussian_runs_every_method_through_the_pipeline(cli_run):
    status, stdout, out = cli_run
    assert status == 0
    data = json.loads(stdout.strip().splitlines()[-1])
    assert data["default_method"] == AUTO_WITH_PAIRS and data["size"] == 32
    level = data["levels"]["0.3"]
    assert set(level) == {"none", "hybrid"}
    assert all(-1 <= s["ssim"] <= 1 and s["psnr"] is not None for s in level.values())
    # no BM3D baseline was run: the target cannot be checked
    assert data["targets"]["0.3"] is None
    full = json.loads((out / "evaluation-gaussian-32.json").read_text())
    entry = full["levels"][0]
    # provenance comes from the pipeline: the pair-trained projection CNN, then Noise2Inverse
    assert entry["provenance"]["hybrid"]["projection_step"]["kind"] == "cnn"
    assert entry["provenance"]["hybrid"]["slice_step"]["kind"] == "noise2inverse"
    assert entry["provenance"]["none"]["projection_step"] is None
    angles = entry["provenance"]["hybrid"]["pairs"]["angles_deg"]
    assert angles == full["train_angles_deg"] and len(angles) == 3 and angles[0] == 0.0 and angles[-1] == 90.0
    # slab: 4 scored rows (32 // 8) and 8 rows of margin each side
    assert full["scored_slices"] == [14, 18] and full["slab_rows"] == [6, 26]
    assert full["projection_training"]["epochs"] == 2 and full["n2i_options"]["steps"] == 50
    assert full["command"].startswith("lowdose-tomo evaluate") and "uname" in full["machine"]
    assert len(full["source_sha256"]["start"]) == 64


def test_report_files_written(cli_run):
    _, _, out = cli_run
    md = (out / "evaluation-gaussian-32.md").read_text()
    hybrid = "hybrid (default)" if AUTO_WITH_PAIRS == "hybrid" else "hybrid"
    assert f"| level | none | {hybrid} | paper noisy | paper enhanced |" in md
    assert "inside the object" in md and "cores" in md and "n/a" in md
    assert (out / "gaussian-32-bars.png").stat().st_size > 1000
    assert (out / "gaussian-32-slices-0.3.png").stat().st_size > 1000


@pytest.mark.slow
def test_poisson_mode_photon_statistics_and_full_dose():
    cfg = EvaluationConfig(mode="poisson", size=32, angles=31, dose_ratios=(10.0,), dose_ladder=(3.0,),
                           methods=("none", "n2i"), n2i_steps=50, slices=4, margin=4, seed=1,
                           training_seeds=2)  # fmt: skip
    res = run_evaluation(cfg)
    entry = res["levels"][0]
    scores = entry["scores"]
    assert set(scores) == {"none", "n2i", "full-dose"}
    assert all(math.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1 for s in scores.values())
    # a tenth of the dose is noisier than the full dose, and plain FBP improves with dose
    assert scores["full-dose"]["ssim"] > scores["none"]["ssim"]
    ladder = res["dose_ladder"]
    assert (
        list(ladder) == ["1", "3", "10"] and ladder["1"]["psnr"] > ladder["3"]["psnr"] > ladder["10"]["psnr"]
    )
    # flat field: long flats scaled by the exposure ratio; photon counts of the short exposure
    assert entry["scan"]["flat_field"]["exposure_ratio"] == pytest.approx(0.1)
    photons = entry["scan"]["photons"]["median_open_beam_photons"]
    assert 10 < photons < 60  # ~300 photons/s at the brightest pixel, 0.1 s
    # n2i (no projection step) got the photon statistics: the -log bias is corrected
    bias = entry["provenance"]["n2i"]["log"]["bias_correction"]
    assert 10 < bias["median_open_beam_photons"] < 60  # (median over the slab's rows)
    assert entry["provenance"]["none"]["log"]["bias_correction"] is None
    # "none" at the level's dose is on the ladder: its equivalent dose is the level's
    eq = entry["equivalent_dose"]["none"]["psnr"]
    assert eq["dose"] == pytest.approx(0.1) and eq["reduction"] == pytest.approx(1.0)
    assert res["scored_slices"] == [14, 18] and res["slab_rows"] == [10, 22]
    # judged as auto judges: both methods run again without the frames on the long exposures' views
    # (31 angles over 180°: the pairs at 0°, 42° (nearest 45°), 90° and the mirror of 0°, 180°)
    assert entry["judged_views"]["left_out_frames"] == [0, 7, 15, 30]
    assert set(entry["judge"]) == set(entry["judge_in_view"]) == {"none", "n2i"}
    assert entry["judge"]["none"]["psnr_db"] != entry["judge_in_view"]["none"]["psnr_db"]
    assert entry["judge_agreement"]["picked"] in ("none", "n2i")
    # the learned method trained twice on the same data: the first is the one scored above
    spread = entry["seed_spread"]
    assert set(spread) == {"n2i"} and len(spread["n2i"]["psnr"]) == 2
    assert spread["n2i"]["psnr"][0] == scores["n2i"]["psnr"] != spread["n2i"]["psnr"][1]
    assert "dose_ladder" in res and "equivalent_dose" in summary(res)


def _fake_result(mode: str = "gaussian") -> dict:
    base = {"none": (20.0, 0.3), "paper": (28.0, 0.8), "n2i": (29.0, 0.82), "hybrid": (31.0, 0.9),
            "bm3d": (29.5, 0.84), "bm3d-slices": (29.8, 0.83)}  # fmt: skip
    scores = {m: {"psnr": p, "ssim": s} for m, (p, s) in base.items()}
    sep = {m: {"0-1": 1.0, "1-2": 2.0} for m in scores}
    prov = {
        "bm3d": {"projection_step": {"kind": "bm3d", "model": {"parameter": "sigma", "value": 0.05}}},
        "bm3d-slices": {"slice_step": {"kind": "bm3d", "sigma": 0.01, "factor": 0.7}},
    }
    first = {"scores": scores, "separation": sep, "seconds": dict.fromkeys(scores, 1.0), "provenance": prov}
    second = {**first, "scores": {**scores, "hybrid": {"psnr": float("inf"), "ssim": 0.86}}}
    if mode == "gaussian":
        levels = [
            {"level": 0.05, **first, "paper_ssim": {"noisy": 0.39, "enhanced": 0.88}},
            {"level": 0.07, **second},
        ]
    else:
        full = {"psnr": 30.0, "ssim": 0.85}
        eq = {"ssim": {"dose": 1.0, "bound": "at least", "reduction": 10.0},
              "psnr": {"dose": 0.5, "bound": None, "reduction": 5.0}}  # fmt: skip
        extra = {"separation": {**sep, "full-dose": sep["none"]}, "equivalent_dose": {"hybrid": eq}}
        levels = [{"dose_ratio": 10.0, **first, "scores": {**scores, "full-dose": full}, **extra}]
    out = {
        "config": {"mode": mode, "size": 16, "angles": 10, "seed": 0, "margin": 8},
        "default_method": "hybrid",
        "scored_slices": [6, 8],
        "slab_rows": [0, 16],
        "reconstruction": {"backend": "fbp", "filter": "parzen"},
        "train_angles_deg": [0.0, 45.0, 90.0],
        "projection_training": {"model": "unet", "epochs": 25, "patience": 6},
        "n2i_options": {"steps": 1200},
        "levels": levels,
        "seconds": {"total": 1.0},
    }
    if mode == "poisson":
        out["dose_ladder"] = {"1": full, "2": {"psnr": 27.0, "ssim": 0.7}, "10": scores["none"]}
    return out


def test_summary_and_markdown_have_every_method_and_the_target():
    res = _fake_result()
    s = summary(res)
    assert set(s["levels"]["0.05"]) == set(DEFAULT_METHODS)
    first = s["targets"]["0.05"]
    assert first["best_baseline"] == {"ssim": "bm3d", "psnr": "bm3d-slices"}
    assert first["margin"]["ssim"] == pytest.approx(0.06) and first["margin"]["psnr"] == pytest.approx(1.2)
    assert first["met"] is True
    # 0.86 - 0.84 = 0.02 SSIM < 0.05: missed, although PSNR is infinite
    assert s["targets"]["0.07"]["met"] is False
    assert s["levels"]["0.07"]["hybrid"]["psnr"] is None  # inf is not JSON
    assert s["targets"]["0.07"]["margin"]["psnr"] is None
    line = to_json(res)
    assert "\n" not in line and json.loads(line)["mode"] == "gaussian"
    md = to_markdown(res, command="lowdose-tomo evaluate --size 16")
    head = "| level | none | paper | n2i | hybrid (default) | bm3d | bm3d-slices | paper noisy |"
    assert head + " paper enhanced |" in md
    assert "**met**" in md and "**missed**" in md and "+0.060" in md and "+1.20" in md
    assert "0.88" in md and "**0.900**" in md and "`lowdose-tomo evaluate --size 16`" in md
    assert "bm3d sigma 0.05" in md and "bm3d-slices sigma 0.01" in md
    assert "changed during the run" not in md
    res["source_sha256"] = {"start": "a" * 64, "end": "b" * 64}
    assert "the code changed during the run" in to_markdown(res)


def test_poisson_markdown_reports_full_dose_and_dose_reached():
    res = _fake_result("poisson")
    md = to_markdown(res)
    assert "| level | none | full-dose | paper | n2i | hybrid (default) | bm3d | bm3d-slices |" in md
    assert "full dose reached (>= 10x)" in md and "0.5 (5x)" in md
    # Poisson target: beat the best BM3D on both metrics (0.90 > 0.84, 31 > 29.8 dB)
    assert summary(res)["targets"]["10"]["met"] is True
    worse = {**res["levels"][0]["scores"], "hybrid": {"psnr": 29.0, "ssim": 0.95}}
    assert target_check(worse, "poisson")["met"] is False


def test_the_spread_over_training_seeds_is_in_the_table_and_the_bars(tmp_path):
    from bluesky_lowdose.evaluation.report import _bars

    res = _fake_result("poisson")
    res["levels"][0]["seed_spread"] = {"n2i": {"seeds": [10, 7929, 15848], "psnr": [29.0, 28.0, 30.0],
                                               "ssim": [0.82, 0.80, 0.84]}}  # fmt: skip
    md = to_markdown(res)
    assert "### Spread over training seeds" in md
    assert "| 1/10 dose | n2i | 3 | 0.820 ± 0.020 (0.800–0.840) | 29.00 ± 1.00 (28.00–30.00) |" in md
    _bars(res, tmp_path / "bars.png")  # error bars (min-max) on n2i's bars
    assert (tmp_path / "bars.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "xray"}, "mode"),
        ({"size": 8}, "size"),
        ({"noise_levels": (0.0,)}, "noise"),
        ({"mode": "poisson", "dose_ratios": (0.5,)}, "dose"),
        ({"methods": ("paper", "wiener")}, "unknown methods"),
        ({"methods": ()}, "method"),
        ({"train_angles": ()}, "training angle"),
        ({"epochs": 0}, "epochs"),
        ({"n2i_steps": 0}, "n2i steps"),
        ({"slices": 500}, "slices"),
        ({"judge_views": "all"}, "judge_views"),
        ({"training_seeds": 0}, "training_seeds"),
        ({"reference": "phantom"}, "reference"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvaluationConfig(**kwargs).validate()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--size", "8"], "size"),
        (["--methods", "paper", "bogus"], "unknown methods"),
        (["--n2i-steps", "0"], "n2i steps"),
        (["--epochs", "-1"], "epochs"),
    ],
)
def test_cli_rejects_bad_parameters_before_running(argv, match, capsys):
    assert main([*argv, "--json"]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_scored_rows_slab_and_overrides():
    cfg = EvaluationConfig(size=128)
    assert cfg.scored_rows() == slice(56, 72) and cfg.slab_rows() == slice(48, 80)
    assert cfg.projection_training() == {} and cfg.n2i_options() == {}
    small = EvaluationConfig(size=32, epochs=3, n2i_steps=7)
    assert small.slab_rows() == slice(6, 26)
    # a slab of 20 rows is thinner than the default 32-pixel patch
    assert small.projection_training() == {"epochs": 3, "patch_size": 16} and small.n2i_options() == {
        "steps": 7
    }
    assert EvaluationConfig(size=32, slices=0).slab_rows() == slice(0, 32)
    picked = EvaluationConfig(methods=("auto", AUTO_WITH_PAIRS, "none")).method_list()
    assert picked == [AUTO_WITH_PAIRS, "none"]
    assert np.isclose(EvaluationConfig().noise_levels[0], 0.05)


@pytest.mark.slow
def test_dask_scheduler_runs_the_same_evaluation(cli_run, tmp_path):
    """``--dask-scheduler local``: every method's reconstruction slabs and learned inference run
    as Dask tasks; the scores are those of the in-process run (the plain method to float32
    rounding; the learned one trains on volumes that differ by that rounding)."""
    _, stdout, _ = cli_run
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        args = ["--methods", "none", "hybrid", "--json", "--no-progress", "--out", str(tmp_path)]
        status = main([*TINY, *args, "--dask-scheduler", "local"])
    assert status == 0
    here = json.loads(stdout.strip().splitlines()[-1])["levels"]["0.3"]
    there = json.loads(buf.getvalue().strip().splitlines()[-1])["levels"]["0.3"]
    assert abs(there["none"]["psnr"] - here["none"]["psnr"]) < 1e-3
    assert abs(there["hybrid"]["psnr"] - here["hybrid"]["psnr"]) < 0.3
    assert abs(there["hybrid"]["ssim"] - here["hybrid"]["ssim"]) < 0.02
    full = json.loads((tmp_path / "evaluation-gaussian-32.json").read_text())
    # per method: slab tasks (2 slabs of 20 rows), hybrid also 4 projection blocks and 2 denoising slabs
    assert full["dask"]["tasks"] >= 2 + 2 + 4 + 2 and full["config"]["dask_scheduler"] == "local"


def test_every_method_and_the_full_dose_have_their_own_colour():
    from bluesky_lowdose.evaluation.report import method_color
    from bluesky_lowdose.pipeline import METHODS

    colours = [method_color(m) for m in [*METHODS, "full-dose"]]
    assert len(set(colours)) == len(colours)
    assert method_color("n2i") == method_color("n2i")  # the same in every figure


def test_the_reference_of_a_blurring_detector_is_what_it_records_noise_free():
    def none_score(reference):
        cfg = EvaluationConfig(mode="poisson", size=32, angles=31, dose_ladder=(), methods=("none",),
                               psf_sigma=1.0, slices=4, margin=4, reference=reference)  # fmt: skip
        res = run_evaluation(cfg)
        return res["reference"], res["levels"][0]["scores"]

    (detector, rec), (sample, exact) = none_score("detector"), none_score("sample")
    assert "as the detector records them" in detector and "exact line integrals" in sample
    # the full-dose scan is blurred as the detector's reference is: it scores higher against it
    assert rec["full-dose"]["psnr"] > exact["full-dose"]["psnr"] + 1.0
    assert rec["none"]["psnr"] != exact["none"]["psnr"]


def test_training_seeds_vary_the_training_even_when_the_options_fix_a_seed():
    cfg = EvaluationConfig(mode="poisson", size=32, angles=31, dose_ladder=(), methods=("none", "n2i"),
                           n2i_steps=20, slices=4, margin=4, training_seeds=2, judge_views="in-view",
                           extra={"n2i_options": {"seed": 5}})  # fmt: skip
    spread = run_evaluation(cfg)["levels"][0]["seed_spread"]["n2i"]
    assert spread["psnr"][0] != spread["psnr"][1]


def test_a_blend_judged_at_one_level_only_is_reported_and_the_pick_is_autos(tmp_path):
    """Blends exist where both parts are not below raw, so levels differ: every level's names are
    reported ("-" where a level lacks one), and the judge's pick is what ``auto`` chose (its tie
    rule), not the plain largest gain."""
    from bluesky_lowdose.evaluation.protocol import judge_agreement
    from bluesky_lowdose.evaluation.report import methods

    res = _fake_result()
    first, second = res["levels"]
    first["scores"] = {**first["scores"], "paper+n2i": {"psnr": 31.5, "ssim": 0.91}}
    first["separation"] = {**first["separation"], "paper+n2i": {"0-1": 1.0, "1-2": 2.0}}
    assert "paper+n2i" in methods(res) and "paper+n2i" not in second["scores"]
    md = to_markdown(res)
    assert "paper+n2i" in md and "| - |" in md  # the level without it
    to_markdown({**res, "levels": [second, first]})  # also when the first level lacks it
    judge = {m: {"psnr_db": 20.0 + g, "raw_psnr_db": 20.0, "ssim": 0.9, "raw_ssim": 0.8}
             for m, g in (("none", 0.0), ("n2i", 6.39), ("paper+n2i", 6.43))}  # fmt: skip
    truth = {"none": (13.8, 0.36), "n2i": (22.6, 0.71), "paper+n2i": (23.2, 0.71)}
    entry = {"judge": judge, "scores": {m: {"psnr": p, "ssim": q} for m, (p, q) in truth.items()}}
    assert judge_agreement(entry)["picked"] == "paper+n2i"  # no auto record: the largest gain
    agree = judge_agreement({**entry, "auto_winner": "n2i"})  # auto broke the 0.04 dB tie by SSIM
    assert agree["picked"] == "n2i" and agree["best"] == "paper+n2i"
    assert agree["regret_psnr_db"] == pytest.approx(0.6)


def test_where_auto_judged_by_recorrupted_scans_their_estimates_are_reported_and_ranked():
    from bluesky_lowdose.evaluation.protocol import judge_agreement

    res = _fake_result("poisson")
    level = res["levels"][0]
    names = ("none", "n2i", "bm3d")
    gains = dict(zip(names, (0.0, 2.1, -0.1), strict=True))  # the long exposures'
    level["judge"] = {m: {"psnr_db": 30.0 + g, "raw_psnr_db": 30.0, "ssim": 0.9, "raw_ssim": 0.9,
                          "ceiling_psnr_db": 60.0} for m, g in gains.items()}  # fmt: skip
    truth = {"none": 45.4, "n2i": 42.0, "bm3d": 45.3}
    level["scores"] = {**level["scores"], **{m: {"psnr": p, "ssim": 0.99} for m, p in truth.items()}}
    level["auto_winner"] = "none"
    correlation = {"along_rows": 0.7, "along_columns": 0.69}
    level["noise_free_judge"] = {"noise": {"neighbour_correlation": correlation}, "noise_share": 0.003,
                                 "gain_psnr_db": {"none": 0.0, "n2i": -1.3, "bm3d": -0.1},
                                 "at_scan_noise_db": {"n2i": [-2.2, 0.3], "bm3d": [-1.0, None]}}  # fmt: skip
    level["judge_agreement"] = agree = judge_agreement(level)
    assert agree["spearman"] == pytest.approx(-0.5)  # the long exposures rank n2i first
    assert agree["noise_free_spearman"] == pytest.approx(1.0) and agree["regret_psnr_db"] == 0.0
    md = to_markdown(res)
    assert "judged by recorrupted scans" in md
    assert "n2i -1.30 (-3.40; -2.20 ± 0.30)" in md and "bm3d -0.10 (-0.10; -1.00)" in md
    assert "| 0.003 | 0.70 |" in md and "| 1.00 | none |" in md
    del level["noise_free_judge"]
    assert "noise_free_spearman" not in judge_agreement(level)
    assert "judged by recorrupted scans" not in to_markdown(res)
