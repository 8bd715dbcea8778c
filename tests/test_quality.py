"""Quality that holds on realistic scans: the textured phantom, detector blur and dead pixels, the
forward projector, the long exposures as the judge, ``auto`` choosing by them, reproducibility."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time

import numpy as np
import pytest

from bluesky_lowdose.metrics import object_mask, psnr
from bluesky_lowdose.physics import DetectorModel, TXMPhysics, make_phantom, make_textured_phantom
from bluesky_lowdose.pipeline import (
    LongExposureJudge,
    enhance_scan,
    fill_dead_pixels,
    flat_field,
    photon_statistics,
)
from bluesky_lowdose.pipeline.auto import CNN_RUN_MIN_S
from bluesky_lowdose.pipeline.choice import TIE_DB, pick_winner, race
from bluesky_lowdose.recon import reconstruct
from bluesky_lowdose.recon.filters import apodize
from bluesky_lowdose.recon.project import forward_project

SIZE = 40
ANGLES = 49
REFS = (0.0, 60.0, 120.0)


# ---------------------------------------------------------------- simulator
def test_an_ellipsoid_with_equal_axes_projects_as_the_sphere(monkeypatch) -> None:
    from bluesky_lowdose.physics import phantom

    monkeypatch.setattr(phantom, "ELLIPSOID_SUBSAMPLES", 1)  # sampled at pixel centres, as spheres are
    base = make_phantom(32, seed=1, n_spheres=1)
    sx, sy, sz, r = base.spheres[0]
    row = np.concatenate([[sx, sy, sz], [r, r, r], np.eye(3).ravel(), [base.sphere_value - base.cube_value]])
    as_ellipsoid = type(base)(32, base.cube_half_width, np.empty((0, 4)), ellipsoids=row[None])
    for angle in (0.0, 33.0, 90.0):
        np.testing.assert_allclose(as_ellipsoid.project(angle), base.project(angle), atol=1e-4)


def test_the_textured_phantom_is_seeded_and_its_projections_match_its_voxels() -> None:
    from bluesky_lowdose.physics import Phantom

    a, b = make_textured_phantom(48, seed=2), make_textured_phantom(48, seed=2)
    assert a.kind == "textured" and len(a.ellipsoids) > 40  # fibres, pores, cracks
    np.testing.assert_array_equal(a.project(17.0), b.project(17.0))
    assert not np.array_equal(a.project(17.0), make_textured_phantom(48, seed=3).project(17.0))
    values = set(np.round(a.ellipsoids[:, 15], 2))
    assert {0.7, -0.3, -0.2} <= values and len(a.blobs) > 100  # fibres, pores, cracks, grains
    vol = a.voxelize()
    assert vol.min() >= 0.0  # pores and cracks never make attenuation negative
    # a continuous texture: most of the cube is neither matrix nor inclusion (the paper's cube is)
    inner = slice(12, 36)
    for phantom, lo, hi in ((a, 0.3, 1.0), (make_phantom(48), 0.0, 0.0)):
        cube = phantom.voxelize()[inner, inner, inner]
        off = ~np.isclose(cube, 0.3) & ~np.isclose(cube, 1.0)
        assert lo <= off.mean() <= hi
    # the ellipsoids and grains alone: exact projections = sums of their voxels
    only = Phantom(
        48, a.cube_half_width, np.empty((0, 4)), cube_value=0.0, ellipsoids=a.ellipsoids, blobs=a.blobs
    )
    voxels = only.voxelize(supersample=4)
    for angle, axis in ((0.0, 1), (90.0, 2)):
        exact = only.project(angle)
        np.testing.assert_allclose(exact.sum(), voxels.sum(axis=axis).sum(), rtol=0.01)
        assert np.abs(exact - voxels.sum(axis=axis)).max() < 0.1 * np.abs(exact).max()


def test_detector_blur_correlates_the_noise_of_neighbouring_pixels() -> None:
    rng = np.random.default_rng(0)
    corr = {}
    for sigma in (0.0, 1.0):
        det = DetectorModel(
            (64, 64), flux=1000.0, flat_strength=0.0, read_noise=0.0, dark_rate=0.0, psf_sigma=sigma
        )
        frames = np.stack([det.expose(None, 1.0, rng=rng) for _ in range(20)]).astype(np.float64)
        noise = frames - frames.mean(axis=0)
        corr[sigma] = float(np.mean(noise[:, :, 1:] * noise[:, :, :-1]) / np.mean(noise**2))
        np.testing.assert_allclose(frames.mean(), det.expected_counts(None, 1.0).mean(), rtol=0.01)
    assert abs(corr[0.0]) < 0.05 and corr[1.0] > 0.4, corr
    with pytest.raises(ValueError, match="psf_sigma"):
        DetectorModel((8, 8), psf_sigma=-1.0)


def _scan(detector: DetectorModel, *, angles: int = ANGLES, seed: int = 3) -> dict:
    """A low-dose scan (1/10) of the simulator, corrected under the pipeline's policy."""
    size = int(detector.shape[0])
    phys = TXMPhysics(make_phantom(size, seed=0), detector, seed=seed, cache_size=angles + 8)
    theta = np.linspace(0.0, 180.0, angles)
    lf = np.stack([phys.frame(0.0, 1.0, sample_offset_mm=10.0) for _ in range(6)])
    ld = np.stack([phys.frame(0.0, 1.0, shutter_open=False) for _ in range(6)])
    sd = np.stack([phys.frame(0.0, 0.1, shutter_open=False) for _ in range(6)])
    ff = flat_field(None, sd, exposure=0.1, long_flats=lf, long_darks=ld, long_exposure=1.0)
    stats = photon_statistics(lf, ld, exposure_ratio=0.1, read_noise_darks=sd)
    return {
        "theta": theta,
        "physics": phys,
        "flat": ff,
        "transmission": ff.correct(np.stack([phys.frame(t, 0.1) for t in theta])),
        "long": flat_field(lf, ld).correct(np.stack([phys.frame(a, 1.0) for a in REFS])),
        "counts": stats.open_beam_counts,
        "read_noise": stats.read_noise,
    }


def test_dead_pixels_are_filled_and_counted_not_rings() -> None:
    dead = _scan(DetectorModel((SIZE, SIZE), dead_pixels=5))
    assert dead["flat"].describe()["dead_pixels"] == 5
    at_dead = dead["transmission"][:, dead["flat"].dead]
    assert np.all(np.isfinite(at_dead)) and 0.05 < at_dead.min() and at_dead.max() < 2.0  # like neighbours
    assert np.all(dead["counts"] > 0.5 * np.median(dead["counts"]))  # filled, not ~0
    kw = {"method": "none", "open_beam_counts": dead["counts"]}
    vol = enhance_scan(dead["transmission"], dead["theta"], **kw).volume
    # the same scan (same photons) on a detector without dead pixels
    clean = _scan(DetectorModel((SIZE, SIZE)))
    plain = enhance_scan(clean["transmission"], clean["theta"], **kw).volume
    unfilled = dead["transmission"].copy()
    unfilled[:, dead["flat"].dead] = 1e-6  # what flat/dark correction alone gives them
    bad = enhance_scan(unfilled, dead["theta"], **kw).volume
    mask = object_mask(plain)
    assert psnr(vol, plain, mask=mask) > 25.0  # filled: close to the detector without dead pixels
    assert psnr(bad, plain, mask=mask) < psnr(vol, plain, mask=mask) - 6.0  # unfilled: rings


def test_fill_dead_pixels_uses_live_neighbours_only() -> None:
    img = np.arange(25, dtype=np.float32).reshape(5, 5)
    dead = np.zeros((5, 5), bool)
    dead[2, 2] = dead[2, 3] = True
    out = fill_dead_pixels(img, dead)
    assert out[2, 2] == pytest.approx(np.mean([6, 7, 8, 11, 16, 17, 18]))
    np.testing.assert_array_equal(out[~dead], img[~dead])
    assert fill_dead_pixels(img, None) is not None


# ---------------------------------------------------------------- forward projection and the judge
def test_recorded_line_integrals_are_the_detectors_noise_free_record() -> None:
    """The evaluation's reference on a blurring detector: -log of the noise-free frames it records."""
    ph = make_textured_phantom(48, seed=0)
    for sigma in (0.0, 1.0):
        phys = TXMPhysics(ph, DetectorModel((48, 48), psf_sigma=sigma))
        li = phys.recorded_line_integrals([0.0, 30.0])
        flat = phys.ideal_frame(0.0, 1.0, sample_offset_mm=10.0)
        dark = phys.ideal_frame(0.0, 1.0, shutter_open=False)
        mean = -np.log((phys.ideal_frame(30.0, 1.0) - dark) / (flat - dark))
        np.testing.assert_allclose(li[1], mean, atol=1e-5)
        exact = phys.mu * ph.project(30.0)
        if sigma == 0:
            np.testing.assert_allclose(li[1], exact, atol=1e-6)
        else:  # the blur is in it: edges are softer than the sample's
            assert np.abs(li[1] - exact).max() > 0.1
            assert np.abs(np.diff(li[1], axis=1)).max() < np.abs(np.diff(exact, axis=1)).max()


def test_forward_projection_inverts_the_reconstruction_geometry() -> None:
    ph = make_phantom(64, seed=0)
    theta = np.linspace(0.0, 180.0, 97)
    exact = ph.project_many(np.array(REFS))
    mask = object_mask(exact)
    voxels = forward_project(ph.voxelize(supersample=2), REFS)
    assert psnr(voxels, exact, mask=mask) > 30.0
    again = forward_project(reconstruct(ph.project_many(theta), theta), REFS)
    # an FBP projected again returns the data at the resolution of its filter's window
    assert psnr(again, apodize(exact), mask=mask) > 32.0
    assert psnr(again, exact, mask=mask) < psnr(again, apodize(exact), mask=mask)
    flipped = forward_project(ph.voxelize(supersample=2)[:, ::-1], REFS)  # a wrong orientation scores low
    assert psnr(flipped, exact, mask=mask) < psnr(voxels, exact, mask=mask) - 8.0
    with pytest.raises(ValueError, match="NaN"):
        forward_project(np.full((2, 8, 8), np.nan), REFS)


@pytest.fixture(scope="module")
def low_dose():
    return _scan(DetectorModel((SIZE, SIZE)))


def test_the_judge_prefers_the_truth_and_states_its_own_noise(low_dose) -> None:
    from bluesky_lowdose.demo import simulator_reference
    from bluesky_lowdose.recon import transmission_to_line_integrals

    s = low_dose
    judge = LongExposureJudge(
        transmission_to_line_integrals(s["long"]), REFS, open_beam_counts=s["counts"] * 10
    )
    truth = simulator_reference(s["physics"], s["theta"])
    noisy = enhance_scan(s["transmission"], s["theta"], method="none").volume
    t, n = judge.score(truth), judge.score(noisy)
    assert t["psnr_db"] > n["psnr_db"] + 3.0 and t["ssim"] > n["ssim"], (t, n)
    ceiling = judge.noise["ceiling_psnr_db"]
    assert 15.0 < ceiling < 60.0 and t["psnr_db"] < ceiling + 3.0  # the judge is only as good as its frames
    assert judge.score(truth, held_out=2)["angles_deg"] == [120.0]
    with pytest.raises(ValueError, match="does not match"):
        judge.score(truth[:, :-1, :-1])


def test_a_loss_in_a_few_slices_is_named_with_the_score_without_them() -> None:
    """A projection sums a slice along the whole ray: a volume perfect everywhere but in the two empty
    slices beyond the object's faces (as Noise2Inverse's neighbouring slices bleed into them on
    ``make demo``) scores below a noisy one. The judge names those slices and scores without them;
    a loss spread over the volume is said to be spread; a better volume has nothing to blame."""
    from scipy.ndimage import gaussian_filter

    from bluesky_lowdose.pipeline.result import _where

    phantom = make_phantom(SIZE, seed=2)
    theta = np.linspace(0.0, 180.0, ANGLES)
    li = phantom.project_many(theta).astype(np.float32)
    truth = reconstruct(li, theta)
    noisy = li + np.random.default_rng(0).normal(0.0, 0.05 * li.max(), li.shape).astype(np.float32)
    raw = reconstruct(noisy, theta)
    judge = LongExposureJudge(phantom.project_many(np.array(REFS)).astype(np.float32), REFS)
    filled = np.flatnonzero(np.abs(truth).max(axis=(1, 2)) > 0.2 * np.abs(truth).max())
    bled = truth.copy()
    faces = [int(filled[0]) - 1, int(filled[-1]) + 1]
    bled[faces[0]], bled[faces[1]] = 0.5 * truth[filled[0]], 0.5 * truth[filled[-1]]
    assert judge.score(bled)["psnr_db"] < judge.score(raw)["psnr_db"]
    where = judge.where_worse(bled, raw)
    assert where["concentrated"] and sorted(where["rows"]) == faces, where
    assert where["psnr_db"] > where["raw_psnr_db"] + 1.5, where  # perfect elsewhere
    assert f"({faces[0]}, {faces[1]}: look at them)" in _where(where)
    blurred = gaussian_filter(truth, 2.0)
    spread = judge.where_worse(blurred, raw)
    assert spread is not None and not spread["concentrated"] and _where(spread) == "", spread
    assert judge.where_worse(truth, raw) is None


def test_same_view_frames_are_the_ones_on_a_reference_angle_or_180_degrees_from_it() -> None:
    from bluesky_lowdose.pipeline.angles import same_view_indices

    assert same_view_indices(np.linspace(0.0, 180.0, 37), REFS).tolist() == [0, 12, 24, 36]
    assert same_view_indices(np.arange(0.0, 360.0, 5.0), [60.0]).tolist() == [12, 48]  # 60° and 240°
    assert same_view_indices(np.arange(1.0, 180.0, 2.0), [0.0, 90.0]).size == 0  # references between frames
    assert same_view_indices([0.0, 90.0], []).size == 0
    # a 360° scan whose half-turns fold onto nearly the same angles (stage jitter): still every view
    jitter = np.random.default_rng(0).normal(0.0, 0.01, 73)
    theta = np.linspace(0.0, 360.0, 73) + jitter
    assert same_view_indices(theta, REFS).tolist() == [0, 12, 24, 36, 48, 60, 72]


def test_the_judge_scores_only_the_rows_it_is_given() -> None:
    """``rows``: an error outside them changes nothing, one inside does; the record names them."""
    vol = np.zeros((16, 32, 32), np.float32)
    vol[4:12, 10:22, 10:22] = 0.02
    angles = np.array([0.0, 60.0, 120.0])
    long_li = forward_project(vol, angles, width=32)
    judge = LongExposureJudge(long_li, angles, rows=slice(4, 12))
    assert not judge.mask[:, :4].any() and not judge.mask[:, 12:].any() and judge.mask[:, 4:12].any()
    assert judge.describe()["rows"] == [4, 12]
    edge, inside = vol.copy(), vol.copy()
    edge[:4, 8:24, 8:24] += 0.01  # outside the judged rows
    inside[6, 8:24, 8:24] += 0.01
    assert judge.score(edge)["psnr_db"] == judge.score(vol)["psnr_db"]
    assert judge.score(inside)["psnr_db"] < judge.score(vol)["psnr_db"] - 1.0
    assert LongExposureJudge(long_li, angles).score(edge)["psnr_db"] < judge.score(vol)["psnr_db"] - 1.0
    with pytest.raises(ValueError, match="hold none"):
        LongExposureJudge(long_li, angles, rows=slice(20, 30))


def test_the_judge_scores_on_views_no_reconstruction_saw() -> None:
    """Projected again at an angle it was made from, a reconstruction returns that frame's own noise,
    summed along the whole ray: judged there, any smoothing of the raw reconstruction looks like a
    gain. Judged on views left out of the reconstruction (as ``auto`` judges), the pick among a family
    of smoothings is close to the truly best one; in view it is far off. Realistic counts and blur
    (3000 quanta, PSF 1 px); the truth is the evaluation's (the detector's noise-free record)."""
    from scipy.ndimage import gaussian_filter

    from bluesky_lowdose.pipeline.angles import same_view_indices
    from bluesky_lowdose.recon import transmission_to_line_integrals

    detector = DetectorModel((64, 64), flux=3000.0, psf_sigma=1.0)
    phys = TXMPhysics(make_textured_phantom(64, seed=0), detector, seed=3, cache_size=45)
    theta = np.linspace(0.0, 180.0, 37)
    lf = np.stack([phys.frame(0.0, 1.0, sample_offset_mm=10.0) for _ in range(6)])
    ld = np.stack([phys.frame(0.0, 1.0, shutter_open=False) for _ in range(6)])
    sd = np.stack([phys.frame(0.0, 0.1, shutter_open=False) for _ in range(6)])
    stats = photon_statistics(lf, ld, exposure_ratio=0.1, read_noise_darks=sd)
    ff = flat_field(None, sd, exposure=0.1, long_flats=lf, long_darks=ld, long_exposure=1.0)
    scan = ff.correct(np.stack([phys.frame(t, 0.1) for t in theta]))
    long_ = flat_field(lf, ld).correct(np.stack([phys.frame(a, 1.0) for a in REFS]))
    kw = {"method": "none", "open_beam_counts": stats.open_beam_counts, "read_noise": stats.read_noise}
    keep = np.setdiff1d(np.arange(theta.size), same_view_indices(theta, REFS))
    raw = enhance_scan(scan, theta, **kw).volume
    unseen = enhance_scan(scan[keep], theta[keep], **kw).volume
    truth = reconstruct(phys.recorded_line_integrals(theta), theta)
    judge = LongExposureJudge(
        transmission_to_line_integrals(long_), REFS, open_beam_counts=stats.open_beam_counts * 10
    )
    sigmas = (0.0, 0.5, 1.0, 1.5)
    smooth = [lambda v, s=s: gaussian_filter(v, (0, s, s)) for s in sigmas]
    true = np.array([psnr(f(raw), truth, mask=object_mask(truth)) for f in smooth])
    held_out = int(np.argmax([judge.score(f(unseen))["psnr_db"] for f in smooth]))
    in_view = [judge.score(f(raw))["psnr_db"] for f in smooth]
    assert in_view[-1] > in_view[0] + 1.0, in_view  # in view: the more smoothing the better, always
    assert true[held_out] > true[int(np.argmax(in_view))] + 1.0, (true, held_out, in_view)
    assert true[held_out] > true.max() - 1.0, (true, held_out)  # held out: close to the truly best


def test_every_result_is_judged_and_pair_methods_on_a_pair_they_never_saw(low_dose) -> None:
    s = low_dose
    common = {
        "long_refs": s["long"],
        "reference_angles": REFS,
        "open_beam_counts": s["counts"],
        "read_noise": s["read_noise"],
        "long_open_beam_counts": s["counts"] * 10,
    }
    plain = enhance_scan(s["transmission"], s["theta"], method="none", **common)
    assert plain.quality["enhanced"] == plain.quality["raw"] and not plain.quality["held_out"]
    assert plain.quality["ceiling_psnr_db"] is not None
    paper = enhance_scan(
        s["transmission"],
        s["theta"],
        method="paper",
        projection_training={"epochs": 2, "patience": None, "max_patches": 256},
        **common,
    )
    assert paper.quality["held_out"] and paper.quality["enhanced"]["angles_deg"] == [120.0]
    assert paper.provenance["pairs"]["held_out_deg"] == 120.0
    assert paper.provenance["projection_step"]["model"]["training_data"]["n_pairs"] == 2
    assert paper.quality["raw"]["angles_deg"] == [120.0]  # raw judged on the same angle
    # with two pairs nothing is held out: the score is flagged optimistic
    two = enhance_scan(
        s["transmission"], s["theta"], method="tv", long_refs=s["long"][:2], reference_angles=REFS[:2]
    )
    assert two.quality["in_sample"] and any("optimistic" in w for w in two.warnings)


def test_auto_judges_a_pair_method_on_every_pair_each_by_a_run_trained_without_it(low_dose) -> None:
    """Leave-one-out: judged on the held-out pair alone, one pair's noise decided between a
    pair-trained method and the others (judged on every pair); at 64^3 it cost 1.8 dB on one case
    of four (docs/evaluation.md, "Leave-one-out")."""
    from bluesky_lowdose.pipeline import select_method
    from bluesky_lowdose.pipeline.angles import same_view_indices
    from bluesky_lowdose.pipeline.stack import pair_from_projections

    s = low_dose
    _, record, _ = select_method(s["transmission"], s["theta"], long_refs=s["long"], reference_angles=REFS,
                                 candidates=["tv"], budget_s=3600.0, race_db=None)  # fmt: skip
    tv = record["candidates"]["tv"]
    assert tv["status"] == "run" and tv["held_out"], tv
    assert tv["judge"]["angles_deg"] == tv["raw"]["angles_deg"] == list(REFS)  # every pair, not the last
    folds = tv["leave_one_out"]
    assert folds["pairs_deg"] == list(REFS) and len(folds["gain_psnr_db_per_pair"]) == 3
    # the pooled gain lies between the pairs' gains (their ratios of squared errors, pooled)
    assert (
        min(folds["gain_psnr_db_per_pair"]) - 1e-3
        <= tv["gain_psnr_db"]
        <= max(folds["gain_psnr_db_per_pair"]) + 1e-3
    )
    # the first pair's fold is the pipeline's own run without that pair, on the candidates' frames
    keep = np.setdiff1d(np.arange(len(s["theta"])), same_view_indices(s["theta"], REFS))
    short = pair_from_projections(s["transmission"], s["theta"], REFS)[0]
    fold = enhance_scan(s["transmission"][keep], s["theta"][keep], method="tv", long_refs=s["long"],
                        short_refs=short, reference_angles=REFS, holdout=0)  # fmt: skip
    assert fold.provenance["pairs"]["held_out_deg"] == REFS[0]
    q = fold.quality
    assert q["enhanced"]["psnr_db"] - q["raw"]["psnr_db"] == pytest.approx(
        folds["gain_psnr_db_per_pair"][0], abs=2e-3
    )
    # a fold is judged by auto, pooled: its own run holds the pair out without judging it
    unjudged = enhance_scan(s["transmission"][keep], s["theta"][keep], method="tv", long_refs=s["long"],
                            short_refs=short, reference_angles=REFS, holdout=0, judge=False)  # fmt: skip
    assert unjudged.quality is None and unjudged.provenance["pairs"]["held_out_deg"] == REFS[0]
    np.testing.assert_array_equal(unjudged.volume, fold.volume)
    with pytest.raises(ValueError, match="no such pair"):
        enhance_scan(s["transmission"], s["theta"], method="tv", long_refs=s["long"], reference_angles=REFS,
                     holdout=3)  # fmt: skip


def test_a_pair_trained_candidate_far_behind_after_its_first_run_stops_there(low_dose) -> None:
    """Racing: the first run (without the last pair) judged on that pair against the best candidate
    so far; more than ``race_db`` behind, the other folds are not run and it cannot win."""
    from bluesky_lowdose.pipeline import select_method

    s = low_dose
    args = dict(long_refs=s["long"], reference_angles=REFS, candidates=["tv"], budget_s=3600.0)
    _, full, _ = select_method(s["transmission"], s["theta"], race_db=None, **args)
    assert full["candidates"]["none"]["gain_psnr_db_per_pair"] == [0.0, 0.0, 0.0]
    first = full["candidates"]["tv"]["gain_psnr_db_per_pair"][-1]  # the run without the last pair
    # the margin just on either side of the first run's gain (the leader is none, at 0 dB)
    _, kept, _ = select_method(s["transmission"], s["theta"], race_db=-first + 0.5, **args)
    assert kept["candidates"]["tv"]["status"] == "run" and "leave_one_out" in kept["candidates"]["tv"]
    assert kept["candidates"]["tv"]["gain_psnr_db"] == pytest.approx(full["candidates"]["tv"]["gain_psnr_db"])
    assert kept["winner"] == full["winner"]
    _, raced, _ = select_method(s["transmission"], s["theta"], race_db=-first - 0.5, **args)
    tv = raced["candidates"]["tv"]
    assert tv["status"].startswith("stopped after one run") and "leave_one_out" not in tv, tv
    assert tv["race"]["leader"] == "none" and tv["first_run"]["gain_psnr_db"] == pytest.approx(
        first, abs=1e-3
    )
    assert tv["first_run"]["pair_deg"] == REFS[-1] and "gain_psnr_db" not in tv
    assert raced["winner"] == "none"  # a stopped candidate is never chosen
    # the leader is the best candidate not below raw on that pair; one below raw in SSIM does not count
    cands = {
        "none": {"status": "run", "gain_psnr_db": 0.0, "gain_ssim": 0.0, "gain_psnr_db_per_pair": [0.0, 0.0]},
        "a": {"status": "run", "gain_psnr_db": 3.0, "gain_ssim": -0.01, "gain_psnr_db_per_pair": [3.0, 3.0]},
        "b": {"status": "run", "gain_psnr_db": 1.0, "gain_ssim": 0.01, "gain_psnr_db_per_pair": [0.5, 2.0]},
        "c": {"status": "not run: the budget was spent"},
    }
    assert race(cands, 0.4, 1, 1.5) == ("b", 2.0)
    assert race(cands, 0.6, 1, 1.5) is None and race(cands, -9.0, 1, None) is None
    assert race(cands, -1.6, 0, 1.5) == ("b", 0.5) and race(cands, -0.9, 0, 1.5) is None


def test_a_bm3d_slices_candidate_filters_only_the_slices_its_judge_reads(monkeypatch) -> None:
    """BM3D filters each slice on its own and the judge reads the judged rows and its SSIM window's
    reach: the slab's other slices keep the plain reconstruction, and the judgement is the same."""
    from bluesky_lowdose.pipeline import scan as scan_module
    from bluesky_lowdose.pipeline import select_method

    s = _scan(DetectorModel((64, 64)), angles=61)
    args = dict(long_refs=s["long"], reference_angles=REFS, candidates=["none", "bm3d-slices"], blend=False)
    winner, record, chosen = select_method(s["transmission"], s["theta"], **args)
    assert winner == "bm3d-slices" and record["judged_rows"] == [16, 48], record  # slab 8:56
    monkeypatch.setattr(scan_module, "JUDGE_REACH", 10**6)  # every slice of the slab filtered
    _, every, chosen_all = select_method(s["transmission"], s["theta"], **args)
    a, b = record["candidates"]["bm3d-slices"], every["candidates"]["bm3d-slices"]
    assert a["gain_psnr_db"] == b["gain_psnr_db"], (a, b)
    assert a["gain_ssim"] == pytest.approx(b["gain_ssim"], abs=1e-12)  # the same to the sums' rounding
    part, whole = (c["bm3d-slices"]["result"] for c in (chosen, chosen_all))
    assert part.provenance["slice_step"]["denoised_slices"] == [5, 43]  # judged 8:40 of the slab, 3 each side
    np.testing.assert_array_equal(part.volume[5:43], whole.volume[5:43])
    np.testing.assert_array_equal(part.volume[:5], part.raw_volume[:5])  # plain where nothing reads it
    assert not np.array_equal(whole.volume[:5], whole.raw_volume[:5])
    # its least time on a wide detector counts those slices (38 of 64 pixels wide), not the slab's 48
    from bluesky_lowdose.model.baselines import _cores

    monkeypatch.undo()
    _, slow, _ = select_method(s["transmission"], s["theta"], bm3d_seconds_per_pixel=1.0, **args)
    least = slow["candidates"]["bm3d-slices"]["least_seconds"]
    assert least == pytest.approx(38 * 64 * 64 / _cores(), abs=0.1), slow["candidates"]


def test_auto_blends_two_candidates_judged_from_their_parts_projections(low_dose) -> None:
    """A blend (the mean of two candidates' volumes) is judged from its parts' projections (a
    projection is linear), pair k of a pair-trained part by its run without that pair; when it wins,
    the whole scan's result is the mean of the two methods run on it, judged on the held-out pair."""
    from bluesky_lowdose.pipeline import ScanPipeline, blend_parts, method_spec
    from bluesky_lowdose.pipeline.auto import blends
    from bluesky_lowdose.pipeline.choice import eligible

    s = low_dose
    photons = dict(open_beam_counts=s["counts"], read_noise=s["read_noise"])
    res = enhance_scan(s["transmission"], s["theta"], method="auto", long_refs=s["long"],
                       reference_angles=REFS, auto_candidates=["none", "bm3d-slices", "tv"],
                       auto_budget_s=3600.0, long_open_beam_counts=s["counts"] * 10, **photons)  # fmt: skip
    auto = res.provenance["auto"]
    cands = auto["candidates"]
    blend = cands["tv+bm3d-slices"]
    assert set(eligible({m: cands[m] for m in ("bm3d-slices", "tv")})) == {"bm3d-slices", "tv"}, cands
    assert blend["blend_of"] == ["tv", "bm3d-slices"] and blend["weights"] == [0.5, 0.5]  # projections first
    assert blend["held_out"] and blend["judge"]["angles_deg"] == list(REFS)  # every pair, as tv's folds
    assert "bm3d-slices+tv" not in cands  # one name per blend
    assert "none+tv" not in cands and "none+bm3d-slices" not in cands  # none is not blended
    # pooled over the pairs, between its per-pair gains; and the record's rule chose
    per = blend["gain_psnr_db_per_pair"]
    assert min(per) - 1e-3 <= blend["gain_psnr_db"] <= max(per) + 1e-3
    assert auto["winner"] == pick_winner(cands)[0]
    # here the blend leads both parts (measured: +3.9 dB against +3.4 and +1.8): the whole scan's result
    assert blend["gain_psnr_db"] > max(cands[m]["gain_psnr_db"] for m in ("bm3d-slices", "tv")), cands
    assert res.method == auto["winner"] == "tv+bm3d-slices"
    assert blend_parts(res.method) == ["tv", "bm3d-slices"]
    prov = res.provenance
    assert prov["blend"]["of"] == ["tv", "bm3d-slices"] and prov["description"].startswith("the mean of")
    assert prov["pairs"] == prov["blend"]["parts"]["tv"]["pairs"]  # as the part that learned from them
    assert method_spec(res.method).pairs and method_spec(res.method).projection == "tv"
    q = res.quality
    assert q["held_out"] and q["enhanced"]["angles_deg"] == q["raw"]["angles_deg"] == [REFS[-1]]
    assert q["enhanced"]["psnr_db"] > q["raw"]["psnr_db"] and not res.warnings
    # the mean of the two methods run on the whole scan with what auto tuned on the slab
    tv = enhance_scan(s["transmission"], s["theta"], method="tv", projection_model=res.models["projection"],
                      judge=False, **photons)  # fmt: skip
    factor = prov["blend"]["parts"]["bm3d-slices"]["slice_step"]["factor"]
    pipe = ScanPipeline((SIZE, SIZE), "bm3d-slices", slice_factor=factor, judge=False, **photons)
    pipe.add(0, s["theta"], s["transmission"])
    np.testing.assert_allclose(res.volume, 0.5 * pipe.finish().volume + 0.5 * tv.volume, atol=1e-5)
    # blends of candidates below raw are not made; nor with nothing judged
    below = {"status": "run", "gain_psnr_db": -1.0, "gain_ssim": 0.01}
    assert blends({"bm3d-slices": below, "tv": below}, {}, None) == {}
    # two slice denoisers (or two projection filters) are not blended: their errors are alike
    ok = {m: {**cands["bm3d-slices"], "status": "run"} for m in ("n2i", "bm3d-slices", "hybrid")}
    assert blends(ok, dict.fromkeys(ok, ()), None) == {}
    with pytest.raises(ValueError, match="unknown method"):
        blend_parts("n2i+nope")


def test_a_pair_trained_candidate_makes_no_folds_that_would_overrun_the_budget(low_dose, monkeypatch) -> None:
    """A candidate that starts within the budget finishes its run; its leave-one-out folds run only
    if they would end within the budget, each taken as long as the first run (four folds of the
    paper CNN could overrun it several times over). Every candidate's run is the real one; the
    clock is set forward 1000 s after each."""
    import types

    from bluesky_lowdose.pipeline import auto, select_method, stack

    offset = [0.0]
    real = stack.enhance_scan

    def slow(*args, **kwargs):  # the real run, then the clock forward
        res = real(*args, **kwargs)
        offset[0] += 1000.0
        return res

    monkeypatch.setattr(stack, "enhance_scan", slow)
    monkeypatch.setattr(
        auto, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0])
    )
    s = low_dose
    args = dict(long_refs=s["long"], reference_angles=REFS, candidates=["tv"], race_db=None)
    # none ends at ~1000 s: tv starts; its first run ends at ~2000 s, two more folds would end at ~4000
    _, record, _ = select_method(s["transmission"], s["theta"], budget_s=3900.0, **args)
    tv = record["candidates"]["tv"]
    assert tv["status"].startswith("stopped after one run: its other 2 folds would end past the 3900 s"), tv
    assert "leave_one_out" not in tv and "race" not in tv and tv["first_run"]["pair_deg"] == REFS[-1]
    assert record["winner"] == "none" and offset[0] == 2000.0  # two runs: none's and tv's first
    offset[0] = 0.0
    _, record, _ = select_method(s["transmission"], s["theta"], budget_s=4100.0, **args)
    assert record["candidates"]["tv"]["status"] == "run" and offset[0] == 4000.0  # every fold


def test_auto_does_not_start_a_bm3d_candidate_whose_least_time_exceeds_the_budget_left(low_dose) -> None:
    """On a wide detector BM3D alone would overrun the budget by far (about 55 s per 1024² slice on
    2 cores): such a candidate is not started, and the record says how long it would have taken."""
    from bluesky_lowdose.model.baselines import _cores, bm3d_seconds_per_pixel
    from bluesky_lowdose.pipeline import select_method
    from bluesky_lowdose.pipeline.costs import bm3d_floor_s

    s = low_dose
    args = dict(long_refs=s["long"], reference_angles=REFS, candidates=["bm3d-slices", "tv"], budget_s=3600.0)
    # at 1 s per pixel: hours of BM3D on the slab's slices; tv has no BM3D and runs
    _, record, _ = select_method(s["transmission"], s["theta"], bm3d_seconds_per_pixel=1.0, **args)
    slices = record["candidates"]["bm3d-slices"]
    rows, width = s["transmission"].shape[1:]
    assert slices["status"].startswith("not run: its BM3D would take") and "budget" in slices["status"]
    assert slices["least_seconds"] == pytest.approx(rows * width * width / _cores(), rel=1e-3)
    assert record["candidates"]["tv"]["status"] == "run"
    # at the real speed (a 64-pixel detector is not estimated unless asked) it fits and runs
    spp = bm3d_seconds_per_pixel(probe=64)
    assert 0 < spp < 1e-3
    _, record, _ = select_method(s["transmission"], s["theta"], bm3d_seconds_per_pixel=spp, **args)
    assert record["candidates"]["bm3d-slices"]["status"] == "run"
    assert bm3d_floor_s("paper", 10, 10, 10, 1.0) is None
    assert bm3d_floor_s("bm3d", 10, 4, 8, 1.0) == pytest.approx(10 * 4 * 8 / _cores())


def test_a_result_worse_than_raw_is_said_so(low_dose) -> None:
    s = low_dose
    # a projection CNN trained for one epoch on two pairs: worse than nothing at the third angle
    bad = enhance_scan(
        s["transmission"],
        s["theta"],
        method="paper",
        long_refs=s["long"],
        reference_angles=REFS,
        projection_training={"epochs": 1, "patience": None, "max_patches": 64},
    )
    q = bad.quality
    if q["enhanced"]["psnr_db"] < q["raw"]["psnr_db"] or q["enhanced"]["ssim"] < q["raw"]["ssim"]:
        assert q["worse_than_raw"]
        assert any("below the raw reconstruction" in w for w in bad.warnings)
        assert bad.provenance["warnings"] == bad.warnings
    else:  # pragma: no cover - the model happened to help; then nothing may be said
        assert not q["worse_than_raw"] and not bad.warnings


def test_auto_is_chosen_by_the_long_exposures_and_never_below_raw(low_dose, caplog) -> None:
    s = low_dose
    caplog.set_level(logging.INFO, logger="bluesky_lowdose.pipeline.scan")
    res = enhance_scan(
        s["transmission"],
        s["theta"],
        method="auto",
        long_refs=s["long"],
        reference_angles=REFS,
        open_beam_counts=s["counts"],
        read_noise=s["read_noise"],
        long_open_beam_counts=s["counts"] * 10,
        n2i_options={"steps": 150, "crop": 32, "batch_size": 16},
        projection_training={"epochs": 2, "patience": None, "max_patches": 256},
        auto_candidates=["none", "n2i", "paper"],
        auto_budget_s=3600.0,
    )
    auto = res.provenance["auto"]
    assert res.provenance["requested_method"] == "auto" and res.method == auto["winner"]
    cands = auto["candidates"]
    assert {m for m, c in cands.items() if "blend_of" not in c} == {"none", "n2i", "paper"}
    # the paper CNN, trained this briefly, may stop after its first run (racing): then it is not chosen
    assert all(c["status"] == "run" for m, c in cands.items() if m != "paper"), cands
    assert cands["paper"]["status"] == "run" or cands["paper"]["status"].startswith("stopped"), cands
    run = {m: c for m, c in cands.items() if c["status"] == "run"}
    gains = {m: c["gain_psnr_db"] for m, c in run.items()}
    eligible = {m for m, c in run.items() if c["gain_psnr_db"] >= 0 and c["gain_ssim"] >= 0}
    # the largest PSNR gain, or within TIE_DB of it the largest SSIM gain
    top = max(gains[m] for m in eligible)
    tied = [m for m in eligible if gains[m] >= top - TIE_DB]
    assert auto["winner"] == max(tied, key=lambda m: cands[m]["gain_ssim"]), cands
    # each candidate's whole scan was timed from its slab run (tests/test_auto_time.py); an hour's budget
    # passes none over, and the whole scan's own time is recorded beside the winner's estimate
    assert all(c["whole_scan_s"] >= 0 for c in run.values()), run
    assert auto["whole_scan"]["passed_over"] == [] and auto["whole_scan"]["seconds"] > 0, auto["whole_scan"]
    q = res.quality
    assert q["enhanced"]["psnr_db"] >= q["raw"]["psnr_db"] and q["enhanced"]["ssim"] >= q["raw"]["ssim"]
    assert not res.warnings
    # a candidate below raw is in auto's record; its run's judge says so at INFO, not as a warning
    # about the scan (the result is not that candidate's volume)
    below = [r for r in caplog.records if "scores below the raw reconstruction" in r.getMessage()]
    assert below, "a candidate trained this briefly scores below raw here"
    assert all(r.levelno == logging.INFO for r in below), [(r.levelname, r.getMessage()) for r in below]
    assert all(r.getMessage().startswith("auto candidate: method") for r in below)


def test_auto_with_direct_fourier_inversion_judges_in_view_and_says_so(low_dose) -> None:
    """``dfi`` needs every regular angle: the views are not left out, the record says why."""
    s = low_dose
    res = enhance_scan(s["transmission"], s["theta"], method="auto", long_refs=s["long"],
                       reference_angles=REFS, auto_candidates=["none", "tv"], backend="dfi")  # fmt: skip
    auto = res.provenance["auto"]
    assert auto["judged_views"]["left_out_frames"] == [] and "dfi" in auto["judged_views"]["note"]
    assert all(c["status"] == "run" for c in auto["candidates"].values()), auto["candidates"]


def test_auto_within_budget_runs_none_first_and_records_what_it_skipped(low_dose) -> None:
    s = low_dose
    res = enhance_scan(
        s["transmission"],
        s["theta"],
        method="auto",
        long_refs=s["long"],
        reference_angles=REFS,
        auto_candidates=["n2i", "bm3d"],
        auto_budget_s=0.0,
    )
    cands = res.provenance["auto"]["candidates"]
    assert cands["none"]["status"] == "run" and res.method == "none"
    assert all("budget" in cands[m]["status"] for m in ("n2i", "bm3d"))
    # a projection CNN needs a run per pair (leave-one-out): with less than that many of its least
    # time per run left it does not start (it would run past the budget and not be judged)
    budget = len(REFS) * CNN_RUN_MIN_S - 1.0
    res = enhance_scan(s["transmission"], s["theta"], method="auto", long_refs=s["long"],
                       reference_angles=REFS, auto_candidates=["paper"], auto_budget_s=budget)  # fmt: skip
    status = res.provenance["auto"]["candidates"]["paper"]["status"]
    assert status.startswith("not run") and f"its {len(REFS)} training run(s) need" in status, status
    with pytest.raises(ValueError, match="unknown auto candidate"):
        enhance_scan(
            s["transmission"],
            s["theta"],
            method="auto",
            long_refs=s["long"],
            reference_angles=REFS,
            auto_candidates=["magic"],
        )


def test_counts_split_noise2inverse_needs_photon_statistics(low_dose) -> None:
    s = low_dose
    with pytest.raises(ValueError, match="open_beam_counts"):
        enhance_scan(s["transmission"], s["theta"], method="n2i-counts")
    res = enhance_scan(
        s["transmission"],
        s["theta"],
        method="n2i-counts",
        open_beam_counts=s["counts"],
        read_noise=s["read_noise"],
        n2i_options={"steps": 20, "crop": 32, "batch_size": 16},
    )
    assert res.volume.shape == (SIZE, SIZE, SIZE) and np.all(np.isfinite(res.volume))
    assert "binomial" in res.provenance["reconstruction"]["subset_rule"]


# ---------------------------------------------------------------- reproducibility
_TRAIN = """
import hashlib, numpy as np
from bluesky_lowdose.model.n2i import train_noise2inverse, denoise_splits
rng = np.random.default_rng(0)
clean = np.zeros((12, 64, 64), np.float32); clean[:, 16:48, 16:48] = 1
parts = [clean + 0.3 * rng.standard_normal(clean.shape).astype(np.float32) for _ in range(2)]
def run():
    d = train_noise2inverse(parts, steps=120, crop=32, batch_size=2, seed=3)  # two epochs of batches
    return denoise_splits(d, parts, tta=False)
"""


def test_noise2inverse_is_bit_for_bit_reproducible_in_and_across_processes() -> None:
    scope: dict = {}
    exec(_TRAIN, scope)  # our own snippet, shared with the subprocess below
    first = scope["run"]()
    from bluesky_lowdose.model.n2i import train_noise2inverse

    train_noise2inverse(scope["parts"], steps=10, crop=32, batch_size=2, seed=9)  # unrelated training between
    second = scope["run"]()
    np.testing.assert_array_equal(first, second)
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN + "print('HASH', hashlib.sha256(run().tobytes()).hexdigest())"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("HASH"))
    assert line.split()[1] == hashlib.sha256(first.tobytes()).hexdigest()


def test_noise2inverse_is_applied_to_the_whole_scan_or_to_each_subset() -> None:
    """``inference="full"``: one prediction from the mean of the subsets (the whole scan's
    reconstruction); ``"subsets"``: the mean of the predictions from each subset's complement."""
    from bluesky_lowdose.model.n2i import N2I_INFERENCE, denoise_splits, train_noise2inverse

    rng = np.random.default_rng(2)
    clean = np.zeros((4, 32, 32), np.float32)
    clean[:, 8:24, 8:24] = 1
    parts = [clean + 0.3 * rng.standard_normal(clean.shape).astype(np.float32) for _ in range(2)]
    d = train_noise2inverse(parts, steps=20, crop=32, batch_size=2)
    full = denoise_splits(d, parts, tta=False, inference="full")
    mean = 0.5 * (parts[0] + parts[1])
    np.testing.assert_allclose(
        full, denoise_splits(d, [mean, mean], tta=False, inference="subsets"), atol=1e-6
    )
    each = denoise_splits(d, parts, tta=False, inference="subsets")
    from_a, from_b = (denoise_splits(d, [p, p], tta=False, inference="subsets") for p in parts)
    np.testing.assert_allclose(each, 0.5 * (from_a + from_b), atol=1e-5)
    assert np.abs(full - each).max() > 1e-3  # two different inputs
    assert N2I_INFERENCE == "full"
    np.testing.assert_array_equal(denoise_splits(d, parts, tta=False), full)  # the default
    with pytest.raises(ValueError, match="inference must be one of"):
        denoise_splits(d, parts, inference="half")


def test_noise2inverse_stops_at_its_time_limit_and_says_so() -> None:
    from bluesky_lowdose.model.n2i import train_noise2inverse

    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((4, 32, 32)).astype(np.float32) for _ in range(2)]
    d = train_noise2inverse(parts, steps=5000, crop=32, batch_size=2, time_limit_s=3.0)
    hp = d.provenance["hyperparameters"]
    assert hp["stopped_by_time_limit"] and 0 < hp["steps"] < hp["planned_steps"] == 5000


def test_auto_trains_noise2inverse_over_the_whole_height_and_judges_it_on_the_slab() -> None:
    """A denoiser that saw only the slab's interior paints the object into the empty slices past
    its faces; ``auto`` trains it on rows over the whole height, judges it on the slab, reuses it."""
    s = _scan(DetectorModel((64, 64)), angles=61)
    res = enhance_scan(s["transmission"], s["theta"], method="auto", long_refs=s["long"],
                       reference_angles=REFS, auto_candidates=["none", "n2i"],
                       n2i_options={"steps": 20, "crop": 32, "batch_size": 16})  # fmt: skip
    auto = res.provenance["auto"]
    assert auto["slab_rows"] == [8, 56] and auto["candidates"]["n2i"]["status"] == "run", auto
    # every row (64 fit the sampling budget), all but the ends a centre slice; the slab is 48 of them
    assert auto["candidates"]["n2i"]["training_rows"] == {"rows": 64, "of": 64, "centre_slices": 62}


def test_at_sparse_angles_auto_fine_tunes_its_noise2inverse_on_every_frame(monkeypatch) -> None:
    """A Noise2Inverse candidate trained without the long exposures' views learns its subsets' streaks;
    with fewer frames than :data:`REFIT_BELOW_ANGLES_PER_WIDTH` x the width ``auto`` fine-tunes it on
    every frame before it denoises the whole scan (from the candidate's weights, :data:`REFIT`'s share
    of the steps), and says so. With enough angles the candidate's model is reused as it is."""
    import math

    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P
    from bluesky_lowdose.pipeline import auto as A

    # 0.6 x the width (under-blur's sampling) at 10 quanta per pixel: Noise2Inverse wins by about 4 dB
    angles, steps = 29, 300
    cfg = EvaluationConfig(mode="poisson", size=48, angles=angles, dose_ladder=(), methods=("none",),
                           phantom="spheres", flux=100.0, psf_sigma=1.0, slices=8, margin=4)  # fmt: skip
    scan = P.low_dose_scan(cfg)
    theta, low = scan["theta"], scan["low"]
    kw = dict(**scan["pairs"], **scan["counts"], keep_projections=False, method="auto",
              auto_candidates=("none", "n2i"),
              n2i_options={"steps": steps, "crop": 32, "batch_size": 16})  # fmt: skip
    res = enhance_scan(low["transmission"], theta, **kw)
    record = res.provenance["auto"]
    assert res.method == "n2i" and record.get("noise_free") is None  # the long exposures judged
    assert record["judged_views"]["left_out_frames"]
    tuned = record["fine_tuned_on_every_frame"]["n2i"]
    model = res.provenance["slice_step"]["model"]
    assert not res.provenance["slice_step"]["reused_model"] and model["fine_tuned_from"] == tuned["from"]
    assert model["hyperparameters"]["steps"] == math.ceil(A.REFIT["fraction"] * steps)
    rate = model["hyperparameters"]["learning_rate"]
    assert rate == pytest.approx(1e-3 * A.REFIT["learning_rate_fraction"])
    # the whole scan's every row (this protocol's scan is a 16-row stack), from every frame
    assert model["training_data"]["volume_shape"][0] == low["transmission"].shape[1]
    assert f"{angles} frames" in tuned["why"]
    # with enough angles for the threshold (here: the threshold lowered to this scan's) it is reused
    monkeypatch.setattr(A, "REFIT_BELOW_ANGLES_PER_WIDTH", angles / 48)
    reused = enhance_scan(low["transmission"], theta, **kw)
    assert reused.method == "n2i" and "fine_tuned_on_every_frame" not in reused.provenance["auto"]
    assert reused.provenance["slice_step"]["reused_model"]
    assert reused.provenance["slice_step"]["model_hash"] == tuned["from"]  # the same candidate


def test_auto_trains_noise2inverse_beside_bm3d_on_slices_each_on_half_the_cores(monkeypatch) -> None:
    """Noise2Inverse's candidate trains in a child process on half the cores while BM3D on slices, then
    the paper's CNN (its training in a child process too) run on the others; BM3D's judged result is the
    one it has alone (its calls do not depend on how many run side by side), the CNN's first run is
    judged as alone, and all are judged as before."""
    from bluesky_lowdose.model.baselines import _cores
    from bluesky_lowdose.pipeline import auto as A

    s = _scan(DetectorModel((64, 64)), angles=61)
    kw = dict(method="auto", long_refs=s["long"], reference_angles=REFS,
              auto_candidates=["none", "n2i", "bm3d-slices", "paper"],
              n2i_options={"steps": 20, "crop": 32, "batch_size": 16},
              projection_training={"epochs": 2, "max_patches": 256})  # fmt: skip
    res = enhance_scan(s["transmission"], s["theta"], **kw)
    auto = res.provenance["auto"]
    assert A.concurrent_kernels()  # numba's OpenMP layer, as the project's stack installs it
    cores = _cores()
    if cores >= 2:
        half = cores // 2
        side = auto["side_by_side"]
        # the CNN beside unless the (short) training had already ended, then after it
        beside = ["bm3d-slices", "paper"] if "after" not in side else ["bm3d-slices"]
        assert side == {
            "training": "n2i",
            "beside": beside,
            "training_threads": half,
            "bm3d_workers": cores - half,
            **({"after": side["after"]} if "after" in side else {}),
        }
        assert "after" not in side or side["after"] == "paper: the training had ended"
    else:  # one core: nothing to share
        assert "side_by_side" not in auto
    cands = auto["candidates"]
    assert cands["n2i"]["status"] == cands["bm3d-slices"]["status"] == "run", cands
    assert cands["paper"]["status"] == "run" or cands["paper"]["status"].startswith("stopped"), cands
    assert cands["n2i"]["training_rows"]["rows"] == 64  # trained over the whole height, in the child
    steps = cands["n2i"]["training_steps"]  # what its training made of what was planned
    assert steps["made"] == steps["planned"] >= 20 and not steps["stopped_by_time_limit"]
    assert "training_steps" not in cands["bm3d-slices"]
    monkeypatch.setattr(A, "SIDE_BY_SIDE", False)
    alone = enhance_scan(s["transmission"], s["theta"], **kw).provenance["auto"]
    assert "side_by_side" not in alone
    for key in ("gain_psnr_db", "gain_ssim", "gain_psnr_db_per_pair"):
        assert cands["bm3d-slices"][key] == alone["candidates"]["bm3d-slices"][key], key
    # the CNN's first run (trained without one pair, judged on it): as when trained in this process
    first, first_alone = (c["paper"].get("first_run") or {"gain_psnr_db": c["paper"]["gain_psnr_db"]}
                          for c in (cands, alone["candidates"]))  # fmt: skip
    assert first["gain_psnr_db"] == pytest.approx(first_alone["gain_psnr_db"], abs=0.05)


def test_auto_judges_a_slab_against_the_same_rows_of_the_long_exposures(tmp_path) -> None:
    """64 rows: the candidates run on rows 8-55 only, on memory and on disk (workdir) alike, and
    are judged on rows 16-47: not on the margins, where every method sees the cut's edge (the
    paper's CNN lost ~3 dB of its judged gain there at 64^3, docs/evaluation.md)."""
    from bluesky_lowdose.pipeline.auto import auto_slab
    from bluesky_lowdose.recon import transmission_to_line_integrals

    s = _scan(DetectorModel((64, 64)), angles=61)
    rows = auto_slab(64)
    assert (rows.start, rows.stop) == (8, 56)
    # the candidates' scan leaves out the frames on the long exposures' views (0°, 60°, 120°, 180°)
    keep = np.setdiff1d(np.arange(61), [0, 20, 40, 60])
    plain = enhance_scan(s["transmission"][keep][:, rows], s["theta"][keep], method="none").volume
    long_li = transmission_to_line_integrals(s["long"][:, rows])
    expected = LongExposureJudge(long_li, REFS, rows=slice(8, 40)).score(plain)
    every_row = LongExposureJudge(long_li, REFS).score(plain)
    assert abs(every_row["psnr_db"] - expected["psnr_db"]) > 0.01  # the rows judged matter
    for workdir in (None, tmp_path / "work"):
        res = enhance_scan(
            s["transmission"],
            s["theta"],
            method="auto",
            long_refs=s["long"],
            reference_angles=REFS,
            auto_candidates=["none"],
            workdir=workdir,
        )
        auto = res.provenance["auto"]
        assert auto["slab_rows"] == [8, 56] and not auto["whole_detector"] and res.method == "none"
        assert auto["judged_rows"] == [16, 48]
        assert auto["judged_views"]["left_out_frames"] == [0, 20, 40, 60]
        assert auto["candidates"]["none"]["judge"]["psnr_db"] == pytest.approx(expected["psnr_db"], abs=1e-4)
        assert res.volume.shape == (64, 64, 64)


def test_auto_picks_the_largest_psnr_gain_and_breaks_ties_by_ssim() -> None:

    def run(psnr: float, ssim: float) -> dict:
        return {"status": "run", "gain_psnr_db": psnr, "gain_ssim": ssim}

    # below raw in either metric: never chosen; nothing left: raw
    assert pick_winner({"none": run(0, 0), "paper": run(2.0, -0.001)})[0] == "none"
    assert pick_winner({"n2i": {"status": "failed: x"}})[0] == "none"
    # a clear PSNR lead wins whatever the SSIM
    winner, why = pick_winner({"none": run(0, 0), "bm3d": run(1.5, 0.01), "n2i": run(1.5 - 2 * TIE_DB, 0.05)})
    assert winner == "bm3d" and "tied" not in why
    # gains within TIE_DB tie (make demo: n2i +1.43 / +0.017, bm3d-slices +1.44 / +0.014): SSIM decides
    winner, why = pick_winner({"none": run(0, 0), "n2i": run(1.43, 0.017), "bm3d-slices": run(1.44, 0.014)})
    assert winner == "n2i" and "tied within" in why and "bm3d-slices +1.44 dB" in why
