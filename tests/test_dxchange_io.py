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
from bluesky_lowdose.dxchange.offline import angle_difference, match_angles

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


def test_match_angles_wraps_and_respects_tolerance() -> None:
    assert angle_difference(359.9, 0.1) == pytest.approx(-0.2)
    idx = match_angles([0.0, 45.02, 90.0, 360.0, 180.0], [0.0, 45.0, 135.0], tolerance=0.05)
    assert idx.tolist() == [0, 1, -1, 0, -1]
    assert match_angles([1.0], [], 1.0).tolist() == [-1]


def test_training_pairs_correct_each_exposure_with_its_own_flats() -> None:
    from bluesky_lowdose.dxchange.offline import training_pairs

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
        "import sys, bluesky_lowdose.dxchange, bluesky_lowdose.dxchange.io, bluesky_lowdose.dxchange.offline;"
        "print(sorted(m for m in ('bluesky', 'ophyd', 'tiled', 'databroker', 'keras', 'tensorflow', 'h5py')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
