"""The enhancer as a service: RunEngine → 0MQ Publisher → bluesky-0MQ-proxy → ``lowdose-tomo enhancer``.

Real parts only: the proxy and the service are subprocesses, the RunEngine, the simulated TXM and
the raw-run writer run here, the processed runs land in the session's real Tiled server.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bluesky.callbacks.zmq import Publisher
from event_model import compose_run
from plan_helpers import run_engine
from tiled.queries import Key

from bluesky_lowdose._process import ChildProcess, ChildProcessFailed
from bluesky_lowdose.callbacks import ThreadedCallback
from bluesky_lowdose.devices import make_devices
from bluesky_lowdose.plans import PRIMARY, lowdose_tomo_scan
from bluesky_lowdose.storage import PROCESSED, make_raw_writer, stream_array
from bluesky_lowdose.wire import pack

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

SIZE = 32
SCAN = {"num_angles": 9, "num_darks": 2, "num_flats": 2, "reference_angles": (30.0, 120.0)}
SERVICE_ARGS = ["--method", "paper", "--epochs", "2"]
#: Seconds for the service to start (imports), to finish a run, or to close after SIGTERM.
START_TIMEOUT, RUN_TIMEOUT = 120.0, 300.0


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _Process(ChildProcess):
    """The package's child process, failing the test (with its log) when it ends or is late."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(args, log=log, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    @property
    def log(self) -> str:
        return self.log_text()

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        try:
            self.wait_until(predicate, timeout=timeout, what=what)
        except ChildProcessFailed as exc:
            pytest.fail(str(exc))

    def close(self) -> None:
        self.stop(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[_Process]]:
    """Processes started by a test; none outlives it."""
    started: list[_Process] = []
    yield started
    for p in reversed(started):
        p.close()


@pytest.fixture
def proxy(processes, tmp_path: Path) -> tuple[int, int]:
    """A ``bluesky-0MQ-proxy`` on loopback: (input port for Publishers, output port for subscribers)."""
    in_port, out_port = _free_ports(2)
    p = _Process(
        [_script("bluesky-0MQ-proxy"), "--in-address", f"127.0.0.1:{in_port}",
         "--out-address", f"127.0.0.1:{out_port}"],
        tmp_path / "proxy.log",
    )  # fmt: skip
    processes.append(p)
    p.wait_for(lambda: "Use Ctrl+C to exit" in p.log, START_TIMEOUT, "proxy start")
    return in_port, out_port


def _start_service(
    processes, tmp_path: Path, out_port: int, tiled_server, *extra: str
) -> tuple[_Process, Path]:
    ready = tmp_path / "enhancer.ready"
    args = ["enhancer", "--zmq", f"127.0.0.1:{out_port}", "--tiled-uri", tiled_server.uri,
            "--data-dir", str(tmp_path / "service-data"), "--ready-file", str(ready),
            "--volume-dir", str(tiled_server.layout.volumes),
            "--registry", "record"]  # from scratch: the session's other tests register models  # fmt: skip
    p = _Process(
        [_script("lowdose-tomo"), *args, *SERVICE_ARGS, *extra],
        tmp_path / "enhancer.log",
        env={"TILED_API_KEY": tiled_server.api_key},
    )  # fmt: skip
    processes.append(p)
    p.wait_for(ready.exists, START_TIMEOUT, "service subscribed to the proxy")
    return p, ready


def _wait_until_documents_flow(publisher: Publisher, service: _Process) -> None:
    """Publish probe runs until the service has seen one: both 0MQ connections are established.

    PUB sockets drop what they send before the peer's subscription has arrived (the slow-joiner
    problem), on the Publisher → proxy hop as on the proxy → service hop; the service's ready file
    covers only the second.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        bundle = compose_run(metadata={"plan_name": "zmq_probe"})
        publisher("start", bundle.start_doc)
        publisher("stop", bundle.compose_stop())
        seen = f"run {bundle.start_doc['uid']} (zmq_probe): not a low-dose scan"
        try:
            service.wait_for(lambda seen=seen: seen in service.log, 0.5, "probe")
            return
        except pytest.fail.Exception:
            if service.proc.poll() is not None or time.monotonic() > deadline:
                raise


class _Touch:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _scan(txm):
    return lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, **SCAN)


def _processed_run(tiled_client, raw_uid: str):
    found = tiled_client[PROCESSED].search(Key("start.original_run_uid") == raw_uid)
    assert len(found) == 1, list(found)
    return found[next(iter(found))]


def test_service_processes_a_run_published_over_0mq(processes, proxy, tiled_server, tiled_client, tmp_path):
    in_port, out_port = proxy
    service, ready = _start_service(processes, tmp_path, out_port, tiled_server, "--stop-after", "1")
    txm = make_devices(tiled_server.layout.detector, size=SIZE)
    raw_writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
    publisher = Publisher(f"127.0.0.1:{in_port}", serializer=pack)
    try:
        _wait_until_documents_flow(publisher, service)
        # hostile messages first: a pickle that would create a file when unpickled, and a name that
        # is no document kind; the service must run neither and keep going
        marker = tmp_path / "pickle-was-executed"
        publisher._socket.send(b" ".join([b"", b"start", pickle.dumps(_Touch(str(marker)))]))
        publisher._socket.send(b" ".join([b"", b"no_such_document", pack({"uid": "x"})]))
        with run_engine() as RE:
            RE.subscribe(raw_writer)
            RE.subscribe(publisher)
            (uid,) = RE(_scan(txm))
        assert raw_writer.flush(timeout=60)
        rc = service.proc.wait(timeout=RUN_TIMEOUT)  # --stop-after 1: it ends by itself
    finally:
        publisher.close()
        raw_writer.close()
    log = service.log
    assert rc == 0, log
    assert not marker.exists(), "the service unpickled a message from the proxy"
    assert "naming no document kind" in log and "Failed to deserialize the start document" in log, log
    assert f"run {uid}: processed run" in log and "1 run(s) processed (stop after 1)" in log, log
    assert "Traceback" not in log, log
    assert not ready.exists()  # removed at exit: no stale "ready" for a supervisor

    processed = _processed_run(tiled_client, uid)
    start, stop = processed.metadata["start"], processed.metadata["stop"]
    assert start["provenance"]["method"] == "paper"
    assert start["provenance"]["training_process"] == "child"  # a long-lived process keeps flat memory
    assert stop is not None  # closed
    status = "complete" if stop["exit_status"] == "success" else "partial"
    assert f"processed run {start['uid']} {status}" in log, log
    if status == "partial":  # two epochs may not beat the raw reference pairs: said so, never silently
        assert stop["exit_status"] == "fail" and stop["reason"].startswith("partial: "), stop
        assert "projections received" not in stop["reason"] and "closed before" not in stop["reason"], stop
    enhanced = stream_array(processed, "enhanced", "enhanced_image").read()
    assert enhanced.shape == (SCAN["num_angles"], SIZE, SIZE)
    assert np.isfinite(enhanced).all() and enhanced.std() > 0


def test_sigterm_mid_run_closes_the_processed_run_as_partial(
    processes, proxy, tiled_server, tiled_client, tmp_path
):
    in_port, out_port = proxy
    service, _ = _start_service(processes, tmp_path, out_port, tiled_server, "--close-timeout", "240")
    txm = make_devices(tiled_server.layout.detector, size=SIZE, seed=3)
    raw_writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
    publisher = Publisher(f"127.0.0.1:{in_port}", serializer=pack)
    state: dict = {"primary": None, "events": 0, "rc": None}

    def terminate_on_third_primary_event(name: str, doc: dict) -> None:
        """Runs in the RunEngine's thread, after the Publisher: the scan waits until the service exits."""
        if name == "descriptor" and doc["name"] == PRIMARY:
            state["primary"] = doc["uid"]
        if name == "event" and doc["descriptor"] == state["primary"]:
            state["events"] += 1
            if state["events"] == 3:
                service.proc.send_signal(signal.SIGTERM)
                try:
                    state["rc"] = service.proc.wait(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    state["rc"] = "timeout"

    try:
        _wait_until_documents_flow(publisher, service)
        with run_engine() as RE:
            RE.subscribe(raw_writer)
            RE.subscribe(publisher)
            RE.subscribe(terminate_on_third_primary_event)
            (uid,) = RE(_scan(txm))
        assert raw_writer.flush(timeout=60)
    finally:
        publisher.close()
        raw_writer.close()
    log = service.log
    assert state["rc"] == 0, log  # exited by itself within the timeout, cleanly
    assert "stopping: received SIGTERM" in log and "waiting up to 240 s for 1 open run(s)" in log, log

    processed = _processed_run(tiled_client, uid)
    stop = processed.metadata["stop"]
    assert stop is not None and stop["exit_status"] == "fail", stop
    assert stop["reason"].startswith("partial: "), stop
    assert "the enhancer was closed before the run ended" in stop["reason"], stop
    assert f"of {SCAN['num_angles']} projections received" in stop["reason"], stop
    assert f"processed run {processed.metadata['start']['uid']} partial" in log, log


def test_a_killed_service_s_open_run_is_closed_as_partial_when_it_restarts(
    processes, proxy, tiled_server, tiled_client, tmp_path
):
    """SIGKILL leaves no chance to close anything: the next service on this host closes the run."""
    in_port, out_port = proxy
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    service, _ = _start_service(processes, tmp_path / "first", out_port, tiled_server)
    txm = make_devices(tiled_server.layout.detector, size=SIZE, seed=5)
    publisher = Publisher(f"127.0.0.1:{in_port}", serializer=pack)
    state: dict = {"primary": None, "events": 0, "rc": None}

    def kill_on_third_primary_event(name: str, doc: dict) -> None:
        if name == "start":
            state["raw"] = doc["uid"]
        if name == "descriptor" and doc["name"] == PRIMARY:
            state["primary"] = doc["uid"]
        if name == "event" and doc["descriptor"] == state["primary"]:
            state["events"] += 1
            if state["events"] == 3:  # the processed run is open in Tiled: kill its writer

                def opened() -> bool:
                    query = Key("start.original_run_uid") == state["raw"]
                    return len(tiled_client[PROCESSED].search(query)) == 1

                service.wait_for(opened, RUN_TIMEOUT, "processed run opened")
                service.proc.send_signal(signal.SIGKILL)
                state["rc"] = service.proc.wait(timeout=60)

    try:
        _wait_until_documents_flow(publisher, service)
        with run_engine() as RE:
            RE.subscribe(publisher)
            RE.subscribe(kill_on_third_primary_event)
            (uid,) = RE(_scan(txm))
    finally:
        publisher.close()
    assert state["rc"] == -signal.SIGKILL
    processed = _processed_run(tiled_client, uid)
    assert not processed.metadata.get("stop")  # open: nobody can close it now

    restarted, _ = _start_service(processes, tmp_path / "second", out_port, tiled_server)
    stop = _processed_run(tiled_client, uid).metadata["stop"]
    assert stop is not None and stop["exit_status"] == "fail", stop
    assert stop["reason"].startswith("partial: abandoned: "), stop
    assert f"pid {service.proc.pid}" in stop["reason"], stop
    assert f"closed run {processed.metadata['start']['uid']}" in restarted.log, restarted.log


def test_profile_publishes_to_the_proxy_instead_of_enhancing_in_process(tiled_server, tmp_path):
    """``LOWDOSE_ENHANCER_ZMQ``: a Publisher replaces the in-process enhancer; the raw writer stays."""
    from bluesky_lowdose.beamline import ENV, BeamlineConfig, setup_run_engine

    env = {ENV["enhancer_zmq"]: "127.0.0.1:5577", ENV["tiled_uri"]: tiled_server.uri,
           "TILED_API_KEY": tiled_server.api_key}  # fmt: skip
    config = BeamlineConfig.from_env(env, data_dir=tmp_path / "beamline", persistent_md=False)
    assert config.enhancer_zmq == "127.0.0.1:5577"
    namespace = setup_run_engine(config)
    registry = namespace["RE"].dispatcher.cb_registry.callbacks
    subscribed = {id(p.func): p.func for cbs in registry.values() for p in cbs.values()}.values()
    publishers = [cb for cb in subscribed if isinstance(cb, Publisher)]
    try:
        assert namespace["enhancer"] is None
        assert [p.address for p in publishers] == ["tcp://127.0.0.1:5577"]
        assert publishers[0]._serializer is pack  # msgpack, as the service reads; never pickle
        assert namespace["tiled_writer"] in subscribed
    finally:
        for p in publishers:
            p.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--zmq", "localhost"], 2, "is not a 0MQ address"),
        (["--zmq", "no-such-host.invalid:5578"], 2, "cannot resolve the host"),
        (["--zmq", "127.0.0.1:5578", "--tiled-uri", "http://127.0.0.1:{dead}"], 1, "cannot reach Tiled"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, code, message, tmp_path, capsys):
    from bluesky_lowdose.cli import main

    (dead,) = _free_ports(1)
    argv = ["enhancer", "--data-dir", str(tmp_path), *(a.format(dead=dead) for a in args)]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects a malformed --zmq itself
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code and message in err, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("lowdose-tomo enhancer: error:")


def test_wire_round_trips_documents_and_refuses_pickles_and_object_arrays() -> None:
    from bluesky_lowdose.wire import WireError, unpack

    doc = {"uid": "u", "data": {"img": np.arange(12, dtype=np.uint16).reshape(3, 4), "x": np.float64(1.5)},
           "shape": (3, 4), "none": None}  # fmt: skip
    back = unpack(pack(doc))
    np.testing.assert_array_equal(back["data"]["img"], doc["data"]["img"])
    assert back["data"]["img"].dtype == np.uint16 and back["data"]["x"] == 1.5 and back["shape"] == [3, 4]
    with pytest.raises(WireError, match="not a msgpack document"):
        unpack(pickle.dumps({"uid": "u"}))
    with pytest.raises(WireError, match="object arrays"):
        pack({"a": np.array([object()])})
    with pytest.raises(WireError, match="mapping"):
        unpack(pack([1, 2]))  # type: ignore[arg-type]


def test_the_dispatcher_copy_matches_the_pinned_bluesky() -> None:
    """service/bus.py copies bluesky's private ``RemoteDispatcher.start`` (and relies on ``_poll``
    raising KeyError for an unknown document name): an upgrade that changes either fails here,
    naming what to re-check, instead of failing the service at a beamline."""
    import hashlib
    import inspect

    import bluesky
    from bluesky.callbacks.zmq import RemoteDispatcher

    pinned = {  # bluesky 1.15.1
        "start": "41ed83fcab235873420abc56a3845de50167186911eb329869afc73b21968a20",
        "_poll": "04d9bc1f61dc673483fa7f8383c88e941d83e242c80f424b087fbee97447f3c3",
    }
    for name, digest in pinned.items():
        source = inspect.getsource(getattr(RemoteDispatcher, name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"bluesky {bluesky.__version__} changed RemoteDispatcher.{name}: re-check the copy in "
            "bluesky_lowdose/service/bus.py (_monitored_dispatcher), then update this digest"
        )
