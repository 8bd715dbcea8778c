"""The lowdose_tomo_scan plan: message order, documents, metadata, validation, cleanup."""

from __future__ import annotations

import copy
import inspect
import time
from collections import Counter

import numpy as np
import pytest
from bluesky.simulators import RunEngineSimulator
from bluesky.utils import FailedStatus, RunEngineInterrupted
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis, SynSignal
from plan_helpers import SMALL, pause_after_primary_trigger

from bluesky_lowdose.plans import (
    PRIMARY,
    STREAM_ORDER,
    dose_accounting,
    lowdose_tomo_scan,
    validate_scan_parameters,
)


def _plan(txm, **kw):
    return lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, **{**SMALL, **kw})


def _collect(RE):
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def _events_by_stream(docs):
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    return [(streams[d["descriptor"]], d) for n, d in docs if n == "event"]


def test_message_order_without_hardware(txm) -> None:
    msgs = RunEngineSimulator().simulate_plan(_plan(txm))
    created = [m.kwargs["name"] for m in msgs if m.command == "create"]
    # streams come in the documented order, each as one contiguous block
    blocks = [s for i, s in enumerate(created) if i == 0 or created[i - 1] != s]
    assert tuple(blocks) == STREAM_ORDER
    assert Counter(created) == {
        "dark_long": 2, "dark_short": 2, "flat_long": 3, "flat_short": 3,
        "reference_long": 2, "reference_short": 2, PRIMARY: 7,
    }  # fmt: skip
    # darks with the shutter closed, everything else with it open; the last messages
    # close the shutter and put the stages back, then close the run
    shutter_state, seen = None, []
    for m in msgs:
        if m.command == "set" and getattr(m.obj, "shutter", m.obj) is txm.shutter:  # the pause-closing view
            shutter_state = m.args[0]
        if m.command == "create":
            seen.append((m.kwargs["name"], shutter_state))
    assert {s for name, s in seen if name.startswith("dark")} == {"close"}
    assert {s for name, s in seen if not name.startswith("dark")} == {"open"}
    tail = [(m.command, getattr(m.obj, "name", None), m.args) for m in msgs[-8:]]
    assert tail[-1][0] == "close_run"
    assert ("set", "shutter", ("close",)) in tail
    assert any(c == "set" and n == "rotation" for c, n, _ in tail)
    # the exposure is set after each staging (ophyd-async forgets it at stage): the long
    # segments (darks, flats, references) first, then the short ones and the rotation
    exposures = [m.args[0] for m in msgs if m.command == "set" and m.obj is txm.detector.exposure_time]
    assert exposures == [30.0] * 3 + [2.0] * 4


def test_documents_per_stream_and_frames(RE, txm) -> None:
    docs = _collect(RE)
    (uid,) = RE(_plan(txm))
    counts = Counter(stream for stream, _ in _events_by_stream(docs))
    assert counts == Counter(dark_long=2, dark_short=2, flat_long=3, flat_short=3,
                             reference_long=2, reference_short=2, primary=7)  # fmt: skip
    names = Counter(n for n, _ in docs)
    assert names["stream_resource"] == 7  # one HDF5 file per stream
    assert names["stream_datum"] == sum(counts.values())
    stop = docs[-1][1]
    assert docs[-1][0] == "stop" and stop["exit_status"] == "success" and stop["run_start"] == uid
    angles = [d["data"]["rotation"] for s, d in _events_by_stream(docs) if s == PRIMARY]
    np.testing.assert_allclose(angles, np.linspace(0, 180, 7))
    refs = [d["data"]["rotation"] for s, d in _events_by_stream(docs) if s.startswith("reference")]
    assert refs == [30.0, 120.0, 30.0, 120.0]
    # exposure time is configuration of the descriptors, and differs per stream
    expo = {d["name"]: d["configuration"]["txm_cam"]["data"]["txm_cam_exposure_time"]
            for n, d in docs if n == "descriptor"}  # fmt: skip
    assert expo["dark_long"] == expo["reference_long"] == 30.0
    assert expo["dark_short"] == expo[PRIMARY] == 2.0
    # frames in the files are what physics says: darks dark, flats brightest, primary between
    means = {s: [] for s in STREAM_ORDER}
    for s, d in _events_by_stream(docs):
        means[s].append(d["data"]["txm_cam_mean_counts"])
    assert max(means["dark_short"]) < min(means[PRIMARY]) < max(means[PRIMARY]) < min(means["flat_short"])
    assert np.mean(means["reference_long"]) > 10 * np.mean(means["reference_short"]) - 1000
    # the devices are back and the shutter is closed
    assert txm.shutter.state.get() == 0
    assert txm.rotation.position == 0.0 and txm.sample_stage.position == 0.0


def test_start_metadata_and_md_not_mutated(RE, txm) -> None:
    docs = _collect(RE)
    md = {"sample": "test", "nested": {"a": 1}}
    before = copy.deepcopy(md)
    RE(_plan(txm, md=md))
    assert md == before
    start = docs[0][1]
    assert start["plan_name"] == "lowdose_tomo_scan"
    assert start["sample"] == "test" and start["nested"] == {"a": 1}
    assert start["plan_args"]["num_angles"] == 7
    assert start["plan_args"]["reference_angles"] == [30.0, 120.0]
    assert start["plan_pattern"] == "linspace" and start["plan_pattern_module"] == "numpy"
    assert start["plan_pattern_args"] == {"start": 0.0, "stop": 180.0, "num": 7}
    dose = start["lowdose"]["dose"]
    assert dose["sample_exposure_s"] == pytest.approx(7 * 2.0 + 2 * (2.0 + 30.0))
    assert dose["conventional_exposure_s"] == pytest.approx(7 * 30.0)
    assert dose["dose_ratio"] == pytest.approx(210.0 / 78.0)
    assert start["lowdose"]["streams"] == list(STREAM_ORDER)


def test_dose_ratio_of_the_default_scan_is_about_twelve() -> None:
    # the plan's default pairs: four (auto judges the pair-trained methods leave-one-out, docs/plans.md)
    default = inspect.signature(lowdose_tomo_scan).parameters["reference_angles"].default
    assert default == (0.0, 45.0, 90.0, 135.0)
    p = validate_scan_parameters(
        start=0,
        stop=180,
        num_angles=361,
        short_exposure=2.0,
        long_exposure=30.0,
        reference_angles=default,
        num_darks=10,
        num_flats=10,
        flat_position=5.0,
    )
    d = dose_accounting(p)
    assert d["dose_ratio"] == pytest.approx(361 * 30.0 / (361 * 2.0 + 4 * 32.0))
    assert 12 < d["dose_ratio"] < 13


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_angles": 0}, ValueError, "num_angles"),
        ({"num_angles": 1}, ValueError, "num_angles"),
        ({"num_angles": 7.5}, TypeError, "num_angles"),
        ({"reference_angles": (30.0, 200.0)}, ValueError, "outside"),
        ({"reference_angles": (30.0, 30.0)}, ValueError, "duplicate"),
        ({"reference_angles": "30"}, TypeError, "reference_angles"),
        ({"short_exposure": 0.0}, ValueError, "positive"),
        ({"short_exposure": -1.0}, ValueError, "positive"),
        ({"short_exposure": 30.0, "long_exposure": 2.0}, ValueError, "longer"),
        ({"short_exposure": float("nan")}, ValueError, "finite"),
        ({"num_darks": -1}, ValueError, "num_darks"),
        ({"num_flats": -2}, ValueError, "num_flats"),
        ({"start": 10.0, "stop": 10.0}, ValueError, "differ"),
        # absurd but finite (an outside campaign ran these): refused with the range, as at item_add
        ({"stop": 1e308}, ValueError, r"stop=1e\+308° is outside \[-360, 360\]°"),
        ({"short_exposure": 1e-300}, ValueError, r"short_exposure=1e-300 s is outside"),
        ({"long_exposure": 1e9}, ValueError, "long_exposure"),
        ({"flat_position": 1e308}, ValueError, r"flat_position=1e\+308 is outside"),
        ({"num_angles": 10**9}, ValueError, "num_angles must be <= 10000"),
        ({"num_darks": 10**6}, ValueError, "num_darks must be <= 1000"),
        ({"md": ["not", "a", "dict"]}, TypeError, "md"),
        (
            {"md": {"lowdose": {"dose_ratio": 100}}},
            ValueError,
            "lowdose",
        ),  # the dose accounting is the plan's
        ({"md": {"sample": {"density": float("nan")}}}, ValueError, "finite"),
        ({"md": {"tags": {"a", "b"}}}, TypeError, "JSON"),  # would leave an unserialisable start document
        ({"md": {1: "x"}}, TypeError, "non-string key"),
        ({"shutter_open": "close"}, ValueError, "both"),
        ({"shutter_open": None}, TypeError, "shutter_open"),
        ({"shutter_close": [0]}, TypeError, "shutter_close"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": "60"}, TypeError, "timeout"),
        ({"exposure_signal": object()}, TypeError, "exposure_signal"),
    ],
)
def test_bad_input_rejected_before_any_motion(RE, txm, kwargs, error, match) -> None:
    positions = (txm.rotation.position, txm.sample_stage.position, txm.shutter.state.get())
    docs = _collect(RE)
    plan = _plan(txm, **kwargs)  # one callable for IPython and the queue: checks run when it starts
    with pytest.raises(error, match=match):
        RE(plan)
    assert docs == []  # before the first message: no run was opened
    assert (txm.rotation.position, txm.sample_stage.position, txm.shutter.state.get()) == positions


class _ReadOnly:
    name = "readonly"

    def read(self):
        return {}

    def describe(self):
        return {}


def test_untriggerable_detector_rejected(txm) -> None:
    with pytest.raises(TypeError, match="Triggerable"):
        next(lowdose_tomo_scan(_ReadOnly(), txm.rotation, txm.shutter, txm.sample_stage))
    with pytest.raises(TypeError, match="Movable"):
        next(lowdose_tomo_scan(txm.detector, object(), txm.shutter, txm.sample_stage))


def test_cleanup_when_the_plan_fails_mid_rotation(RE, txm) -> None:
    docs = _collect(RE)
    txm.rotation.set(5.0).wait()
    txm.sample_stage.set(0.25).wait()
    calls = {"n": 0}
    original = txm.detector.trigger

    def failing_trigger():
        calls["n"] += 1
        if calls["n"] == 2 * (2 + 3 + 2) + 3:  # third frame of the rotation
            raise RuntimeError("detector fell over")
        return original()

    txm.detector.trigger = failing_trigger
    with pytest.raises(RuntimeError, match="fell over"):
        RE(_plan(txm))
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "fail"
    assert txm.shutter.state.get() == 0
    assert txm.rotation.position == 5.0
    assert txm.sample_stage.position == 0.25


def test_abort_closes_shutter_and_returns_stages(RE, txm) -> None:
    docs = _collect(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(pause_after_primary_trigger(_plan(txm), txm, 3))
    assert RE.state == "paused"
    RE.abort("test abort")
    assert docs[-1][1]["exit_status"] == "abort"
    assert txm.shutter.state.get() == 0
    assert txm.rotation.position == 0.0 and txm.sample_stage.position == 0.0


@pytest.mark.parametrize("between", ["trigger", "read"])
def test_pause_resume_gives_no_duplicate_or_missing_frames(RE, txm, between) -> None:
    docs = _collect(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(pause_after_primary_trigger(_plan(txm), txm, 4, command=between))
    assert RE.state == "paused"
    RE.resume()
    primary = [d for s, d in _events_by_stream(docs) if s == PRIMARY]
    assert [d["seq_num"] for d in primary] == list(range(1, 8))
    np.testing.assert_allclose([d["data"]["rotation"] for d in primary], np.linspace(0, 180, 7))
    # the frame re-taken after the rewind replaced the one whose event was never emitted:
    # file rows are announced once each, contiguously, one per event
    datums = [d for n, d in docs if n == "stream_datum"]
    by_resource: dict[str, list[tuple[int, int]]] = {}
    for d in datums:
        by_resource.setdefault(d["stream_resource"], []).append((d["indices"]["start"], d["indices"]["stop"]))
    for ranges in by_resource.values():
        assert ranges == [(i, i + 1) for i in range(len(ranges))]
    assert len(datums) == len(_events_by_stream(docs))
    assert docs[-1][1]["exit_status"] == "success"
    # and each primary row of the file is the frame of its event's angle
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    descs = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    prim = [d for d in datums if descs[d["descriptor"]] == PRIMARY]
    path = resources[prim[0]["stream_resource"]]["uri"].replace("file://localhost", "")
    import h5py

    with h5py.File(path, "r") as f:
        rows = f["/entry/data/data"][:]
    assert rows.shape[0] == 7
    for event, row in zip(primary, rows, strict=True):
        ideal = txm.physics.ideal_frame(event["data"]["rotation"], 2.0)
        others = [
            txm.physics.ideal_frame(a, 2.0) for a in np.linspace(0, 180, 7) if a != event["data"]["rotation"]
        ]
        err = np.abs(row - ideal).mean()
        assert all(err < np.abs(row - o).mean() for o in others)


class _PlainCamera(Device):
    """Not ours: an ophyd device with an inline image and an exposure signal."""

    exposure_time = Cpt(Signal, value=1.0, kind="config")
    image = Cpt(SynSignal, func=lambda: np.ones((4, 5)), kind="hinted")


class _Shutter(SynAxis):
    def set(self, value):
        return super().set(1.0 if value == "open" else 0.0)


def test_plan_runs_on_other_protocol_devices(RE) -> None:
    docs = _collect(RE)
    cam = _PlainCamera(name="cam")
    rot, samp, shut = SynAxis(name="rot"), SynAxis(name="samp"), _Shutter(name="shut")
    RE(lowdose_tomo_scan(cam, rot, shut, samp, **SMALL))
    counts = Counter(s for s, _ in _events_by_stream(docs))
    assert counts[PRIMARY] == 7 and counts["reference_short"] == 2
    assert shut.position == 0.0


def test_failed_status_is_a_failure_not_a_hang(RE, txm) -> None:
    """A move that fails ends the run as 'fail' with the shutter closed."""
    docs = _collect(RE)
    original = txm.rotation.set

    def bad_set(value, **kw):
        if value > 100:
            raise FailedStatus("limit switch")
        return original(value, **kw)

    txm.rotation.set = bad_set
    with pytest.raises(FailedStatus):
        RE(_plan(txm))
    assert docs[-1][1]["exit_status"] == "fail"
    assert txm.shutter.state.get() == 0


def test_pause_closes_the_shutter_and_resume_reopens_it(RE, txm) -> None:
    """No dose while paused: the shutter is closed during the pause and open again for the
    frames after it; every primary frame is a bright (open-shutter) frame."""
    docs = _collect(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(pause_after_primary_trigger(_plan(txm), txm, 3))
    assert RE.state == "paused"
    assert txm.shutter.state.get() == 0  # closed by the pause, not by the plan's end
    RE.resume()
    assert docs[-1][1]["exit_status"] == "success"
    darks = [d["data"]["txm_cam_mean_counts"] for s, d in _events_by_stream(docs) if s == "dark_short"]
    primary = [d["data"]["txm_cam_mean_counts"] for s, d in _events_by_stream(docs) if s == PRIMARY]
    flats = [d["data"]["txm_cam_mean_counts"] for s, d in _events_by_stream(docs) if s == "flat_short"]
    assert len(primary) == 7
    # reopened before the next exposure: no primary frame is a dark one
    assert min(primary) > max(darks) + 0.3 * (min(flats) - max(darks))
    # the dose block of the start document stays true: no frame taken while paused
    assert docs[0][1]["lowdose"]["dose"]["sample_exposure_s"] == pytest.approx(7 * 2.0 + 2 * (2.0 + 30.0))


def test_abort_while_paused_keeps_the_shutter_closed(RE, txm) -> None:
    docs = _collect(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(pause_after_primary_trigger(_plan(txm), txm, 2))
    assert txm.shutter.state.get() == 0
    RE.abort("beam lost")
    assert docs[-1][1]["exit_status"] == "abort" and txm.shutter.state.get() == 0


class _NumericShutter(SynAxis):
    """A caller's shutter that only takes 1/0 (as many EPICS shutters do)."""

    def set(self, value):
        if isinstance(value, str) or value not in (0, 1):
            raise ValueError(f"shutter takes 1 or 0, got {value!r}")
        return super().set(float(value))


class _BareCamera(Device):
    """A camera with no exposure attribute of its own: the caller passes the signal."""

    image = Cpt(SynSignal, func=lambda: np.ones((4, 5)), kind="hinted")


def test_caller_devices_with_numeric_shutter_and_exposure_signal(RE) -> None:
    docs = _collect(RE)
    cam, expo = _BareCamera(name="cam"), Signal(name="cam_exposure", value=0.0)
    rot, samp, shut = SynAxis(name="rot"), SynAxis(name="samp"), _NumericShutter(name="shut")
    seen: list[float] = []
    expo.subscribe(lambda value, **_: seen.append(value), run=False)
    RE(
        lowdose_tomo_scan(
            cam, rot, shut, samp, shutter_open=1, shutter_close=0, exposure_signal=expo, **SMALL
        )
    )
    assert docs[-1][1]["exit_status"] == "success"
    assert Counter(s for s, _ in _events_by_stream(docs))[PRIMARY] == 7
    assert set(seen) == {30.0, 2.0} and seen[-1] == 2.0
    assert shut.position == 0.0
    assert docs[0][1]["plan_args"]["shutter_open"] == 1
    # without the signal, the plan says what it needs before anything moves
    with pytest.raises(TypeError, match="exposure_signal"):
        RE(lowdose_tomo_scan(cam, rot, shut, samp, shutter_open=1, shutter_close=0, **SMALL))
    # and the default "open"/"close" reach this shutter as a failure, not a hang
    with pytest.raises(ValueError, match="1 or 0"):
        RE(lowdose_tomo_scan(cam, rot, shut, samp, exposure_signal=expo, **SMALL))
    assert docs[-1][1]["exit_status"] == "fail"


def test_a_move_that_takes_too_long_fails_with_the_motor_named(RE, tmp_path) -> None:
    from bluesky_lowdose.devices import make_devices

    txm = make_devices(tmp_path, size=16)
    txm.rotation.delay = 0.6  # a rotation slower than the plan allows
    docs = _collect(RE)
    with pytest.raises(TimeoutError, match="rotation moving to"):
        RE(_plan(txm, timeout=0.2))
    stop = docs[-1][1]
    assert stop["exit_status"] == "fail" and "rotation" in stop["reason"]
    assert txm.shutter.state.get() == 0
    time.sleep(0.7)  # let the simulated motion finish before the RunEngine's loop closes
