"""Evaluation harness: a tiny end-to-end run through the CLI, the Poisson mode and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bluesky_lowdose.evaluation import EvaluationConfig, run_evaluation, summary, to_json, to_markdown
from bluesky_lowdose.evaluation.__main__ import main

TINY = [
    "--size",
    "32",
    "--angles",
    "61",
    "--noise",
    "30",
    "--epochs",
    "30",
    "--train-stride",
    "2",
    "--slices",
    "0",
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(
            [*TINY, "--baselines", "median", "--train-angles", "0,45,90", "--json", "--out", str(out)]
        )
    return status, buf.getvalue(), out


@pytest.mark.slow
def test_cnn_beats_noisy_end_to_end(cli_run):
    status, stdout, _ = cli_run
    assert status == 0
    last = stdout.strip().splitlines()[-1]
    data = json.loads(last)
    level = data["levels"]["0.3"]
    assert set(level) == {"noisy", "cnn-3", "median"}
    assert level["cnn-3"]["ssim"] > level["noisy"]["ssim"]
    assert level["cnn-3"]["psnr"] > level["noisy"]["psnr"]
    assert data["cnn_beats"]["0.3"]["noisy"] is True
    assert data["backend"] in ("fbp", "tomopy") and data["size"] == 32


def test_report_files_written(cli_run):
    _, _, out = cli_run
    md = (out / "evaluation-gaussian.md").read_text()
    assert "| level |" in md and "paper" in md and "nproc" not in md and "cores" in md
    assert (out / "figures" / "evaluation-gaussian-bars.png").stat().st_size > 1000
    assert (out / "figures" / "evaluation-gaussian-slices-0.3.png").stat().st_size > 1000
    full = json.loads((out / "evaluation-gaussian.json").read_text())
    assert full["summary"]["levels"]["0.3"]["noisy"]["ssim"] > 0
    assert "uname" in full["machine"] and full["command"].startswith("lowdose-tomo evaluate")


@pytest.mark.slow
def test_poisson_mode_runs_and_scores_full_dose():
    cfg = EvaluationConfig(
        mode="poisson", size=32, angles=31, dose_ratios=(10.0,), epochs=2, baselines=(), slices=4, seed=1
    )
    res = run_evaluation(cfg)
    scores = res["levels"][0]["scores"]
    assert set(scores) == {"noisy", "cnn-3", "full-dose"}
    assert all(math.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1 for s in scores.values())
    # a tenth of the dose is noisier than the full dose
    assert scores["full-dose"]["ssim"] > scores["noisy"]["ssim"]
    assert res["scored_slices"] == [14, 18]
    assert "matches_full_dose" in summary(res)["cnn_beats"]["10"]


def _fake_result() -> dict:
    scores = {
        "noisy": {"psnr": 20.0, "ssim": 0.3},
        "cnn-3": {"psnr": 30.0, "ssim": 0.9},
        "bm3d": {"psnr": 29.0, "ssim": 0.8},
    }
    sep = {m: {"0-1": 1.0, "1-2": 2.0} for m in scores}
    return {
        "config": {"mode": "gaussian", "size": 16, "angles": 10, "model": "unet", "epochs": 1, "seed": 0},
        "scored_slices": [0, 16],
        "reconstruction": {"backend": "fbp", "filter": "parzen"},
        "train_angles_deg": {"cnn-3": [0.0, 45.0, 90.0]},
        "levels": [
            {
                "level": 0.05,
                "scores": scores,
                "separation": sep,
                "paper_ssim": {"noisy": 0.39, "enhanced": 0.88},
                "baseline_parameters": {"bm3d": 0.05},
            },
            {
                "level": 0.07,
                "scores": {**scores, "noisy": {"psnr": float("inf"), "ssim": 1.0}},
                "separation": sep,
            },
        ],
        "seconds": {"total": 1.0},
    }


def test_summary_and_markdown_of_a_result():
    res = _fake_result()
    s = summary(res)
    assert s["cnn_beats"]["0.05"] == {
        "cnn": "cnn-3",
        "noisy": True,
        "best_baseline": "bm3d",
        "beats_best_baseline": True,
        "beats_paper": True,
    }
    assert s["levels"]["0.07"]["noisy"]["psnr"] is None  # inf is not JSON
    line = to_json(res)
    assert "\n" not in line and json.loads(line)["mode"] == "gaussian"
    md = to_markdown(res, command="lowdose-tomo evaluate --size 16")
    assert "0.88" in md and "**0.900**" in md and "`lowdose-tomo evaluate --size 16`" in md


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "xray"}, "mode"),
        ({"size": 8}, "size"),
        ({"noise_levels": (0.0,)}, "noise"),
        ({"mode": "poisson", "dose_ratios": (0.5,)}, "dose"),
        ({"baselines": ("wiener",)}, "baselines"),
        ({"train_angles": ()}, "training angles"),
        ({"slices": 500}, "slices"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvaluationConfig(**kwargs).validate()


def test_cli_rejects_bad_parameters(capsys):
    assert main(["--size", "8", "--json"]) == 2
    assert "size" in capsys.readouterr().err


def test_scored_rows_and_patch():
    cfg = EvaluationConfig(size=128)
    assert cfg.scored_rows() == slice(56, 72) and cfg.training_patch() == 64
    assert EvaluationConfig(size=32, slices=0).scored_rows() == slice(0, 32)
    assert EvaluationConfig(size=32).training_patch() == 16
    assert np.isclose(EvaluationConfig().noise_levels[0], 0.05)
