"""PSNR, SSIM and histograms with the data range fixed by the reference."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_lowdose.metrics import compare, data_range, histogram, phase_histograms, psnr, ssim


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = np.zeros((4, 32, 32))
    vol[:, 8:24, 8:24] = 0.3
    vol[:, 12:16, 12:16] = 1.0
    return vol + 0.01 * rng.standard_normal(vol.shape)


def test_identical_images(reference):
    assert psnr(reference, reference) == float("inf")
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert compare(reference[0], reference[0]) == {"psnr": float("inf"), "ssim": pytest.approx(1.0)}


def test_noisier_is_worse(reference):
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(reference.shape)
    low = compare(reference + 0.05 * noise, reference)
    high = compare(reference + 0.2 * noise, reference)
    assert high["psnr"] < low["psnr"] < 60 and high["ssim"] < low["ssim"] < 1.0
    # PSNR definition with the reference's range
    mse = np.mean((0.05 * noise) ** 2)
    assert low["psnr"] == pytest.approx(10 * np.log10(data_range(reference) ** 2 / mse))


def test_data_range_comes_from_the_reference(reference):
    rng = np.random.default_rng(2)
    test = reference + 0.05 * rng.standard_normal(reference.shape)
    scaled_test = test.copy()
    scaled_test[0, 0, 0] = 100.0  # an outlier in the test image must not change the range
    assert data_range(reference) == pytest.approx(reference.max() - reference.min())
    assert ssim(test, reference) > ssim(scaled_test, reference) - 0.01
    assert data_range(np.zeros((3, 3))) == 1.0


def test_slices_selection(reference):
    test = reference.copy()
    test[2] += 0.5
    assert psnr(test, reference, slices=[0, 1]) == float("inf")
    assert ssim(test, reference, slices=slice(0, 2)) == pytest.approx(1.0)
    assert ssim(test, reference, slices=[2]) < 1.0
    with pytest.raises(ValueError, match="no slices"):
        ssim(test, reference, slices=[])


def test_bad_inputs(reference):
    with pytest.raises(ValueError, match="shape"):
        psnr(reference, reference[:2])
    bad = reference.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ssim(bad, reference)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        psnr(reference[0, 0], reference[0, 0])


def test_histograms(reference):
    counts, edges = histogram(reference, bins=50, value_range=(-0.1, 1.1))
    assert counts.shape == (50,) and edges.shape == (51,)
    assert counts.sum() == pytest.approx(1.0)
    mask = np.zeros(reference.shape[1:], dtype=bool)
    mask[8:24, 8:24] = True
    inner, _ = histogram(reference, bins=50, value_range=(-0.1, 1.1), mask=mask)
    assert inner[np.searchsorted(edges, 0.0) - 1] < counts[np.searchsorted(edges, 0.0) - 1]
    labels = np.zeros(reference.shape, dtype=int)
    labels[:, 8:24, 8:24] = 1
    labels[:, 12:16, 12:16] = 2
    res = phase_histograms(reference, labels, bins=40)
    assert set(res["counts"]) == {0, 1, 2}
    assert res["mean"][1] == pytest.approx(0.3, abs=0.01)
    assert res["separation"]["0-1"] > 5 and res["separation"]["1-2"] > 5
    noisy = reference + 0.2 * np.random.default_rng(3).standard_normal(reference.shape)
    assert phase_histograms(noisy, labels)["separation"]["0-1"] < 1.0
