"""Recorrupted scans: the detector's noise correlation, two scans with independent noise, and the judge
of the noise-free reconstruction they make."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from bluesky_lowdose.pipeline import enhance_scan
from bluesky_lowdose.pipeline.recorrupt import NoiseFreeJudge, noise_kernel, recorrupt

COUNTS = 2000.0  # open-beam quanta per pixel of the short frames
RATIO = 10.0  # the long frames' exposure over the short ones'


def _detected(truth: np.ndarray, counts: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """Transmission as a detector records it: Poisson photons, then a scintillator's blur of them. Per
    pixel the statistics (what photon transfer measures) are those of ``counts`` quanta."""
    photons = counts / (4 * np.pi * blur**2) if blur else counts  # a blur keeps 1/(4 pi s²) of the variance
    quanta = rng.poisson(truth * photons).astype(np.float64)
    if blur:
        quanta = np.stack([gaussian_filter(q, blur, mode="wrap") for q in quanta])
    return quanta / photons


def _object(n: int, rows: int, width: int) -> np.ndarray:
    x = np.linspace(-1, 1, width)
    return np.broadcast_to(np.exp(-2.0 * np.clip(1 - x**2, 0, None)), (n, rows, width)).copy()


@pytest.mark.parametrize("blur", [0.0, 1.0])
def test_the_noise_kernel_measures_the_detectors_correlation_on_the_pairs(blur: float) -> None:
    rng = np.random.default_rng(0)
    truth = _object(4, 48, 96)
    short = _detected(truth, COUNTS, blur, rng)
    long_ = _detected(truth, COUNTS * RATIO, blur, rng)
    kernel, record = noise_kernel(short, long_, COUNTS, 0.0, COUNTS * RATIO)
    assert kernel.shape == (7, 7) and np.isclose((kernel**2).sum(), 1.0, atol=1e-4)
    along = record["neighbour_correlation"]["along_rows"], record["neighbour_correlation"]["along_columns"]
    expected = 0.0 if blur == 0 else np.exp(-1 / (4 * blur**2))  # a Gaussian blur's neighbours
    assert np.allclose(along, expected, atol=0.05)
    assert abs(record["variance_over_predicted"] - 1.0) < 0.1  # the photon statistics predict the noise
    # white noise through the kernel correlates as the detector does
    made = recorrupt(np.ones((64, 48, 96)), np.arange(48), COUNTS, 0.0, kernel, alpha=1.0)[0]
    z = -np.log(made) * np.sqrt(COUNTS)
    assert abs(z.std() - 1.0) < 0.05
    assert abs(np.mean(z[:, :, 1:] * z[:, :, :-1]) - expected) < 0.05


def test_recorrupted_scans_have_independent_noise_and_rows_agree_between_calls() -> None:
    rng = np.random.default_rng(1)
    truth = _object(40, 24, 64)
    scan = _detected(truth, COUNTS, 1.0, rng)
    long_ = _detected(truth[:4], COUNTS * RATIO, 1.0, rng)
    kernel, _ = noise_kernel(scan[:4], long_, COUNTS, 0.0, COUNTS * RATIO)
    first, second = recorrupt(scan, np.arange(24), COUNTS, 0.0, kernel, alpha=0.5)
    e1, e2 = np.log(truth / first), np.log(truth / second)  # each scan's noise on the line integrals
    scale = np.sqrt(np.mean(e1**2) * np.mean(e2**2))
    for shift in (0, 1):  # the pixel and its neighbour along the row: uncorrelated
        assert abs(np.mean(e1[:, :, shift:] * e2[:, :, : e2.shape[2] - shift])) < 0.03 * scale
    assert np.isclose(np.mean(e1**2) / np.mean(np.log(truth / scan) ** 2), 1.25, rtol=0.05)  # 1 + alpha²
    rows = np.r_[4:10, 16:20]  # the same rows asked for among others: the same noise
    part = recorrupt(scan[:, rows], rows, COUNTS, 0.0, kernel, alpha=0.5)[0]
    np.testing.assert_array_equal(part, first[:, rows])


def test_the_noise_free_judge_estimates_the_error_against_the_noise_free_reconstruction() -> None:
    rng = np.random.default_rng(2)
    n, rows, width = 90, 8, 64
    theta = np.linspace(0.0, 180.0, n, endpoint=False)
    yy, xx = np.mgrid[-1 : 1 : width * 1j, -1 : 1 : width * 1j]
    phantom = ((xx**2 + yy**2) < 0.6).astype(np.float32) * 0.02 + ((xx - 0.2) ** 2 + yy**2 < 0.05) * 0.02
    from bluesky_lowdose.recon.project import forward_project

    sino = forward_project(np.broadcast_to(phantom, (rows, width, width)).copy(), theta)  # (n, rows, width)
    truth = np.exp(-sino)
    scan = _detected(truth, COUNTS, 0.0, rng)
    long_ = _detected(truth[:4], COUNTS * RATIO, 0.0, rng)
    kernel, _ = noise_kernel(scan[:4], long_, COUNTS, 0.0, COUNTS * RATIO)

    def plain(t: np.ndarray) -> np.ndarray:
        return enhance_scan(t, theta, method="none", keep_projections=False, judge=False).volume

    raw, clean = plain(scan), plain(truth)
    first, second = recorrupt(scan, np.arange(rows), COUNTS, 0.0, kernel, seed=3)
    noisy = recorrupt(scan, np.arange(rows), COUNTS, 0.0, kernel, seed=4, alpha=1.0)[0]
    judge = NoiseFreeJudge.from_volumes(raw, plain(second), plain(noisy) - raw)
    for volume in (plain(first), gaussian_filter(plain(first), (0, 1.0, 1.0))):  # raw, and smoothed
        true_mse = float(np.mean((volume - clean)[judge.mask] ** 2))
        assert np.isclose(judge.score(volume)["mse"], true_mse, rtol=0.2)
    with pytest.raises(ValueError, match="judged against"):
        judge.score(raw[:4])

    # the least gain at the scan's own noise: the recorrupted scan's raw reconstruction is 1 + alpha²
    # = 1.25 times as noisy as the scan's (-0.97 dB), and a smoothing filter's gain on the scan itself
    # is no less than the bound (its error falls with the noise too)
    def mse(volume: np.ndarray) -> float:
        return float(np.mean((volume - clean)[judge.mask] ** 2))

    raw_totals = judge.slice_totals(plain(first))
    itself = judge.gain_at_scan_noise(raw_totals, raw_totals)
    assert itself["at_scan_noise_db"] == pytest.approx(-10 * np.log10(1.25), abs=0.3)
    assert itself["at_scan_noise_se_db"] > 0  # eight slices: a jackknife over eight blocks
    smoothed = judge.gain_at_scan_noise(judge.slice_totals(gaussian_filter(plain(first), (0, 1.0, 1.0))),
                                        raw_totals)  # fmt: skip
    on_scan = 10 * np.log10(mse(raw) / mse(gaussian_filter(raw, (0, 1.0, 1.0))))
    assert smoothed["at_scan_noise_db"] < on_scan + 2 * smoothed["at_scan_noise_se_db"]
    assert smoothed["at_scan_noise_db"] > on_scan - 1.5


def test_auto_keeps_the_raw_reconstruction_unless_a_candidate_is_surely_above_it_at_the_scans_noise() -> None:
    """A recorrupted estimate is at 1.25 times the scan's noise and carries a standard error: a candidate
    is taken only where its least gain at the scan's own noise is two standard errors above 0."""
    from bluesky_lowdose.pipeline.choice import NOISE_FREE_Z, noise_free_eligible, pick_noise_free

    def entry(gain: float, at_scan: float, se: float | None) -> dict:
        return {"status": "run", "noise_free": {"gain_psnr_db": gain, "at_scan_noise_db": at_scan,
                                                "at_scan_noise_se_db": se}}  # fmt: skip

    unsure = {"none": {"status": "run", "noise_free": {"gain_psnr_db": 0.0}},
              "n2i": entry(0.74, -0.18, 0.42), "bm3d": entry(-1.0, -1.9, 0.5),
              "paper": entry(1.5, 0.5, 0.3)}  # fmt: skip
    record = {"candidates": unsure, "noise": {"share": 0.02}}
    winner, why = pick_noise_free(record)
    assert winner == "none" and not noise_free_eligible(unsure)
    assert "paper" in why and "at least +0.50 ± 0.30 dB at its own" in why and "kept" in why
    sure = {**unsure, "bm3d-slices": entry(2.3, 1.4, 0.34), "n2i": entry(2.9, 2.2, 0.6)}
    assert sorted(noise_free_eligible(sure)) == ["bm3d-slices", "n2i"]
    winner, why = pick_noise_free({**record, "candidates": sure})
    assert winner == "n2i" and "largest of 2" in why  # the largest estimate among those surely above raw
    # the margin is in standard errors: n2i's least gain of +2.2 dB with a larger error is not sure
    barely = {**sure, "n2i": entry(2.9, 2.2, 2.2 / NOISE_FREE_Z + 0.01)}
    assert pick_noise_free({**record, "candidates": barely})[0] == "bm3d-slices"
    # every candidate below raw: the raw reconstruction, as before
    winner, why = pick_noise_free({**record, "candidates": {"none": unsure["none"], "bm3d": unsure["bm3d"]}})
    assert winner == "none" and "no candidate is estimated above" in why


def test_auto_judges_by_recorrupted_scans_where_the_long_exposures_barely_see_the_noise() -> None:
    """At a real scan's counts (19 000 quanta, sparse angles, blur) the long exposures see about 1 % of
    the raw reconstruction's residual as noise: ``auto`` runs its candidates on a recorrupted scan and
    chooses by the estimate of the noise-free reconstruction; the whole scan is then made from the
    frames as they were."""
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import score_volume
    from bluesky_lowdose.pipeline.choice import pick_winner

    angles = 29
    cfg = EvaluationConfig(mode="poisson", size=48, angles=angles, dose_ladder=(), methods=("none",),
                           phantom="textured", flux=19000.0, psf_sigma=1.0, slices=8, margin=4)  # fmt: skip
    scan = P.low_dose_scan(cfg)
    theta, low = scan["theta"], scan["low"]
    truth = P.reference_volume(cfg, scan["physics"], theta)[0]
    counts = {**scan["counts"], "keep_projections": False}
    pairs = {k: scan["pairs"][k] for k in ("long_refs", "reference_angles")}
    methods = ("none", "bm3d-slices", "bm3d")
    long_counts = scan["pairs"]["long_open_beam_counts"]
    result = enhance_scan(low["transmission"], theta, method="auto", auto_candidates=methods,
                          long_open_beam_counts=long_counts, **pairs, **counts)  # fmt: skip
    record = result.provenance["auto"]
    assert record["noise"]["share"] < 0.05 and record["noise_free"]["alpha"] == 0.5
    corr = record["noise_free"]["noise"]["neighbour_correlation"]["along_rows"]
    assert 0.3 < corr < 0.9  # the blur correlates neighbours (photon noise, blurred, plus white read noise)
    assert "recorrupted" in record["why"] and not result.warnings  # chosen by them: no noise warning
    ran = {m: c for m, c in record["candidates"].items() if c.get("status") == "run"}
    assert set(methods) <= set(ran) and all("noise_free" in c for c in ran.values())
    # the estimate ranks as the truth does: run each method on the scan itself, scored inside the object
    true = {m: score_volume(enhance_scan(low["transmission"], theta, method=m, judge=False, **pairs,
                                         **counts).volume, truth)["psnr"] for m in methods}  # fmt: skip
    estimated = {m: ran[m]["noise_free"]["gain_psnr_db"] for m in true}
    assert sorted(true, key=true.get) == sorted(estimated, key=estimated.get)
    assert result.method == max(true, key=true.get)
    # the processed run's metrics carry the estimate (the streaming enhancer's scalars)
    from bluesky_lowdose.callbacks.job import _noise_free_scalars

    scalars = _noise_free_scalars(record)
    assert scalars["noise_free_raw_psnr_db"] == record["noise_free"]["raw_psnr_db"]
    won = ran[result.method]["noise_free"]
    assert scalars["noise_free_gain_db"] == won["gain_psnr_db"]
    assert scalars["noise_free_gain_at_scan_noise_db"] == won.get("at_scan_noise_db", 0.0)
    assert _noise_free_scalars({**record, "noise_free": None}) == {}
    # the long exposures alone would have taken a denoiser here
    assert pick_winner(record["candidates"])[0] != "none"
    plain = enhance_scan(low["transmission"], theta, method="none", judge=False, **counts).volume
    if result.method == "none":  # made from the frames as they were, not the recorrupted ones
        np.testing.assert_allclose(result.volume, plain, atol=1e-6)


def test_pairs_whose_noise_the_photon_statistics_do_not_describe_make_no_recorrupted_scans() -> None:
    """A long exposure that moved against its short partner (drift between exposures) shows the object's
    edges in their difference: the measured noise is far above the prediction, and no estimate is made
    from it (``auto`` then leaves the long exposures to judge, and says why in its record)."""
    from bluesky_lowdose.pipeline.recorrupt import recorrupted_slab

    rng = np.random.default_rng(5)
    truth = np.exp(-np.clip(_object(12, 16, 64) + rng.random((1, 16, 64)), 0, None))  # texture along rows
    scan = _detected(truth, COUNTS, 0.0, rng)
    theta = np.linspace(0.0, 180.0, 12)
    still = _detected(truth[:3], COUNTS * RATIO, 0.0, rng)
    counts = {"open_beam_counts": COUNTS, "read_noise": 0.0, "long_open_beam_counts": COUNTS * RATIO}
    made = recorrupted_slab(scan, slice(0, 16), theta, short=scan[:3], long_=still, **counts)
    assert abs(made.record["noise"]["variance_over_predicted"] - 1.0) < 0.2
    with pytest.raises(ValueError, match="no object"):
        recorrupted_slab(np.ones_like(scan), slice(0, 16), theta, short=scan[:3], long_=still, **counts)
    with pytest.raises(ValueError, match="times what the photon statistics predict"):
        recorrupted_slab(scan, slice(0, 16), theta, short=scan[:3], long_=np.roll(still, 3, axis=2),
                         **counts)  # fmt: skip
