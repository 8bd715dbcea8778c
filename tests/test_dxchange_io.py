"""Data Exchange files: round trips, and bad files rejected with messages that say what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from bluesky_lowdose.dxchange import (
    DX_PATHS,
    DataExchange,
    DataExchangeError,
    read_dxfile,
    write_dxfile,
    write_enhanced,
)
from bluesky_lowdose.pipeline import angles as pipeline_angles
from bluesky_lowdose.pipeline.angles import angle_difference, match_angles

RNG = np.random.default_rng(0)


def _full() -> DataExchange:
    shape = (12, 16)
    return DataExchange(
        data=RNG.integers(100, 4000, (5, *shape), dtype=np.uint16),
        theta=np.linspace(0.0, 180.0, 5),
        data_white=RNG.integers(3000, 4000, (3, *shape), dtype=np.uint16),
        data_dark=RNG.integers(90, 110, (2, *shape), dtype=np.uint16),
        exposure_time=2.0,
        reference_short=RNG.integers(100, 4000, (2, *shape), dtype=np.uint16),
        reference_long=RNG.integers(1000, 60000, (2, *shape), dtype=np.uint16),
        reference_theta=np.array([45.0, 135.0]),
        data_white_long=RNG.integers(50000, 60000, (3, *shape), dtype=np.uint16),
        data_dark_long=RNG.integers(900, 1100, (2, *shape), dtype=np.uint16),
        exposure_time_long=30.0,
        sample_name="needle-7",
        run_uid="abc-123",
        metadata={"start": {"uid": "abc-123", "scan_id": 4, "lowdose": {"short_exposure": 2.0}}},
        provenance={"architecture": "unet", "model_hash": "f00", "nested": [1, 2.5, None]},
    )


def test_round_trip_keeps_arrays_angles_and_metadata(tmp_path: Path) -> None:
    dx = _full()
    path = write_dxfile(tmp_path / "scan.h5", dx)
    back = read_dxfile(path)
    for name in ("data", "data_white", "data_dark", "reference_short", "reference_long"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dx, name))
        assert getattr(back, name).dtype == np.uint16
    for name in ("data_white_long", "data_dark_long", "theta", "reference_theta"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dx, name))
    assert (back.exposure_time, back.exposure_time_long) == (2.0, 30.0)
    assert (back.sample_name, back.run_uid) == ("needle-7", "abc-123")
    assert back.metadata == dx.metadata and back.provenance == dx.provenance
    assert back.corrected is False and back.notes == []
    with h5py.File(path, "r") as f:  # the standard places, with units
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert f["/measurement/instrument/detector/exposure_time"].attrs["units"] == "s"
        assert f["implements"][()].decode() == "exchange:measurement:process"
        assert f["/exchange/data"].chunks == (1, 12, 16)
        assert json.loads(f["/process/bluesky_lowdose/provenance"][()])["model_hash"] == "f00"
        assert f["/process/bluesky_lowdose"].attrs["model_hash"] == "f00"


def test_minimal_file_and_overwrite(tmp_path: Path) -> None:
    dx = DataExchange(data=np.ones((2, 4, 4), np.float32), theta=[0.0, 90.0])
    path = write_dxfile(tmp_path / "m.h5", dx)
    back = read_dxfile(path)
    assert back.data_white is None and back.provenance is None and back.metadata == {}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dxfile(path, dx)
    write_dxfile(path, dx, overwrite=True, compression="gzip")
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(DataExchangeError, match="data_white"):
        read_dxfile(path, require_flat_dark=True)


def test_write_enhanced_stores_transmission_without_flats(tmp_path: Path) -> None:
    enhanced = RNG.random((4, 8, 8)).astype(np.float32)
    prov = {"kind": "test", "enhancer": {"architecture": "unet", "model_hash": "abc"}}
    path = write_enhanced(
        tmp_path / "e.h5",
        enhanced,
        [0, 45, 90, 135],
        prov,
        reference_long=enhanced[:1],
        reference_theta=[0.0],
        run_uid="u1",
    )
    back = read_dxfile(path, require_flat_dark=True)  # corrected data need no flats
    assert back.corrected and back.data_white is None and back.data_dark is None
    np.testing.assert_array_equal(back.data, enhanced)
    assert back.data.dtype == np.float32
    assert back.provenance == prov and back.run_uid == "u1"
    with h5py.File(path, "r") as f:
        assert f["/exchange/data"].attrs["units"] == "transmission"
        assert f["/exchange"].attrs["corrected"]
        assert f["/process/bluesky_lowdose"].attrs["model_hash"] == "abc"
        assert "exchange_1" not in f and f["implements"][()].decode() == "exchange:measurement:process"


def test_write_enhanced_with_a_reconstruction(tmp_path: Path) -> None:
    volume = RNG.random((8, 12, 12)).astype(np.float32)
    path = write_enhanced(
        tmp_path / "r.h5",
        RNG.random((3, 8, 12)).astype(np.float32),
        [0.0, 60.0, 120.0],
        {"kind": "test"},
        reconstruction=volume,
        data_description="projections, not enhanced",
    )
    back = read_dxfile(path)
    np.testing.assert_array_equal(back.reconstruction, volume)
    assert back.data_description == "projections, not enhanced"
    with h5py.File(path, "r") as f:  # Data Exchange: processed data in an additional exchange_N group
        assert f["/exchange_1/data"].attrs["axes"] == "z:y:x"
        assert f["/exchange_1/data"].attrs["units"] == "1/pixel"
        assert f["/exchange_1/title"][()].decode() == "tomography reconstruction"
        assert f["implements"][()].decode() == "exchange:exchange_1:measurement:process"
    with pytest.raises(DataExchangeError, match=r"exchange_1/data must be a 3-D stack \(z, y, x\)"):
        write_enhanced(tmp_path / "bad.h5", volume[:3], [0, 1, 2], {}, reconstruction=volume[0])


# -- bad files -------------------------------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    dx = _full()
    dx.data = dx.data.astype(np.float32)
    return write_dxfile(tmp_path / "good.h5", dx)


def _replace(path: Path, where: str, value: object, **attrs: str) -> None:
    with h5py.File(path, "a") as f:
        del f[where]
        ds = f.create_dataset(where, data=value)
        ds.attrs.update(attrs)


def _delete(where: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with h5py.File(path, "a") as f:
            del f[where]

    return edit


def _set(where: str, value: object, **attrs: str) -> Callable[[Path], None]:
    return lambda path: _replace(path, where, value if isinstance(value, str) else np.asarray(value), **attrs)


def _nan_in(where: str, value: float) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with h5py.File(path, "a") as f:
            arr = f[where][()].astype(np.float32)
            arr[0, 1, 2] = value
            del f[where]
            f.create_dataset(where, data=arr)

    return edit


BAD_CASES = {
    "no data": (_delete("/exchange/data"), "has no /exchange/data"),
    "no theta": (_delete("/exchange/theta"), "has no /exchange/theta"),
    "white frames differ": (
        _set("/exchange/data_white", np.ones((2, 12, 15))),
        r"data_white has frames of \(12, 15\)",
    ),
    "dark frames differ": (_set("/exchange/data_dark", np.ones((2, 11, 16))), "data_dark has frames"),
    "data not 3-D": (_set("/exchange/data", np.ones((12, 16))), "must be a 3-D stack"),
    "complex data": (_set("/exchange/data", np.ones((5, 12, 16), np.complex64)), "complex64.*real numbers"),
    "boolean darks": (_set("/exchange/data_dark", np.ones((2, 12, 16), bool)), "data_dark has dtype bool"),
    "string theta": (_set("/exchange/theta", np.array([b"a"] * 5), units="degrees"), "angles must be real"),
    "NaN in data": (_nan_in("/exchange/data", np.nan), "/exchange/data contains 1 NaN or infinite"),
    "inf in flats": (_nan_in("/exchange/data_white", np.inf), "data_white contains 1 NaN or infinite"),
    "NaN angle": (_set("/exchange/theta", [0, 1, np.nan, 3, 4], units="degrees"), "NaN or infinite angles"),
    "theta too short": (
        _set("/exchange/theta", [0.0, 90.0, 180.0], units="degrees"),
        "3 angles but .* 5 frames",
    ),
    "reference theta count": (
        _set("/exchange/reference_theta", [45.0], units="degrees"),
        "reference_theta has 1 angles but /exchange/reference_short has 2",
    ),
    "no reference theta": (_delete("/exchange/reference_theta"), "needs /exchange/reference_theta"),
    "unknown angle unit": (_set("/exchange/theta", np.linspace(0, 180, 5), units="grad"), "units 'grad'"),
    "ambiguous angles": (
        _set("/exchange/theta", np.linspace(0, np.pi, 5)),
        "could be radians .* theta_units",
    ),
    "small unlabelled angles": (_set("/exchange/theta", np.linspace(0, 1.5, 5)), "no 'units' attribute"),
    "bad exposure": (_set(DX_PATHS["exposure_time"], -1.0, units="s"), "positive number of seconds"),
    "exposure in hours": (_set(DX_PATHS["exposure_time"], 1.0, units="h"), "units 'h'"),
    "bad provenance": (_set(DX_PATHS["provenance"], "{not json"), "provenance is not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_files_are_rejected_with_a_clear_message(tmp_path: Path, case: str) -> None:
    edit, message = BAD_CASES[case]
    path = _good(tmp_path)
    edit(path)
    with pytest.raises(DataExchangeError, match=message) as info:
        read_dxfile(path)
    assert str(path) in str(info.value)


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(DataExchangeError, match="not a readable HDF5 file"):
        read_dxfile(tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError):
        read_dxfile(tmp_path / "nope.h5")


def test_theta_units(tmp_path: Path) -> None:
    path = _good(tmp_path)
    rad = np.linspace(0, np.pi, 5)
    _replace(path, "/exchange/theta", rad, units="radians")
    dx = read_dxfile(path)
    np.testing.assert_allclose(dx.theta, np.linspace(0, 180, 5))
    assert dx.notes == ["/exchange/theta converted from radians to degrees"]
    np.testing.assert_allclose(read_dxfile(path, theta_units="degrees").theta, np.linspace(0, 180, 5))
    _replace(path, "/exchange/theta", rad)  # no units: ambiguous unless told
    np.testing.assert_allclose(read_dxfile(path, theta_units="radians").theta, np.linspace(0, 180, 5))
    np.testing.assert_allclose(read_dxfile(path, theta_units="degrees").theta, rad)
    _replace(path, "/exchange/theta", np.linspace(0, 180, 5))  # no units, > 2 pi: degrees
    np.testing.assert_allclose(read_dxfile(path).theta, np.linspace(0, 180, 5))
    _replace(path, "/exchange/theta", np.zeros(5))  # all zero: the same either way
    assert read_dxfile(path).theta.tolist() == [0.0] * 5
    _replace(path, "/exchange/theta", np.linspace(0, 180, 5), units=b"deg")  # bytes attribute
    np.testing.assert_allclose(read_dxfile(path).theta, np.linspace(0, 180, 5))


def test_write_rejects_inconsistent_content(tmp_path: Path) -> None:
    dx = DataExchange(
        data=np.ones((2, 4, 4)), theta=[0.0, 1.0], data_white=np.ones((1, 4, 4)), corrected=True
    )
    with pytest.raises(DataExchangeError, match=r"corrected .* cannot come with flats"):
        write_dxfile(tmp_path / "c.h5", dx)
    dx = DataExchange(data=np.ones((2, 4, 4)), theta=[0.0, 1.0], metadata={"x": object()})
    with pytest.raises(DataExchangeError, match="metadata is not JSON"):
        write_dxfile(tmp_path / "c.h5", dx)
    dx = DataExchange(data=np.ones((0, 4, 4)), theta=[])
    with pytest.raises(DataExchangeError, match="no projections"):
        write_dxfile(tmp_path / "c.h5", dx)
    assert not list(tmp_path.iterdir())


def test_a_planted_partial_file_or_symlink_is_never_clobbered(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".scan.h5.partial").symlink_to(victim)  # the name the writer used to use
    path = write_dxfile(tmp_path / "scan.h5", _full())
    assert victim.read_text() == "precious"
    assert read_dxfile(path).sample_name == "needle-7"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scan.h5.partial", "scan.h5", "victim.txt"]


def test_written_files_follow_the_umask_without_touching_it(tmp_path: Path, monkeypatch) -> None:
    """The file gets the mode any new file gets (0666 less the umask), and the process-wide umask
    is never flipped to read it (other threads creating files meanwhile would get mode 0666)."""
    import os
    import stat

    calls: list[int] = []
    real_umask = os.umask
    old = real_umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
        path = write_dxfile(tmp_path / "scan.h5", _full())
    finally:
        monkeypatch.undo()
        real_umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert calls == []


def _with_external(tmp_path: Path, kind: str) -> Path:
    path = _good(tmp_path)
    other = tmp_path / "elsewhere.h5"
    data = read_dxfile(path).data
    with h5py.File(path, "r+") as f:
        del f[DX_PATHS["data"]]
        if kind == "link":
            with h5py.File(other, "w") as g:
                g["frames"] = data
            f[DX_PATHS["data"]] = h5py.ExternalLink(other.name, "/frames")
        else:  # external raw storage: the bytes live in another file
            raw = tmp_path / "frames.raw"
            raw.write_bytes(data.tobytes())
            f.create_dataset(DX_PATHS["data"], shape=data.shape, dtype=data.dtype,
                             external=[(raw.name, 0, h5py.h5f.UNLIMITED)])  # fmt: skip
    return path


@pytest.mark.parametrize("kind", ["link", "raw"])
def test_external_sources_are_refused_unless_allowed(tmp_path: Path, kind: str, monkeypatch) -> None:
    path = _with_external(tmp_path, kind)
    with pytest.raises(
        DataExchangeError, match="external link" if kind == "link" else "external raw storage"
    ):
        read_dxfile(path)
    monkeypatch.chdir(tmp_path)  # external raw storage is relative to the working directory
    assert read_dxfile(path, allow_external=True).data.shape[0] == 5


def test_a_huge_declared_dataset_is_refused_before_reading(tmp_path: Path) -> None:
    path = _good(tmp_path)
    with h5py.File(path, "r+") as f:
        del f[DX_PATHS["data"]]
        # 30 TiB declared, nothing written: the file stays small
        f.create_dataset(
            DX_PATHS["data"], shape=(3_840_000, 2048, 2048), dtype=np.uint16, chunks=(1, 2048, 2048)
        )
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataExchangeError, match=r"declare 30000\.\d GiB"):
        read_dxfile(path)
    path.unlink()
    with pytest.raises(DataExchangeError, match=r"GiB, more than the 0\.0 GiB"):
        read_dxfile(_good(tmp_path), max_bytes=1)


def test_match_angles_wraps_and_respects_tolerance() -> None:
    assert match_angles is pipeline_angles.match_angles  # one implementation, the pipeline's
    assert angle_difference is pipeline_angles.angle_difference
    assert angle_difference(359.9, 0.1) == pytest.approx(-0.2)
    idx = match_angles([0.0, 45.02, 90.0, 360.0, 180.0], [0.0, 45.0, 135.0], tolerance=0.05)
    assert idx.tolist() == [0, 1, -1, 0, -1]
    assert match_angles([1.0], [], 1.0).tolist() == [-1]


def test_training_pairs_correct_each_exposure_with_its_own_flats() -> None:
    from bluesky_lowdose.dxchange.pairs import training_pairs

    truth = RNG.uniform(0.2, 0.9, (3, 8, 8))
    dark_s, flat_s, dark_l, flat_l = 10.0, 210.0, 100.0, 3100.0
    dx = DataExchange(
        data=dark_s + truth * (flat_s - dark_s),
        theta=[0.0, 90.0, 180.0],
        data_white=np.full((2, 8, 8), flat_s),
        data_dark=np.full((2, 8, 8), dark_s),
        reference_long=dark_l + truth[[2, 1]] * (flat_l - dark_l),
        reference_theta=[180.0, 90.01],
        data_white_long=np.full((1, 8, 8), flat_l),
        data_dark_long=np.full((1, 8, 8), dark_l),
    ).validate()
    # no reference_short: the projections at the reference angles are the short partners
    pairs = training_pairs(dx, tolerance=0.05)
    np.testing.assert_allclose(pairs.short, truth[[2, 1]], rtol=1e-5)
    np.testing.assert_allclose(pairs.long, truth[[2, 1]], rtol=1e-5)
    assert pairs.theta.tolist() == [180.0, 90.01] and pairs.source == "extension"
    assert training_pairs(dx, reference_angles=[90.0]).theta.tolist() == [90.01]
    partial = training_pairs(dx, tolerance=0.001)
    assert partial.theta.tolist() == [180.0] and partial.unmatched == [90.01]
    dx.reference_theta = np.array([45.0, 135.0])
    with pytest.raises(DataExchangeError, match="no training pairs"):
        training_pairs(dx)
    dx.data_dark_long = None
    with pytest.raises(DataExchangeError, match="reference_long: no darks"):
        training_pairs(dx)


def test_importing_the_file_layer_loads_no_bluesky_tiled_or_keras() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bluesky_lowdose.dxchange, bluesky_lowdose.dxchange.io, bluesky_lowdose.dxchange.pairs,"
        " bluesky_lowdose.dxchange.offline;"
        "print(sorted(m for m in ('bluesky', 'ophyd', 'tiled', 'databroker', 'keras', 'tensorflow', 'h5py')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- offline enhancement through the pipeline ------------------------------------------------------

SIZE, N_ANGLES, REF_INDEX = 32, 12, [2, 8]
N2I = {"steps": 30, "crop": 32, "batch_size": 16}
FAST_TRAINING = {"patch_size": 16, "stride": 8}


def _raw_scan(*, references: bool, n_flats: int = 4, seed: int = 0) -> DataExchange:
    """A 32^3 cube-of-spheres scan as raw counts (gain 2 ADU/photon), short exposure 1 s, long 20 s."""
    from bluesky_lowdose.physics.phantom import make_phantom

    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, 180.0, N_ANGLES, endpoint=False)
    li = make_phantom(SIZE, seed=seed).project_many(theta) * 0.1

    def counts(line_integrals: np.ndarray, photons: float, offset: float) -> np.ndarray:
        signal = rng.poisson(photons * np.exp(-line_integrals)) * 2.0 + offset
        return (signal + rng.normal(0.0, 2.0, line_integrals.shape)).astype(np.float32)

    open_beam, shape = np.zeros((n_flats, SIZE, SIZE)), (n_flats, SIZE, SIZE)
    long = {}
    if references:
        long = {
            "reference_long": counts(li[REF_INDEX], 2000.0, 140.0),
            "reference_theta": theta[REF_INDEX],
            "data_white_long": counts(open_beam, 2000.0, 140.0),
            "data_dark_long": counts(np.zeros(shape), 0.0, 140.0),
            "exposure_time_long": 20.0,
        }
    return DataExchange(
        data=counts(li, 100.0, 100.0),
        theta=theta,
        data_white=counts(open_beam, 100.0, 100.0),
        data_dark=counts(np.zeros(shape), 0.0, 100.0),
        exposure_time=1.0,
        **long,
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("offline")
    return {
        "plain": write_dxfile(d / "plain.h5", _raw_scan(references=False)),
        "both": write_dxfile(d / "both.h5", _raw_scan(references=True)),
        "one_flat": write_dxfile(d / "one_flat.h5", _raw_scan(references=False, n_flats=1)),
    }


def _enhance_cli(argv: list[str]) -> int:
    import argparse

    from bluesky_lowdose.dxchange import cli as dxcli

    parser = dxcli.configure_parser(argparse.ArgumentParser())
    return dxcli.run(parser.parse_args(argv))


def test_training_pairs_use_the_pipelines_flat_policy() -> None:
    from bluesky_lowdose.dxchange.pairs import projection_flat_field, training_pairs
    from bluesky_lowdose.pipeline import flat_field

    dx = _raw_scan(references=True).validate()
    flat = projection_flat_field(dx)
    expected = flat_field(
        dx.data_white,
        dx.data_dark,
        exposure=1.0,
        long_flats=dx.data_white_long,
        long_darks=dx.data_dark_long,
        long_exposure=20.0,
    )
    assert flat.policy == "long flats scaled by the exposure ratio" and flat.exposure_ratio == 0.05
    np.testing.assert_array_equal(flat.flat, expected.flat)
    np.testing.assert_array_equal(flat.dark, expected.dark)  # the short exposure's own darks
    pairs = training_pairs(dx)
    np.testing.assert_array_equal(pairs.short, expected.correct(dx.data[REF_INDEX]))
    long_flat = flat_field(dx.data_white_long, dx.data_dark_long)  # the long frames: their own flats
    np.testing.assert_array_equal(pairs.long, long_flat.correct(dx.reference_long))
    dx.exposure_time_long = None  # without both exposure times: the exposure's own flats
    assert projection_flat_field(dx).policy == "own flats"


def test_auto_without_references_is_n2i_and_writes_a_volume(
    scans: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from bluesky_lowdose.pipeline import enhance_scan, flat_field, photon_statistics

    out = tmp_path / "n2i.h5"
    argv = [str(scans["plain"]), "--out", str(out), "--n2i-steps", "30", "--no-progress", "--json"]
    assert _enhance_cli(argv) == 0  # no --long, no references: auto -> n2i
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "n2i" and summary["volume_shape"] == [SIZE, SIZE, SIZE]
    assert summary["projections_enhanced"] is False and summary["slice_model_hash"]
    back = read_dxfile(out)
    src = read_dxfile(scans["plain"])
    flat = flat_field(src.data_white, src.data_dark, exposure=1.0)
    transmission = flat.correct(src.data)
    # /exchange/data: the corrected input (n2i enhances the reconstruction, not the projections)
    np.testing.assert_array_equal(back.data, transmission)
    assert "not enhanced" in back.data_description
    assert back.reconstruction.shape == (SIZE, SIZE, SIZE) and np.all(np.isfinite(back.reconstruction))
    prov = back.provenance
    assert prov["method"] == "n2i" and prov["pipeline"]["method"] == "n2i"
    assert prov["correction"]["projections"]["policy"] == "own flats"
    assert prov["photon_statistics"]["available"] and prov["pipeline"]["log"]["bias_correction"] is not None
    assert prov["pipeline"]["slice_step"]["model_hash"] == summary["slice_model_hash"]
    # one pipeline: the file's volume is enhance_scan's on the same corrected input, same seed
    stats = photon_statistics(src.data_white, src.data_dark)
    direct = enhance_scan(
        transmission,
        src.theta,
        method="n2i",
        input="transmission",
        open_beam_counts=stats.open_beam_counts,
        read_noise=stats.read_noise,
        n2i_options={"steps": 30},
        seed=0,
    )
    np.testing.assert_array_equal(back.reconstruction, direct.volume)


def test_paper_method_matches_enhance_scan(scans: dict[str, Path], tmp_path: Path) -> None:
    from bluesky_lowdose.dxchange.offline import enhance_file
    from bluesky_lowdose.pipeline import PROJECTION_TRAINING, enhance_scan, flat_field, photon_statistics

    model = tmp_path / "m.keras"
    result = enhance_file(
        scans["both"],
        tmp_path / "paper.h5",
        method="paper",
        epochs=2,
        train_options=FAST_TRAINING,
        save_model=model,
        progress=False,
    )
    assert result.method == "paper" and result.projections_enhanced and model.exists()
    assert result.reference_theta == read_dxfile(scans["both"]).reference_theta.tolist()
    prov = result.provenance
    assert prov["projection_training"] == {**PROJECTION_TRAINING, "epochs": 2, **FAST_TRAINING}
    assert prov["correction"]["projections"]["policy"] == "long flats scaled by the exposure ratio"
    assert prov["photon_statistics"]["exposure_ratio"] == 0.05
    assert prov["enhancer"]["epochs_run"] == 2 and prov["reference"]["source"] == "extension"
    src = read_dxfile(scans["both"])
    flat = flat_field(
        src.data_white,
        src.data_dark,
        exposure=1.0,
        long_flats=src.data_white_long,
        long_darks=src.data_dark_long,
        long_exposure=20.0,
    )
    stats = photon_statistics(src.data_white_long, src.data_dark_long, exposure_ratio=0.05)
    transmission = flat.correct(src.data)
    direct = enhance_scan(
        transmission,
        src.theta,
        short_refs=transmission[REF_INDEX],
        long_refs=flat_field(src.data_white_long, src.data_dark_long).correct(src.reference_long),
        reference_angles=src.reference_theta,
        method="paper",
        open_beam_counts=stats.open_beam_counts,
        read_noise=stats.read_noise,
        projection_training={"epochs": 2, **FAST_TRAINING},
        seed=0,
    )
    back = read_dxfile(result.path)
    np.testing.assert_array_equal(back.data, direct.projections)  # bit-identical on CPU
    np.testing.assert_array_equal(back.reconstruction, direct.volume)
    np.testing.assert_array_equal(back.reference_theta, src.reference_theta)


def test_enhance_refuses_early_and_clearly(
    scans: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    import bluesky_lowdose.pipeline as pipeline

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the inputs and the output")

    monkeypatch.setattr(pipeline, "enhance_scan", no_training)
    out = str(tmp_path / "x.h5")
    # the paper's method needs reference pairs
    assert _enhance_cli([str(scans["plain"]), "--method", "paper", "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs long/short reference pairs" in err and "no /exchange/reference_long" in err
    assert "Traceback" not in err and not Path(out).exists()
    # an output directory that does not exist, a model path that is not .keras, a model for no CNN
    cases = {
        ("--out", str(tmp_path / "missing" / "x.h5")): "does not exist",
        ("--out", str(tmp_path)): "is a directory",
        ("--out", out, "--method", "paper", "--save-model", str(tmp_path / "m.h5")): "must end with .keras",
        ("--out", out, "--method", "n2i", "--save-model", str(tmp_path / "m.keras")): "has none",
        ("--out", out, "--method", "paper", "--save-slice-model", str(tmp_path / "s.keras")): "has none",
    }
    for extra, message in cases.items():
        assert _enhance_cli([str(scans["both"]), *extra, "--no-progress"]) == 2, extra
        assert message in capsys.readouterr().err


def test_without_photon_statistics_provenance_says_why(scans: dict[str, Path], tmp_path: Path) -> None:
    from bluesky_lowdose.dxchange.offline import enhance_file

    result = enhance_file(scans["one_flat"], tmp_path / "none.h5", method="none", progress=False)
    stats = result.provenance["photon_statistics"]
    assert stats["available"] is False and "1 flats and 1 darks (>= 2 each needed)" in stats["reason"]
    assert result.provenance["pipeline"]["log"]["floor"] == "transmission 1e-06"
    assert read_dxfile(result.path).reconstruction.shape == (SIZE, SIZE, SIZE)
