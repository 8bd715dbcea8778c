"""The enhancer really learns: trained on a few angles of the simulated TXM, it denoises others.

Also the classical baselines, tuned on the same pairs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import make_physics, pairs, psnr

from bluesky_lowdose import model as bm

TRAIN_ANGLES = (0.0, 60.0, 120.0)
TEST_ANGLES = (30.0, 90.0, 150.0)


@pytest.fixture(scope="module")
def scene() -> dict[str, np.ndarray]:
    ph = make_physics(48)
    short, long = pairs(ph, TRAIN_ANGLES)
    test_short, _ = pairs(ph, TEST_ANGLES)
    truth = np.stack([ph.transmission(t) for t in TEST_ANGLES])
    return {"short": short, "long": long, "test_short": test_short, "truth": truth}


@pytest.mark.quality
def test_unet_denoises_held_out_angles(scene: dict[str, np.ndarray]) -> None:
    # Measured on a 2-core CPU: about 28.3 dB -> 32.5-33.5 dB (+4 to +5 dB), ~10 s of training.
    enh = bm.train(
        scene["short"],
        scene["long"],
        model="unet",
        patch_size=16,
        stride=4,
        epochs=30,
        batch_size=16,
        learning_rate=2e-3,
        seed=0,
        progress=False,
    )
    out = enh.enhance(scene["test_short"])
    before = [psnr(s, t) for s, t in zip(scene["test_short"], scene["truth"], strict=True)]
    after = [psnr(e, t) for e, t in zip(out, scene["truth"], strict=True)]
    gains = np.subtract(after, before)
    print(f"unet held-out PSNR before {np.round(before, 2)} after {np.round(after, 2)}")
    assert gains.min() >= 2.0, gains
    assert gains.mean() >= 2.5, gains


@pytest.mark.quality
def test_paper_network_trains_and_improves(scene: dict[str, np.ndarray]) -> None:
    # The fully connected network is slower to train than the U-Net: a smaller gain is asked of it.
    enh = bm.train(
        scene["short"],
        scene["long"],
        model="paper",
        patch_size=16,
        stride=8,
        epochs=30,
        batch_size=16,
        learning_rate=2e-3,
        seed=0,
        progress=False,
    )
    history = enh.provenance["history"]["val_loss"]
    assert history[-1] < history[0]
    out = enh.enhance(scene["test_short"])
    assert out.shape == scene["test_short"].shape and np.isfinite(out).all()
    before = np.mean([psnr(s, t) for s, t in zip(scene["test_short"], scene["truth"], strict=True)])
    after = np.mean([psnr(e, t) for e, t in zip(out, scene["truth"], strict=True)])
    print(f"paper held-out PSNR before {before:.2f} after {after:.2f}")
    assert after > before + 1.5, (before, after)  # held-out frames: it must improve, not just run


@pytest.mark.quality
@pytest.mark.parametrize("name", ["median", "tv", "bm3d"])
def test_baselines_tuned_on_pairs_improve(name: str, scene: dict[str, np.ndarray]) -> None:
    n = 1 if name == "bm3d" else None  # BM3D is slow (~1 s per call): one pair, one test frame
    base = bm.baseline(name, scene["short"][:n], scene["long"][:n])
    prov = json.loads(json.dumps(base.provenance))
    assert prov["tuned"] and prov["value"] == base.value and len(prov["psnr_db"]) == len(prov["candidates"])
    test_short, truth = scene["test_short"][:n], scene["truth"][:n]
    out = base.enhance(test_short)
    assert out.shape == test_short.shape and out.dtype == np.float32
    before = np.mean([psnr(s, t) for s, t in zip(test_short, truth, strict=True)])
    after = np.mean([psnr(e, t) for e, t in zip(out, truth, strict=True)])
    print(
        f"{name} held-out PSNR before {before:.2f} after {after:.2f} ({prov['parameter']}={base.value:.4g})"
    )
    assert after > before
    if name != "bm3d":
        single = base.enhance(test_short[0].astype(np.float64))
        np.testing.assert_allclose(single, out[0], rtol=1e-6, atol=1e-6)


def test_bm3d_profiles_conventional_on_projections_the_library_s_on_slices() -> None:
    """BM3D on projections (``Baseline``) is the conventional BM3D (``nf=0``), BM3D on slices the
    library's own profile above 64 pixels (the conventional one up to 64); each result says which,
    and the two profiles differ."""
    import bm3d

    from bluesky_lowdose.model.baselines import BM3D_PROFILE, baseline, bm3d_each
    from bluesky_lowdose.pipeline.slices import CONVENTIONAL_MAX_WIDTH, SLICE_BM3D_PROFILE, bm3d_slices

    rng = np.random.default_rng(6)
    image = rng.random((24, 24))

    def library(frame: np.ndarray = image, sigma: float = 0.1, **changes) -> np.ndarray:
        profile = bm3d.BM3DProfile()
        profile.num_threads = 1
        for key, value in changes.items():
            setattr(profile, key, value)
        return np.asarray(bm3d.bm3d(frame, sigma_psd=sigma, profile=profile))

    assert BM3D_PROFILE == {"nf": 0} and SLICE_BM3D_PROFILE == {}
    conventional, own = library(nf=0), library()
    assert not np.array_equal(conventional, own)
    np.testing.assert_array_equal(bm3d_each([image], 0.1)[0], conventional)
    np.testing.assert_array_equal(bm3d_each([image], 0.1, profile={})[0], own)
    filt = baseline("bm3d", sigma=0.1)
    assert filt.provenance["profile"] == {"nf": 0}
    np.testing.assert_array_equal(filt.enhance(image), conventional.astype(np.float32))
    assert CONVENTIONAL_MAX_WIDTH == 64
    for width, changes in ((64, {"nf": 0}), (65, {})):  # the widest conventional, the narrowest refined
        parts = [rng.random((1, width, width)).astype(np.float32) for _ in range(2)]
        full = (0.5 * (parts[0] + parts[1])).astype(np.float32)
        volume, record = bm3d_slices(parts, full, factor=1.0)
        assert record["profile"] == changes
        want = library(full[0].astype(np.float64), record["sigma"], **changes).astype(np.float32)
        np.testing.assert_array_equal(volume[0], want)


def test_bm3d_side_by_side_gives_what_one_call_at_a_time_gives() -> None:
    """Threads (one per core) and one BM3D thread per call: the same images as calls one by one,
    written into ``out`` in order; and BM3D on slices given its tuned factor is its tuned volume."""
    from bluesky_lowdose.model.baselines import _bm3d, bm3d_each
    from bluesky_lowdose.pipeline.slices import bm3d_slices

    rng = np.random.default_rng(5)
    images = [rng.random((s, s)) for s in (16, 24, 16)]
    sigmas = [0.05, 0.1, 0.2]
    one_by_one = [_bm3d(image, sigma) for image, sigma in zip(images, sigmas, strict=True)]
    for got, want in zip(bm3d_each(images, sigmas), one_by_one, strict=True):
        np.testing.assert_array_equal(got, want)
    out = np.zeros((3, 16, 16))
    bm3d_each([images[0], images[2], images[0]], 0.1, out=out)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.array_equal(out[0], out[1])
    with pytest.raises(ValueError, match="2 sigmas for 3 images"):
        bm3d_each(images, sigmas[:2])
    # two slices of two subsets: tuned, then given the factor it found (no tuning: same volume)
    clean = rng.random((2, 16, 16))
    parts = [(clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32) for _ in range(2)]
    full = (0.5 * (parts[0] + parts[1])).astype(np.float32)
    tuned, record = bm3d_slices(parts, full)
    again, given = bm3d_slices(parts, full, factor=record["factor"])
    np.testing.assert_array_equal(again, tuned)
    assert "tuning_losses" in record and "tuning_losses" not in given and "not tuned again" in given["tuning"]
    # only the slices asked for (auto's judged rows): tuned the same, those slices the same, the rest plain
    one, part = bm3d_slices(parts, full, rows=slice(1, 2))
    assert part["factor"] == record["factor"] and part["denoised_slices"] == [1, 2]
    np.testing.assert_array_equal(one[1], tuned[1])
    np.testing.assert_array_equal(one[0], full[0])
    with pytest.raises(ValueError, match="positive"):
        bm3d_slices(parts, full, factor=float("nan"))


def test_baseline_errors() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        bm.baseline("wiener")
    with pytest.raises(ValueError, match="only the parameter"):
        bm.baseline("tv", weight=0.1, size=3)
    with pytest.raises(ValueError, match="needs sigma"):
        bm.baseline("bm3d")
    with pytest.raises(ValueError, match="both"):
        bm.baseline("tv", np.ones((1, 8, 8)))
    with pytest.raises(ValueError, match="positive"):
        bm.baseline("median", size=0)
    fixed = bm.baseline("median", size=3)
    assert not fixed.provenance["tuned"]
    with pytest.raises(ValueError, match="NaN"):
        fixed.enhance(np.full((4, 4), np.nan))


def test_the_sigma_search_finds_the_least_loss_of_all_factors_in_fewer_evaluations() -> None:
    """BM3D on slices tunes sigma by a coarse grid then neighbours (``coarse_to_fine``): for a loss
    that falls then rises along the factors it is the exhaustive argmin, wherever the minimum is."""
    from bluesky_lowdose.pipeline.slices import FACTORS, coarse_to_fine

    n = len(FACTORS)
    for where in range(n):
        for shape in (lambda i, w=where: (i - w) ** 2, lambda i, w=where: abs(i - w) ** 0.5 + 0.01 * i):
            calls: list[int] = []
            best, seen = coarse_to_fine(n, lambda i, f=shape, log=calls: log.append(i) or f(i))
            assert best == min(range(n), key=shape) == where
            assert len(calls) == len(set(calls)) == len(seen) <= 7 and all(seen[i] == shape(i) for i in seen)
    # on a loss with two dips it may settle in the one near the coarse grid: said by its losses
    best, seen = coarse_to_fine(n, lambda i: [5, 0, 5, 5, 1, 5, 5, 5, 5][i])
    assert best == 1 and seen[1] == 0
    # fewer candidates than the coarse grid reaches: it starts in the middle, still the argmin
    assert coarse_to_fine(1, float)[0] == 0
    assert coarse_to_fine(3, lambda i: (i - 2) ** 2, start=(5, 8))[0] == 2
    with pytest.raises(ValueError, match="at least one candidate"):
        coarse_to_fine(0, float)
