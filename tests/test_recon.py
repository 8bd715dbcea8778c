"""Reconstruction: geometry against the analytic phantom, flat/dark correction, centre, inputs."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_lowdose.physics import Phantom, TXMPhysics, make_phantom
from bluesky_lowdose.recon import (
    available_backends,
    find_center,
    flat_dark_correct,
    reconstruct,
    remove_stripes,
    resolve_backend,
    to_line_integrals,
    transmission_to_line_integrals,
)
from bluesky_lowdose.recon.backends import angle_weight, astra_has_cuda

N = 48
THETA = np.linspace(0.0, 180.0, 121)
SPHERE = (11.0, -6.0, 4.0, 5.0)  # x, y, z, r in centred voxel coordinates


def _centred(n: int) -> np.ndarray:
    return np.arange(n) - (n - 1) / 2.0


@pytest.fixture(scope="module")
def sphere() -> Phantom:
    return Phantom(size=N, cube_half_width=0.0, spheres=np.array([SPHERE]), cube_value=0.0)


@pytest.fixture(scope="module")
def sphere_projections(sphere: Phantom) -> np.ndarray:
    return sphere.project_many(THETA)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    c = _centred(img.shape[-1])
    w = np.where(img > 0.5 * img.max(), img, 0.0)
    return float((w * c[:, None]).sum() / w.sum()), float((w * c[None, :]).sum() / w.sum())


@pytest.mark.parametrize("backend", ["nufft", "fbp", "astra", "dfi", "skimage"])
def test_off_centre_sphere_lands_where_voxelize_puts_it(backend, sphere, sphere_projections):
    filt = "ramp" if backend == "skimage" else "parzen"
    rec = reconstruct(sphere_projections, THETA, backend=backend, filter=filt)
    assert rec.shape == (N, N, N) and rec.dtype == np.float32
    x, y, z, _r = SPHERE
    c = _centred(N)
    iz = int(np.argmin(np.abs(c - z)))
    mass = np.where(rec > 0.5, rec, 0.0).sum(axis=(1, 2))
    assert abs(float((mass * c).sum() / mass.sum()) - z) < 0.5
    cy, cx = _centroid(rec[iz])
    assert abs(cy - y) < 0.5 and abs(cx - x) < 0.5
    ref_cy, ref_cx = _centroid(sphere.voxelize()[iz])
    assert abs(cy - ref_cy) < 0.5 and abs(cx - ref_cx) < 0.5
    iy, ix = int(np.argmin(np.abs(c - y))), int(np.argmin(np.abs(c - x)))
    core = rec[iz - 1 : iz + 2, iy - 1 : iy + 2, ix - 1 : ix + 2].mean()
    assert core == pytest.approx(1.0, abs=0.1)
    far = rec[iz, :, c < -5].mean()  # the half of the slice without the sphere
    assert abs(far) < 0.03


def test_cube_phantom_matches_voxelize():
    p = make_phantom(N, seed=0)
    vol = p.voxelize(supersample=2)
    rec = reconstruct(p.project_many(THETA), THETA)
    assert np.corrcoef(rec.ravel(), vol.ravel())[0, 1] > 0.93
    # the cube's grey value comes back (0.3), away from the spheres and the edges
    inner = (np.abs(vol - 0.3) < 1e-6) & (np.abs(np.roll(vol, 2, axis=2) - 0.3) < 1e-6)
    assert rec[inner].mean() == pytest.approx(0.3, abs=0.02)
    rec_ramp = reconstruct(p.project_many(THETA), THETA, filter="ramp")
    assert np.corrcoef(rec_ramp.ravel(), vol.ravel())[0, 1] > 0.97


def test_single_sinogram_and_info(sphere_projections):
    info: dict = {}
    full = reconstruct(sphere_projections[:, 27:30, :], THETA, info=info, progress=True)
    one = reconstruct(sphere_projections[:, 28, :], THETA)
    assert one.shape == (N, N)
    np.testing.assert_allclose(one, full[1], atol=1e-6)
    assert info["backend"] == resolve_backend() and info["center"] == (N - 1) / 2
    assert info["shape"] == [3, N, N] and info["filter"] == "parzen"


def test_deterministic_and_thread_independent(sphere_projections):
    a = reconstruct(sphere_projections[:, 24:32], THETA, backend="fbp", ncore=1)
    b = reconstruct(sphere_projections[:, 24:32], THETA, backend="fbp", ncore=2, chunk_slices=3)
    np.testing.assert_array_equal(a, b)


def test_mask_zeroes_outside_circle(sphere_projections):
    rec = reconstruct(sphere_projections[:, 28], THETA)
    assert rec[0, 0] == 0.0 and rec[-1, -1] == 0.0
    unmasked = reconstruct(sphere_projections[:, 28], THETA, mask=False)
    assert np.any(unmasked[0] != 0.0)


def test_angle_weight():
    assert angle_weight(np.deg2rad(np.linspace(0, 180, 181))) == pytest.approx(np.pi / 180)
    assert angle_weight(np.deg2rad(np.linspace(0, 180, 180, endpoint=False))) == pytest.approx(np.pi / 180)
    assert angle_weight(np.deg2rad(np.linspace(0, 360, 360, endpoint=False))) == pytest.approx(np.pi / 360)


def test_shifted_rotation_axis_found_and_used():
    shift = 3.0  # sample (and axis) moved +3 pixels along u: axis at column (N-1)/2 + 3
    p = make_phantom(N, seed=1)
    proj = np.stack([p.project(t, shift=shift) for t in THETA])
    true_center = (N - 1) / 2 + shift
    est = find_center(proj)
    assert abs(est - true_center) <= 0.5
    assert abs(find_center(proj[:, N // 2, :]) - true_center) <= 1.0
    vol = p.voxelize(supersample=2)
    good = reconstruct(proj, THETA, center=est)
    bad = reconstruct(proj, THETA)
    # recon at the estimated centre is the phantom, shifted by nothing (axis-centred grid)
    r_good = np.corrcoef(good.ravel(), vol.ravel())[0, 1]
    r_bad = np.corrcoef(bad.ravel(), vol.ravel())[0, 1]
    assert r_good > 0.9 and r_good > r_bad + 0.1


def test_flat_dark_correction_recovers_transmission():
    p = make_phantom(32, seed=3)
    ph = TXMPhysics(p)
    theta = [0.0, 30.0, 77.0]
    frames = np.stack([ph.ideal_frame(t, 0.5) for t in theta])
    flats = np.stack([ph.ideal_frame(0.0, 0.5, sample_offset_mm=10.0)] * 3)
    darks = np.stack([ph.ideal_frame(0.0, 0.5, shutter_open=False)] * 2)
    expected = np.exp(-ph.mu * p.project_many(theta))
    t = flat_dark_correct(frames, flats, darks)
    assert t.dtype == np.float32 and t.shape == frames.shape
    np.testing.assert_allclose(t, expected, rtol=1e-4, atol=1e-6)
    li = to_line_integrals(frames, flats, darks, average="mean")
    np.testing.assert_allclose(li, ph.mu * p.project_many(theta), atol=1e-3)
    # one 2-D frame with single 2-D flat and dark
    np.testing.assert_allclose(flat_dark_correct(frames[1], flats[0], darks[0]), expected[1], rtol=1e-4)


def test_flat_dark_correction_of_noisy_frames_is_unbiased():
    p = make_phantom(32, seed=3)
    ph = TXMPhysics(p, seed=5)
    frames = np.stack([ph.frame(45.0, 2.0) for _ in range(20)])
    flats = np.stack([ph.frame(0.0, 2.0, sample_offset_mm=10.0) for _ in range(20)])
    darks = np.stack([ph.frame(0.0, 2.0, shutter_open=False) for _ in range(10)])
    t = flat_dark_correct(frames, flats, darks).mean(axis=0)
    expected = np.exp(-ph.mu * p.project(45.0))
    assert abs(float(np.mean(t - expected))) < 0.01


def test_correction_floors_bad_pixels_and_checks_inputs():
    frames = np.full((2, 4, 4), 50.0)
    flats = np.full((3, 4, 4), 200.0)
    darks = np.full((4, 4), 100.0)
    flats[:, 0, 0] = 100.0  # dead pixel: flat == dark
    frames[0, 1, 1] = 90.0  # below dark
    t = flat_dark_correct(frames, flats, darks, floor=1e-3)
    assert t[0, 0, 0] == pytest.approx(1e-3) and t[0, 1, 1] == pytest.approx(1e-3)
    assert np.all(np.isfinite(transmission_to_line_integrals(t)))
    assert transmission_to_line_integrals(np.array([0.0]), floor=1e-6)[0] == pytest.approx(-np.log(1e-6))
    with pytest.raises(ValueError, match="frame shape"):
        flat_dark_correct(frames, np.ones((3, 5, 4)), darks)
    with pytest.raises(ValueError, match="NaN"):
        flat_dark_correct(np.full((4, 4), np.nan), flats, darks)
    nan_flats = flats.copy()
    nan_flats[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="flats"):
        flat_dark_correct(frames, nan_flats, darks)
    with pytest.raises(ValueError, match="floor"):
        flat_dark_correct(frames, flats, darks, floor=0.0)
    with pytest.raises(ValueError, match="average"):
        flat_dark_correct(frames, flats, darks, average="mode")
    with pytest.raises(ValueError, match="NaN"):
        transmission_to_line_integrals(np.array([np.nan]))
    with pytest.raises(ValueError, match="2-D frame or a 3-D"):
        flat_dark_correct(np.ones(4), flats, darks)


def test_reconstruct_rejects_bad_inputs(sphere_projections):
    p = sphere_projections[:, 27:29]
    with pytest.raises(ValueError, match="angles"):
        reconstruct(p, THETA[:-1])
    bad = p.copy()
    bad[3, 1, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(bad, THETA)
    with pytest.raises(ValueError, match="n_angles"):
        reconstruct(p[None], THETA)
    with pytest.raises(ValueError, match="center"):
        reconstruct(p, THETA, center=N + 3.0)
    with pytest.raises(ValueError, match="filter"):
        reconstruct(p, THETA, filter="gauss")
    with pytest.raises(ValueError, match="backend"):
        reconstruct(p, THETA, backend="mystery")
    with pytest.raises(ValueError, match="dfi"):
        reconstruct(p, np.linspace(0, 180, THETA.size, endpoint=False), backend="dfi")
    with pytest.raises(ValueError, match="NaN"):
        find_center(bad)
    # silent wrong results before (a volume of garbage or non-finite voxels, exit 0): now refused
    with pytest.raises(ValueError, match="1 distinct angle"):
        reconstruct(p[:1], THETA[:1])
    with pytest.raises(ValueError, match="1 distinct angle"):
        reconstruct(p, np.full(THETA.size, 30.0))
    with pytest.raises(ValueError, match="1 distinct angle"):  # 0° and 360° are one direction
        reconstruct(p[:2], [0.0, 360.0])
    with pytest.raises(TypeError, match="complex"):
        reconstruct(p + 1j * p, THETA)
    huge = p.copy()
    huge[2, 0, 5] = 1e38
    with pytest.raises(ValueError, match="overflows"):
        reconstruct(huge, THETA)
    with pytest.raises(TypeError, match="real numbers"):
        reconstruct(p.astype(object), THETA)


def test_backends_available_and_default():
    avail = available_backends()
    # nufft, fbp, skimage are dependencies; astra is the [astra] extra, which make test installs
    assert {"nufft", "fbp", "skimage", "astra"} <= set(avail)
    expected = "astra" if astra_has_cuda() else "tomopy" if "tomopy" in avail else "nufft"
    assert resolve_backend() == expected
    if "tomopy" not in avail:
        with pytest.raises(RuntimeError, match="tomopy"):
            resolve_backend("tomopy")


def test_stripe_removal_suppresses_a_ring():
    # a large centred sphere: smooth, angle-independent sinogram rows
    big = Phantom(size=N, cube_half_width=0.0, spheres=np.array([[0.5, -0.5, 0.0, 15.0]]), cube_value=0.0)
    clean = big.project_many(THETA)[:, N // 2, :]
    sino = clean.copy()
    sino[:, 5] += 0.5  # a miscalibrated pixel outside the sample: a stripe, a ring in the slice
    cleaned = remove_stripes(sino, size=9)
    assert cleaned.shape == sino.shape
    assert np.abs(cleaned - clean)[:, 5].mean() < 0.05 * 0.5
    stack = remove_stripes(np.stack([sino, sino], axis=1), size=9)
    assert stack.shape == (THETA.size, 2, N)
    np.testing.assert_allclose(stack[:, 1], cleaned, atol=1e-6)


#: Stated agreement with ``"fbp"`` inside the reconstruction circle: the largest difference (at
#: sharp edges) as a fraction of the image's range, and the RMS difference.  ``"nufft"``
#: interpolates the filtered projections band-limited where ``"fbp"`` interpolates linearly;
#: ``"astra"`` (strip projector) is another discretisation of the same FBP.
AGREEMENT = {"nufft": (0.08, 0.01), "astra": (0.05, 0.01)}


@pytest.mark.parametrize("backend", sorted(AGREEMENT))
@pytest.mark.parametrize(("width", "n_angles", "center", "span"), [
    (48, 121, None, 180.0),    # even width, the detector centre, linspace(0, 180) inclusive
    (47, 90, 21.3, 180.0),     # odd width, an off-centre axis, 180 degrees exclusive
    (40, 73, 20.6, 360.0),     # a full turn
])  # fmt: skip
def test_backend_agrees_with_fbp_inside_the_circle(backend, width, n_angles, center, span):
    most, rms = AGREEMENT[backend]
    p = make_phantom(width, seed=3)
    theta = np.linspace(0.0, span, n_angles, endpoint=span == 180.0 and width == 48)
    c = (width - 1) / 2.0 if center is None else center
    # project about the shifted axis: a centred phantom seen by a detector displaced by c - mid
    li = p.project_many(theta)
    if center is not None:
        from scipy import ndimage

        li = ndimage.shift(li, (0, 0, c - (width - 1) / 2.0), order=3, mode="nearest")
    fbp = reconstruct(li, theta, center=c, backend="fbp")
    other = reconstruct(li, theta, center=c, backend=backend)
    inside = np.hypot(*np.meshgrid(_centred(width), _centred(width))) < width / 2 - 2
    diff = (other - fbp)[:, inside]
    scale = float(np.ptp(fbp[:, inside]))
    assert np.abs(diff).max() < most * scale
    assert np.sqrt(np.mean(diff**2)) < rms * scale
    # and it is as near the truth as fbp, not just near fbp
    truth = p.voxelize(supersample=2)[:, inside]
    assert np.mean((other[:, inside] - truth) ** 2) < 1.05 * np.mean((fbp[:, inside] - truth) ** 2)


@pytest.mark.parametrize("backend", ["nufft", "astra"])
def test_parallel_backends_are_deterministic_whatever_the_threads(backend, sphere_projections):
    one = reconstruct(sphere_projections, THETA, backend=backend, ncore=1)
    three = reconstruct(sphere_projections, THETA, backend=backend, ncore=3, chunk_slices=7)
    np.testing.assert_array_equal(one, three)


def test_work_on_threads_does_every_job_and_reports_an_error():
    from bluesky_lowdose.recon._threads import run_parallel

    done = np.zeros(10, int)

    def one(i: int) -> None:
        done[i] += 1

    run_parallel(one, ((i,) for i in range(10)), workers=3)
    assert done.tolist() == [1] * 10

    def bad(i: int) -> None:
        if i == 4:
            raise ValueError("slice 4")

    with pytest.raises(ValueError, match="slice 4"):
        run_parallel(bad, ((i,) for i in range(10)), workers=2)


@pytest.mark.parametrize("center", [None, 17.3])
def test_live_preview_is_the_fbp_volumes_central_slices(center):
    """The preview's three planes, fed frame blocks as a scan delivers them, are the "fbp"
    volume's central axial, coronal and sagittal slices; binned, the frames' own are too."""
    from bluesky_lowdose.recon.preview import OrthoSlices
    from bluesky_lowdose.recon.subsets import SubsetBackprojector

    size, rows = 32, 24
    theta = np.linspace(0.0, 180.0, 49)
    li = (make_phantom(size, seed=0).project_many(theta) * (2.0 / size))[:, :rows]
    acc = SubsetBackprojector(rows, size, subsets=1, center=center)
    preview = OrthoSlices(rows, size, center=center)
    for i in range(0, len(theta), 8):
        acc.add(i, theta[i : i + 8], li[i : i + 8])
        preview.add(theta[i : i + 8], li[i : i + 8])
    volume, planes = acc.volume(), preview.images()
    assert preview.bin == 1 and preview.n_frames == len(theta)
    scale = float(np.abs(volume).max())
    for name, ref in [("axial", volume[rows // 2]), ("coronal", volume[:, size // 2, :]),
                      ("sagittal", volume[:, :, size // 2])]:  # fmt: skip
        np.testing.assert_allclose(planes[name], ref, rtol=0, atol=1e-5 * scale, err_msg=name)
    # binned by 2: the planes of the 2x2-binned frames (per original pixel: values halve back)
    small = OrthoSlices(rows, size, max_size=size // 2)
    small.add(theta, li)
    binned = li.reshape(len(theta), rows // 2, 2, size // 2, 2).mean(axis=(2, 4))
    ref = SubsetBackprojector(rows // 2, size // 2, subsets=1)
    ref.add(0, theta, binned)
    expected = ref.volume()[rows // 4] / 2
    np.testing.assert_allclose(small.images()["axial"], expected, rtol=0, atol=1e-5 * scale)


def test_live_preview_refuses_bad_frames():
    from bluesky_lowdose.recon.preview import OrthoSlices

    preview = OrthoSlices(8, 16)
    with pytest.raises(ValueError, match="no frame added yet"):
        preview.images()
    with pytest.raises(ValueError, match="do not match the detector"):
        preview.add(0.0, np.zeros((8, 15)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        preview.add(0.0, np.full((8, 16), np.nan))
    with pytest.raises(ValueError, match="angle"):
        preview.add([0.0, 1.0], np.zeros((8, 16)))
    with pytest.raises(ValueError, match="outside the detector"):
        OrthoSlices(8, 16, center=20.0)
    assert preview.n_frames == 0  # nothing refused was counted
