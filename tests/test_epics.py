"""Real EPICS: the caproto IOC of the microscope driven by stock ophyd classes over Channel Access.

Each test starts its own IOC (a subprocess, unique prefix, its own CA port on loopback) and
kills it at teardown; nothing is mocked.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from bluesky_lowdose._process import ChildProcess, ChildProcessFailed
from bluesky_lowdose.ioc import loopback_environment

SIZE = 32
SCAN = {
    "num_angles": 13,
    "reference_angles": (30.0, 120.0),
    "num_darks": 2,
    "num_flats": 2,
    "flat_position": 5.0,
    "short_exposure": 0.5,
    "long_exposure": 5.0,
}
FAST_TRAIN = {"epochs": 5, "patience": 5, "max_patches": 512, "seed": 0}  # plumbing, as test_streaming
#: The streamed scan: at 32 px (or with 2 reference angles) 20 epochs leave the paper's CNN
#: worse than raw on its own pairs, and the enhancer then rightly reports the run "partial".
STREAMED_SIZE = 48
STREAMED_SCAN = {**SCAN, "reference_angles": (0.0, 45.0, 90.0, 135.0)}


def _free_port() -> int:
    """A port free for both TCP and UDP on loopback (the IOC's CA port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the IOC")


class IOC:
    """``python -m bluesky_lowdose.ioc`` in a subprocess, on loopback with its own CA port."""

    def __init__(self, data_dir: Path, *, size: int = SIZE) -> None:
        self.prefix = f"LDT{uuid.uuid4().hex[:8]}:"
        self.env = loopback_environment(_free_port())
        self.log = data_dir.parent / f"{self.prefix[:-1]}.log"
        self.proc = ChildProcess(
            [sys.executable, "-m", "bluesky_lowdose.ioc", "--prefix", self.prefix,
             "--data-dir", str(data_dir), "--size", str(size)],
            log=self.log, env={**os.environ, **self.env}, name="IOC",
        )  # fmt: skip

    def output(self) -> str:
        """What the IOC printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll a PV until it answers (with this IOC's EPICS environment in ``os.environ``)."""
        from caproto.sync.client import read

        pv = f"{self.prefix}HDF1:PluginType_RBV"
        try:  # repeater=False: spawn no CA repeater daemon
            self.proc.wait_until(lambda: read(pv, timeout=0.5, repeater=False) is not None, timeout=timeout,
                                 what=f"{pv} of the IOC", interval=0.0)  # fmt: skip
        except ChildProcessFailed as exc:
            self.stop()
            raise TimeoutError(f"the IOC did not answer: {exc}") from None

    def kill(self) -> None:
        """SIGKILL: the IOC dies without closing anything."""
        self.proc.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self.proc.stop(timeout=10)


@pytest.fixture
def start_ioc(monkeypatch: pytest.MonkeyPatch):
    """Start IOCs (``start_ioc(data_dir)``); point this process's CA client at the last one."""
    started: list[IOC] = []

    def start(data_dir: Path, **kwargs) -> IOC:
        data_dir.mkdir(parents=True, exist_ok=True)
        ioc = IOC(data_dir, **kwargs)
        started.append(ioc)
        for key, value in ioc.env.items():  # the caproto client reads these at every search
            monkeypatch.setenv(key, value)
        ioc.wait_ready()
        return ioc

    yield start
    for ioc in started:
        ioc.stop()


def _collector(RE) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def _frames_of(docs: list[tuple[str, dict]], stream: str, key: str = "txm_cam_image") -> np.ndarray:
    """The frames the events of ``stream`` point at, read through their Resource/Datum from HDF5."""
    resources = {d["uid"]: d for n, d in docs if n == "resource"}
    datums = {d["datum_id"]: d for n, d in docs if n == "datum"}
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    frames = []
    for name, doc in docs:
        if name == "event" and doc["descriptor"] in descriptors:
            datum = datums[doc["data"][key]]
            res = resources[datum["resource"]]
            assert res["spec"] == "AD_HDF5"
            path = Path(res["root"]) / res["resource_path"]
            fpp = res["resource_kwargs"]["frame_per_point"]
            i = datum["datum_kwargs"]["point_number"]
            with h5py.File(path, "r", swmr=True) as f:
                frames.append(f["/entry/data/data"][i * fpp : (i + 1) * fpp])
    return np.concatenate(frames) if frames else np.zeros((0, SIZE, SIZE), np.uint16)


def _exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _scan(txm, **kw):
    from bluesky_lowdose.plans import lowdose_tomo_scan

    return lowdose_tomo_scan(
        txm.detector, txm.rotation, txm.shutter, txm.sample_stage, **{**SCAN, **txm.plan_kwargs(), **kw}
    )


# -- devices --------------------------------------------------------------------------------------
def test_stock_ophyd_devices_connect_move_and_take_frames_the_shutter_controls(RE, start_ioc, tmp_path):
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from ophyd import EpicsMotor, EpicsSignal

    from bluesky_lowdose.devices import make_epics_devices
    from bluesky_lowdose.devices.epics import TXMCamera

    ioc = start_ioc(tmp_path / "data")
    txm = make_epics_devices(ioc.prefix, connection_timeout=10)
    assert type(txm.rotation) is EpicsMotor and type(txm.sample_stage) is EpicsMotor
    assert type(txm.shutter) is EpicsSignal and type(txm.detector) is TXMCamera
    assert [d.name for d in (txm.detector, txm.rotation, txm.shutter, txm.sample_stage)] == [
        "txm_cam", "rotation", "shutter", "sample_x"]  # fmt: skip
    assert txm.physics is None and txm.plan_kwargs() == {"shutter_open": "Open", "shutter_close": "Close"}

    RE(bps.mv(txm.rotation, 37.5, txm.sample_stage, 0.25))
    assert txm.rotation.position == pytest.approx(37.5)
    assert txm.rotation.user_readback.get() == pytest.approx(37.5)
    assert txm.sample_stage.position == pytest.approx(0.25)
    RE(bps.mv(txm.sample_stage, 0.0))

    docs = _collector(RE)
    RE(bps.mv(txm.shutter, "Open"))
    assert txm.shutter.get() == "Open"
    RE(bp.count([txm.detector], num=2, md={"shutter": "open"}))
    RE(bps.mv(txm.shutter, "Close"))
    assert txm.shutter.get() == "Close"
    RE(bp.count([txm.detector], num=2, md={"shutter": "closed"}))

    descriptor = next(d for n, d in docs if n == "descriptor")
    key = descriptor["data_keys"]["txm_cam_image"]
    assert (
        list(key["shape"]) == [1, SIZE, SIZE]
        and key["dtype_numpy"] == "<u2"
        and key["external"] == "FILESTORE:"
    )
    assert descriptor["configuration"]["txm_cam"]["data"]["txm_cam_cam_acquire_time"] == 1.0
    starts = [i for i, (n, _) in enumerate(docs) if n == "start"]
    opened, closed = _frames_of(docs[: starts[1]], "primary"), _frames_of(docs[starts[1] :], "primary")
    assert opened.shape == closed.shape == (2, SIZE, SIZE) and opened.dtype == np.uint16
    assert opened.mean() > closed.mean() + 100 > 100, (opened.mean(), closed.mean())  # dark offset ~100
    # every trigger wrote its own frame into the file its Resource names (HDF5 files under the data dir)
    assert not np.array_equal(opened[0], opened[1])
    assert all(Path(d["root"]) == tmp_path / "data" for n, d in docs if n == "resource")


def test_missing_ioc_fails_fast_naming_the_missing_pvs(monkeypatch) -> None:
    from bluesky_lowdose.devices import make_epics_devices

    for key, value in loopback_environment(_free_port()).items():  # nobody listens on this port
        monkeypatch.setenv(key, value)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer") as info:
        make_epics_devices("NOIOC:", connection_timeout=1.0)
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert (
        "NOIOC:cam1:Acquire_RBV" in message and "NOIOC:samx.VAL" in message and "lowdose-tomo ioc" in message
    )


def test_cli_rejects_a_bad_data_dir_and_size_without_traceback(tmp_path, capsys) -> None:
    from bluesky_lowdose.cli import main

    assert main(["ioc", "--prefix", "X:", "--data-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert (
        "lowdose-tomo ioc: error: data directory" in err
        and "does not exist" in err
        and "Traceback" not in err
    )
    assert main(["ioc", "--prefix", "X:", "--data-dir", str(tmp_path), "--size", "2"]) == 2
    err = capsys.readouterr().err
    assert "size must be >= 8" in err and "Traceback" not in err


# -- the plan ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lowdose_tomo_scan_runs_on_the_epics_microscope(RE, start_ioc, tmp_path) -> None:
    from bluesky_lowdose.devices import make_epics_devices
    from bluesky_lowdose.plans import PRIMARY

    ioc = start_ioc(tmp_path / "data")
    txm = make_epics_devices(ioc.prefix, connection_timeout=10)
    docs = _collector(RE)
    t0 = time.monotonic()
    (uid,) = RE(_scan(txm, timeout=30.0))
    elapsed = time.monotonic() - t0
    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] == "success" and stop["run_start"] == uid
    streams = {d["name"] for n, d in docs if n == "descriptor"}
    assert {PRIMARY, "dark_short", "flat_short", "reference_short", "dark_long", "flat_long",
            "reference_long"} <= streams, streams  # fmt: skip
    projections = _frames_of(docs, PRIMARY)
    assert projections.shape == (SCAN["num_angles"], SIZE, SIZE)
    primary = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == PRIMARY}
    angles = [d["data"]["rotation"] for n, d in docs if n == "event" and d["descriptor"] in primary]
    np.testing.assert_allclose(angles, np.linspace(0, 180, SCAN["num_angles"]), atol=1e-3)
    darks, flats = _frames_of(docs, "dark_short"), _frames_of(docs, "flat_short")
    assert darks.mean() < projections.mean() < flats.mean()
    # the plan put the exposure into the camera, and left the microscope closed and home
    exposures = {d["name"]: d["configuration"]["txm_cam"]["data"]["txm_cam_cam_acquire_time"]
                 for n, d in docs if n == "descriptor"}  # fmt: skip
    assert exposures[PRIMARY] == SCAN["short_exposure"] and exposures["flat_long"] == SCAN["long_exposure"]
    assert txm.shutter.get() == "Close" and txm.rotation.position == pytest.approx(0.0)
    assert txm.sample_stage.position == pytest.approx(0.0)
    assert elapsed < 60, elapsed


@pytest.mark.slow
@pytest.mark.tiled
def test_streaming_enhancer_puts_the_processed_epics_run_in_tiled(
    RE, start_ioc, tiled_server, tiled_client
) -> None:
    from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
    from bluesky_lowdose.devices import make_epics_devices
    from bluesky_lowdose.plans import PRIMARY
    from bluesky_lowdose.storage import PROCESSED, RAW, make_raw_writer, stream_array

    ioc = start_ioc(Path(tiled_server.layout.detector), size=STREAMED_SIZE)  # where Tiled may read
    txm = make_epics_devices(ioc.prefix, connection_timeout=10)
    raw_writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
    enhancer = ProjectionEnhancer(
        tiled_client, method="paper", train_kwargs=FAST_TRAIN, reconstruct=False, registry="record"
    )
    RE.subscribe(raw_writer)
    RE.subscribe(enhancer)
    (uid,) = RE(_scan(txm, **STREAMED_SCAN, timeout=30.0))
    assert enhancer.wait(timeout=300) and raw_writer.flush(timeout=60)

    raw = tiled_client[RAW][uid]
    assert raw.metadata["stop"]["exit_status"] == "success"
    frames = np.asarray(stream_array(raw, PRIMARY, "txm_cam_image").read())
    assert frames.shape[0] == SCAN["num_angles"] and frames.shape[-2:] == (STREAMED_SIZE, STREAMED_SIZE)
    res = enhancer.results[uid]
    assert res.status == "complete", res.reasons
    processed = tiled_client[PROCESSED][res.processed_uid]
    assert processed.metadata["start"]["original_run_uid"] == uid
    assert processed.metadata["stop"]["exit_status"] == "success"
    enhanced = stream_array(processed, "enhanced", "enhanced_image").read()
    assert enhanced.shape == (SCAN["num_angles"], STREAMED_SIZE, STREAMED_SIZE)
    np.testing.assert_allclose(
        stream_array(processed, "enhanced", "angle").read(),
        np.linspace(0, 180, SCAN["num_angles"]),
        atol=1e-3,
    )


# -- faults -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.tiled
def test_ioc_killed_mid_rotation_ends_the_run_and_keeps_the_frames_taken(
    RE, start_ioc, tiled_server, tiled_client
) -> None:
    from bluesky.utils import RunEngineInterrupted

    from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
    from bluesky_lowdose.devices import make_epics_devices
    from bluesky_lowdose.plans import PRIMARY
    from bluesky_lowdose.storage import PROCESSED, RAW, make_raw_writer, stream_array

    ioc = start_ioc(Path(tiled_server.layout.detector))
    txm = make_epics_devices(ioc.prefix, connection_timeout=10)
    txm.rotation.velocity.put(30.0)  # 0.5 s per 15 deg step: time to catch the stage moving
    raw_writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
    enhancer = ProjectionEnhancer(
        tiled_client, method="paper", train_kwargs=FAST_TRAIN, reconstruct=False, registry="record"
    )
    RE.subscribe(raw_writer)
    RE.subscribe(enhancer)
    docs = _collector(RE)
    kill_after = 5
    killed = threading.Event()
    primary: set[str] = set()

    def kill_during_the_next_move(name, doc):
        if name == "descriptor" and doc["name"] == PRIMARY:
            primary.add(doc["uid"])
        if name == "event" and doc["descriptor"] in primary and doc["seq_num"] == kill_after:

            def watch():
                deadline = time.monotonic() + 10
                while not txm.rotation.moving and time.monotonic() < deadline:
                    time.sleep(0.002)
                ioc.kill()
                killed.set()

            threading.Thread(target=watch, daemon=True).start()

    RE.subscribe(kill_during_the_next_move)
    t0 = time.monotonic()
    with pytest.raises((Exception, RunEngineInterrupted)) as info:  # the fault, re-raised by the RunEngine
        RE(_scan(txm, timeout=5.0))
    elapsed = time.monotonic() - t0
    assert killed.is_set() and ioc.proc.returncode == -signal.SIGKILL
    assert elapsed < 90, f"the plan took {elapsed:.0f} s to give up"
    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] in ("fail", "abort") and stop["reason"], stop

    # the frames taken before the fault are on disk, and in Tiled
    taken = _frames_of(docs, PRIMARY)
    assert taken.shape == (kill_after, SIZE, SIZE) and taken.mean() > 0
    assert enhancer.wait(timeout=300) and raw_writer.flush(timeout=60)
    uid = stop["run_start"]
    raw = tiled_client[RAW][uid]
    assert raw.metadata["stop"]["exit_status"] == stop["exit_status"]
    np.testing.assert_array_equal(
        np.asarray(stream_array(raw, PRIMARY, "txm_cam_image").read()).reshape(taken.shape), taken
    )
    res = enhancer.results[uid]
    assert res.status == "partial" and res.reasons, res.reasons
    assert any(
        f"of {SCAN['num_angles']} projections" in r or stop["exit_status"] in r for r in res.reasons
    ), res.reasons
    processed = tiled_client[PROCESSED][res.processed_uid]
    assert processed.metadata["stop"]["exit_status"] == "fail" and processed.metadata["stop"]["reason"]
    # the reason is the fault (the rotation never arrived), not an error of the clean-up after it
    chain = _exception_chain(info.value)
    causes = [f"{type(e).__name__}: {e}" for e in chain]
    assert "rotation" in stop["reason"], (stop["reason"], causes, res.reasons)


@pytest.mark.slow
def test_too_slow_rotation_fails_with_a_timeout_naming_the_motor(RE, start_ioc, tmp_path) -> None:
    from bluesky_lowdose.devices import make_epics_devices

    ioc = start_ioc(tmp_path / "data")
    txm = make_epics_devices(ioc.prefix, connection_timeout=10)
    txm.rotation.velocity.put(0.5)  # deg/s: a 15 deg step takes 30 s
    docs = _collector(RE)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        RE(_scan(txm, timeout=2.0))
    elapsed = time.monotonic() - t0
    chain = _exception_chain(info.value)
    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] == "fail", stop
    assert any(isinstance(e, TimeoutError) for e in chain), [type(e) for e in chain]
    assert "rotation" in stop["reason"] and "rotation" in str(info.value), (stop["reason"], str(info.value))
    assert elapsed < 30, f"the plan took {elapsed:.0f} s to give up on a 2 s timeout"
    assert ioc.proc.poll() is None  # the IOC is fine: only the move was too slow


# -- the beamline profile -------------------------------------------------------------------------
def test_setup_devices_with_lowdose_epics_prefix_gives_the_epics_devices(start_ioc, tmp_path, monkeypatch):
    from ophyd import EpicsMotor, EpicsSignal

    from bluesky_lowdose.beamline import ENV, BeamlineConfig, setup_devices, setup_plans
    from bluesky_lowdose.devices.epics import TXMCamera

    ioc = start_ioc(tmp_path / "data")
    monkeypatch.setenv("LOWDOSE_EPICS_PREFIX", ioc.prefix)
    assert ENV["epics_prefix"] == "LOWDOSE_EPICS_PREFIX"
    config = BeamlineConfig.from_env(data_dir=tmp_path / "beamline")
    assert config.epics_prefix == ioc.prefix
    namespace = setup_devices(config)
    assert type(namespace["rotation"]) is EpicsMotor and type(namespace["sample_x"]) is EpicsMotor
    assert type(namespace["shutter"]) is EpicsSignal and type(namespace["txm_cam"]) is TXMCamera
    assert namespace["txm"].plan_kwargs() == {"shutter_open": "Open", "shutter_close": "Close"}
    assert namespace["rotation"].prefix == f"{ioc.prefix}rot"
    # the profile's plan takes the EPICS shutter's values by default (the queueserver sees them)
    plan = setup_plans(namespace["txm"])["lowdose_tomo_scan"]
    params = inspect.signature(plan).parameters
    assert (params["shutter_open"].default, params["shutter_close"].default) == ("Open", "Close")
