"""The physics core: phantom, exact projector, detector noise, flat/dark behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_lowdose.physics import DetectorModel, Phantom, TXMPhysics, make_phantom


def _single_sphere(size: int, x: float, y: float, z: float, r: float) -> Phantom:
    return Phantom(size=size, cube_half_width=0.0, spheres=np.array([[x, y, z, r]]), cube_value=0.0)


@pytest.mark.parametrize("theta", [0.0, 30.0, 90.0, 137.0])
def test_sphere_projection_is_the_analytic_chord(theta: float) -> None:
    n, (x, y, z, r) = 48, (6.0, -4.0, 3.0, 7.5)
    p = _single_sphere(n, x, y, z, r)
    proj = p.project(theta)
    c = np.arange(n) - (n - 1) / 2
    u0 = x * np.cos(np.deg2rad(theta)) + y * np.sin(np.deg2rad(theta))
    d2 = (c[None, :] - u0) ** 2 + (c[:, None] - z) ** 2
    expected = 2 * np.sqrt(np.clip(r * r - d2, 0, None))
    np.testing.assert_allclose(proj, expected, atol=1e-4)
    # the peak sits where u = x cos + y sin says, i.e. the rotation axis is at (n-1)/2
    row, col = np.unravel_index(np.argmax(proj), proj.shape)
    assert abs(c[col] - u0) <= 0.5 + 1e-9 and abs(c[row] - z) <= 0.5 + 1e-9


@pytest.mark.parametrize(("theta", "axis"), [(0.0, 1), (90.0, 2)])
def test_projection_matches_voxel_sums_at_axis_angles(theta: float, axis: int) -> None:
    p = make_phantom(48, seed=3)
    vol = p.voxelize(supersample=3)
    proj = p.project(theta)
    voxel_sum = vol.sum(axis=axis)
    # exact line integrals (point samples at pixel centres) vs. a partial-volume voxel sum:
    # the same picture, differing only at edges
    assert np.median(np.abs(proj - voxel_sum)) < 0.05
    assert np.corrcoef(proj.ravel(), voxel_sum.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("theta", [0.0, 45.0, 90.0, 135.0])
def test_cube_projection_is_the_analytic_chord(theta: float) -> None:
    n, a = 40, 10.0
    p = Phantom(size=n, cube_half_width=a, spheres=np.empty((0, 4)), cube_value=0.3)
    c = np.arange(n) - (n - 1) / 2
    if theta % 90 == 0:
        chord = np.where(np.abs(c) <= a, 2 * a, 0.0)
    else:  # diamond: chord falls linearly from 2*sqrt(2)*a at the centre
        chord = np.clip(2 * np.sqrt(2) * a - 2 * np.abs(c), 0, None)
    rows = np.abs(c) <= a
    expected = np.where(rows[:, None], 0.3 * chord[None, :], 0.0)
    np.testing.assert_allclose(p.project(theta), expected, atol=1e-4)


def test_phantom_is_seeded_and_spheres_do_not_overlap() -> None:
    a, b, c = make_phantom(64, seed=1), make_phantom(64, seed=1), make_phantom(64, seed=2)
    np.testing.assert_array_equal(a.spheres, b.spheres)
    assert not np.array_equal(a.spheres, c.spheres)
    s = a.spheres
    dist = np.linalg.norm(s[:, None, :3] - s[None, :, :3], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert np.all(dist >= s[:, None, 3] + s[None, :, 3])
    assert np.all(np.abs(s[:, :3]) + s[:, 3:] <= a.cube_half_width + 1e-9)
    d = 2 * s[:, 3]
    assert d.min() >= 2.0 and d.max() <= 20 * 64 / 512 + 1.0 + 1e-9


def test_phantom_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="size"):
        make_phantom(8)
    with pytest.raises(ValueError, match="cube_fraction"):
        make_phantom(32, cube_fraction=0.9)


def test_long_exposure_snr_exceeds_short_by_sqrt_of_ratio() -> None:
    det = DetectorModel((64, 64), flux=300.0, flat_strength=0.0, read_noise=2.5, dark_rate=2.0)
    rng = np.random.default_rng(0)
    t = np.full((64, 64), 0.3)
    snr = {}
    for exposure in (2.0, 30.0):
        frames = np.stack([det.expose(t, exposure, rng=rng).astype(float) for _ in range(40)])
        dark = det.bias + det.dark_rate * exposure
        signal = frames.mean() - dark
        snr[exposure] = signal / frames.std(axis=0).mean()
    ratio = snr[30.0] / snr[2.0]
    assert ratio == pytest.approx(np.sqrt(15.0), rel=0.1)
    # and the short-exposure SNR is what Poisson statistics predict (read/dark noise included)
    n = 300 * 2.0 * 0.3
    expected_short = n / np.sqrt(n + 2.0 * 2.0 + 2.5**2)
    assert snr[2.0] == pytest.approx(expected_short, rel=0.1)


def test_closed_shutter_gives_darks_and_flats_are_non_uniform() -> None:
    ph = TXMPhysics(make_phantom(32))
    dark = ph.frame(0.0, 5.0, shutter_open=False).astype(float)
    assert abs(dark.mean() - (ph.detector.bias + ph.detector.dark_rate * 5.0)) < 1.0
    flat = ph.ideal_frame(0.0, 5.0, sample_offset_mm=10.0) - ph.ideal_frame(0.0, 5.0, shutter_open=False)
    rel = flat / flat.max()
    assert 0.6 < rel.min() < 0.95  # beam falls off towards the corners, like a real one


def test_flat_dark_correction_recovers_transmission() -> None:
    ph = TXMPhysics(make_phantom(32, seed=0), seed=5)
    exposure, theta = 10.0, 40.0
    n = 30
    raw = np.mean([ph.frame(theta, exposure) for _ in range(n)], axis=0)
    flat = np.mean([ph.frame(theta, exposure, sample_offset_mm=10.0) for _ in range(n)], axis=0)
    dark = np.mean([ph.frame(theta, exposure, shutter_open=False) for _ in range(n)], axis=0)
    corrected = (raw - dark) / (flat - dark)
    truth = ph.transmission(theta)
    assert truth is not None
    assert np.abs(corrected - truth).mean() < 0.01
    # without correction the beam profile would dominate the error
    assert np.abs(raw / raw.max() - truth).mean() > 0.05


def test_sample_stage_moves_the_projection() -> None:
    ph = TXMPhysics(make_phantom(32), pixel_size_mm=0.001)
    centred = ph.transmission(0.0, 0.0)
    shifted = ph.transmission(0.0, 0.004)  # 4 pixels
    assert centred is not None and shifted is not None
    np.testing.assert_allclose(shifted[:, 8:28], centred[:, 4:24], atol=1e-6)
    assert ph.transmission(0.0, 5.0) is None  # far out: open beam


def test_detector_rejects_bad_exposure() -> None:
    det = DetectorModel((8, 8))
    with pytest.raises(ValueError, match="exposure"):
        det.expose(None, 0.0, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="exposure"):
        det.expose(None, float("nan"), rng=np.random.default_rng())
