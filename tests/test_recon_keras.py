"""The ``"keras"`` reconstruction backend (``keras.ops``) against the numba ``"fbp"`` backend.

Both compute the same filtered back-projection (same padding, ramp response, detector
support and linear interpolation); they differ only in float32 rounding: the order of the
sum over angles (chunks of angles vs one angle at a time), the FFT implementation, and the
detector coordinate, computed in float32 here and float64 in the numba kernel.  That is a
few float32 ulps per angle: a relative error of order ``n_angles * 6e-8`` of the partial
sums, measured at about 1e-6 of the volume's maximum for 45-61 angles on 32^3.  The
tolerance, 1e-5 of the maximum, leaves a margin of 10 and is still three orders of magnitude
below any geometric error (a half-pixel shift or a wrong angular weight changes voxels by
1e-1 of the maximum).
"""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_lowdose.physics import make_phantom
from bluesky_lowdose.recon import BACKENDS, available_backends, keras_fbp, reconstruct, resolve_backend

RTOL = 1e-5


def _projections(size: int, theta: np.ndarray) -> np.ndarray:
    return make_phantom(size, seed=3).project_many(theta)


def _assert_close(keras_rec: np.ndarray, fbp_rec: np.ndarray) -> None:
    assert keras_rec.shape == fbp_rec.shape and keras_rec.dtype == np.float32
    scale = float(np.abs(fbp_rec).max())
    assert scale > 0.1  # a real reconstruction, not zeros against zeros
    diff = float(np.abs(keras_rec - fbp_rec).max())
    assert diff < RTOL * scale, f"max |keras - fbp| = {diff:.3g} ({diff / scale:.3g} of the maximum)"


def test_keras_is_registered_last_and_never_the_default():
    assert BACKENDS[-1] == "keras"
    assert "keras" in available_backends()
    assert resolve_backend(None) != "keras"
    assert resolve_backend("keras") == "keras"


@pytest.mark.parametrize(
    ("size", "center", "filt", "mask"),
    [
        (32, None, "parzen", True),  # the defaults
        (32, 13.6, "ramp", False),  # off-centre axis, unapodised ramp, whole square compared
        (33, 17.25, "hann", False),  # odd width, off-centre the other way
    ],
)
def test_keras_matches_fbp(size, center, filt, mask):
    theta = np.linspace(0.0, 180.0, 61)
    p = _projections(size, theta)
    ref = reconstruct(p, theta, backend="fbp", center=center, filter=filt, mask=mask)
    info: dict = {}
    rec = reconstruct(p, theta, backend="keras", center=center, filter=filt, mask=mask, info=info)
    assert info["backend"] == "keras"
    _assert_close(rec, ref)


def test_keras_matches_fbp_for_irregular_angles_over_more_than_180_degrees():
    theta = np.sort(np.random.default_rng(7).uniform(0.0, 250.0, 45))
    p = _projections(32, theta)
    ref = reconstruct(p, theta, backend="fbp", center=16.4, mask=False)
    rec = reconstruct(p, theta, backend="keras", center=16.4, mask=False)
    _assert_close(rec, ref)


@pytest.mark.parametrize("contraction", ["multiply", "einsum"])
def test_both_contractions_match_fbp(contraction):
    theta = np.linspace(0.0, 180.0, 50, endpoint=False)
    p = _projections(32, theta)
    ref = reconstruct(p, theta, backend="fbp", center=15.2, filter="ramp", mask=False)
    raw = keras_fbp.fbp(p, np.deg2rad(theta), 15.2, "ramp", contraction=contraction)
    _assert_close(raw * np.float32(np.pi / theta.size), ref)
    assert keras_fbp.resolve_contraction(contraction) == contraction
    assert keras_fbp.resolve_contraction() in ("einsum", "multiply")
    with pytest.raises(ValueError, match="contraction"):
        keras_fbp.backproject(p[:, :1], np.deg2rad(theta), 15.2, 32, contraction="dense")


def test_angle_chunks_and_slice_chunks_do_not_change_the_result():
    theta = np.linspace(0.0, 180.0, 40, endpoint=False)
    p = _projections(24, theta)
    sino = np.ascontiguousarray(p[:, 8:12, :])
    whole = keras_fbp.fbp(sino, np.deg2rad(theta), 11.5, "parzen", angle_chunk=40)
    for chunk in (1, 7):  # one angle at a time, and a ragged last chunk
        np.testing.assert_allclose(
            keras_fbp.fbp(sino, np.deg2rad(theta), 11.5, "parzen", angle_chunk=chunk),
            whole,
            rtol=0,
            atol=RTOL * float(np.abs(whole).max()),
        )
    # a tiny memory budget forces one angle per chunk through the sizing path
    assert keras_fbp.angle_chunk_size(24, 4, 40, memory_bytes=1) == 1
    assert keras_fbp.angle_chunk_size(24, 4, 40, memory_bytes=1 << 40) == 40
    tiny = keras_fbp.fbp(sino, np.deg2rad(theta), 11.5, "parzen", memory_bytes=1)
    np.testing.assert_allclose(tiny, whole, rtol=0, atol=RTOL * float(np.abs(whole).max()))
    ref = reconstruct(p, theta, backend="keras", center=11.5, chunk_slices=3, mask=False)[8:12]
    np.testing.assert_allclose(
        ref, whole * np.float32(np.pi / 40), rtol=0, atol=RTOL * float(np.abs(ref).max())
    )


def test_pixels_outside_the_detector_get_nothing():
    # axis at the detector's first column: half of the image is beyond the detector's edge.
    # With a sinogram of ones a voxel counts the angles at which it lies on the detector.
    width = 16
    theta = np.deg2rad(np.array([0.0, 30.0, 60.0, 90.0]))
    sino = np.ones((theta.size, 1, width), dtype=np.float32)
    rec = keras_fbp.backproject(sino, theta, 0.0, width)
    from bluesky_lowdose.recon._kernels import backproject

    ref = backproject(sino, theta, 0.0, width)
    np.testing.assert_allclose(rec, ref, rtol=0, atol=1e-5)  # counts: 0 where numba has 0
    np.testing.assert_array_equal(rec == 0.0, ref == 0.0)
    assert rec[0, 0, 0] == 0.0  # x = y = -7.5: u < 0 at every angle
    assert rec[0, -1, -1] == theta.size  # x = y = 7.5: u in [7.5, 10.3] at every angle
    assert 0 < np.count_nonzero(rec == 0.0) < rec.size


@pytest.mark.parametrize("center", [0.0, 7.5, 15.0])
def test_rays_parallel_to_the_image_rows(center):
    # cos(theta) of 0 (within 1e-12: the kernel's special case) and of 3e-12 (huge bounds)
    width = 16
    theta = np.deg2rad(np.array([90.0, 90.0 + 2e-10, 270.0 - 2e-10, 45.0]))
    sino = np.ones((theta.size, 2, width), dtype=np.float32)
    rec = keras_fbp.backproject(sino, theta, center, width)
    from bluesky_lowdose.recon._kernels import backproject

    ref = backproject(sino, theta, center, width)
    np.testing.assert_allclose(rec, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(rec == 0.0, ref == 0.0)
