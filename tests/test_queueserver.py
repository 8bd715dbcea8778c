"""The real queue: Redis + RE Manager (profile/startup) + the session's Tiled server, on loopback.

The tests share one stack whose worker environment the ``api`` fixture opens, so any of them can
run alone or first: reject bad items at ``item_add``, run a scan into Tiled, abort a scan through
the API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bluesky_queueserver_api import BPlan

from bluesky_lowdose.queue import QueueStack, RedisNotFoundError, find_redis_server
from bluesky_lowdose.storage import stream_array

pytestmark = [pytest.mark.queueserver, pytest.mark.tiled, pytest.mark.timeout(180)]

DEVICES = ("txm_cam", "rotation", "shutter", "sample_x")
IMAGE_KEY = "txm_cam_image"
SIZE = 32
PROFILE = Path(__file__).resolve().parents[1] / "profile"


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """The ``redis-server`` binary; its absence FAILS the tests (the set-up installs it)."""
    try:
        return find_redis_server()
    except RedisNotFoundError as exc:
        pytest.fail(
            f"{exc}\nThe queueserver tests need a real Redis server: run the project's set-up.", pytrace=False
        )


@pytest.fixture(scope="module")
def stack(redis_server_binary, tiled_server, tmp_path_factory: pytest.TempPathFactory):
    """Redis and the RE Manager, writing into the session's Tiled server; stopped in teardown."""
    stack = QueueStack(
        data_dir=Path(tmp_path_factory.mktemp("queue-data")),
        tiled_uri=tiled_server.uri,
        api_key=tiled_server.api_key,
        detector_dir=tiled_server.layout.detector,
        volume_dir=tiled_server.layout.volumes,  # the server's readable storage, as it must be
        beamline_env={
            "LOWDOSE_SIZE": str(SIZE),
            "LOWDOSE_ENHANCE": "1",  # the streaming enhancer runs in the worker, as at a beamline
            "LOWDOSE_REGISTRY": "record",  # from scratch: the session's other tests register models
            "LOWDOSE_EPOCHS": "2",  # tiny: this test checks the plumbing, test_streaming the quality
            "LOWDOSE_N2I_STEPS": "40",
            # one method, not auto's candidates on every scan (test_streaming runs the default):
            # the setting reaching the worker's enhancer is part of what is checked
            "LOWDOSE_METHOD": "n2i",
            "LOWDOSE_MOTION_DELAY": "0.02",  # so that a 400-angle scan lasts long enough to abort
        },
    )
    try:
        stack.start_redis()
        stack.start_manager()
        stack.write_state()  # as ``queue start`` does: ``queue env`` reads it
        yield stack
    finally:
        procs = dict(stack._procs)
        stack.stop()
        alive = {name: proc.pid for name, proc in procs.items() if proc.poll() is None}
        assert not alive, f"still running after stop: {alive}"


@pytest.fixture(scope="module")
def api(stack):
    """An ``REManagerAPI`` (failures returned, not raised) with the worker environment open."""
    client = stack.api(request_fail_exceptions=False)
    opened = client.environment_open()
    assert opened["success"] is True, opened
    client.wait_for_condition(
        lambda s: s["worker_environment_exists"] and s["manager_state"] == "idle", timeout=90
    )
    yield client
    client.close()


def _plan(*devices: str, **kwargs: Any):
    return BPlan("lowdose_tomo_scan", *(devices or DEVICES), **kwargs)


def _wait_for_run(raw, uid: str, timeout: float = 30.0):
    """The run once its stop document has reached Tiled (the writer runs on its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        if uid in raw:
            run = raw[uid]
            if run.metadata.get("stop"):
                return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {uid} has no stop document in Tiled after {timeout} s")
        time.sleep(0.1)


def _wait_for_processed(client, raw_uid: str, timeout: float = 360.0):
    """The processed run of ``raw_uid`` once the enhancer has closed it."""
    from tiled.queries import Key

    deadline = time.monotonic() + timeout
    while True:
        found = client["processed"].search(Key("start.original_run_uid") == raw_uid)
        if len(found):
            run = found.values().first()
            if run.metadata.get("stop"):  # the outcome is in the stop document, written last
                return run
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished processed run for {raw_uid} after {timeout} s")
        time.sleep(0.5)


def test_environment_opens_with_the_profile(api):
    status = api.status()
    assert status["worker_environment_exists"] and status["manager_state"] == "idle"
    plans = api.plans_allowed()["plans_allowed"]
    devices = api.devices_allowed()["devices_allowed"]
    assert {"lowdose_tomo_scan", "count", "mv"} <= set(plans)
    assert set(DEVICES) <= set(devices)
    params = {p["name"]: p for p in plans["lowdose_tomo_scan"]["parameters"]}
    # descriptions come from the numpydoc docstring, limits from the annotation
    assert params["num_angles"]["description"].startswith("Number of short-exposure projections")
    assert (params["num_angles"]["min"], params["num_angles"]["max"]) == ("2", "10000")
    assert params["detector"]["annotation"]["devices"] == {"Detectors": ["txm_cam"]}


def test_committed_plan_list_matches_the_startup_files(api):
    """profile/existing_plans_and_devices.yaml is what qserver-list-plans-devices makes today."""
    import yaml

    committed = yaml.safe_load((PROFILE / "existing_plans_and_devices.yaml").read_text())
    live = api.plans_existing()["plans_existing"]
    assert set(live) == set(committed["existing_plans"])
    for name, plan in live.items():
        assert plan == committed["existing_plans"][name], (
            f"{name} changed: regenerate with `qserver-list-plans-devices --startup-dir profile/startup "
            "--file-dir profile` (see docs/queueserver.md)"
        )


@pytest.mark.parametrize(
    ("item_args", "item_kwargs", "expected"),
    [
        (("nonexistent_cam", "rotation", "shutter", "sample_x"), {}, "input_value='nonexistent_cam'"),
        (("txm_cam", "sample_x", "shutter", "rotation"), {}, "Input should be 'rotation'"),  # wrong roles
        ((), {"num_angles": 0}, "key='num_angles', value='0'"),
        ((), {"num_angles": 20000}, "key='num_angles', value='20000'"),
        ((), {"short_exposure": -1}, "key='short_exposure', value='-1'"),
        ((), {"long_exposure": 7200}, "key='long_exposure', value='7200'"),
        ((), {"reference_angles": [30, 999]}, "Value 999 is out of range [-360, 360]"),
        ((), {"start": -400}, "key='start', value='-400'"),
        ((), {"num_darks": -1}, "key='num_darks', value='-1'"),
        ((), {"no_such_parameter": 1}, "no_such_parameter"),
    ],
)
def test_bad_items_are_rejected_at_item_add(api, item_args, item_kwargs, expected):
    response = api.item_add(_plan(*item_args, **item_kwargs))
    assert response["success"] is False
    assert "validation failed" in response["msg"]
    assert expected in response["msg"]
    assert api.queue_get()["items"] == []


def test_scan_runs_from_the_queue_into_tiled(api, tiled_client):
    response = api.item_add(_plan(num_angles=6, num_darks=1, num_flats=1, md={"operator": "queue-test"}))
    assert response["success"] is True, response["msg"]
    started = api.queue_start()
    assert started["success"] is True, started["msg"]
    api.wait_for_idle(timeout=60)

    result = api.history_get()["items"][-1]["result"]
    assert result["exit_status"] == "completed", result
    (uid,) = result["run_uids"]
    run = _wait_for_run(tiled_client["raw"], uid)
    assert run.metadata["stop"]["exit_status"] == "success"
    start = run.metadata["start"]
    assert start["plan_name"] == "lowdose_tomo_scan"
    assert start["operator"] == "queue-test"
    assert start["scan_id"] == result["scan_ids"][0]
    frames = stream_array(run, "primary", IMAGE_KEY)
    assert frames.shape == (6, SIZE, SIZE)
    assert frames.read().max() > 0
    assert run.metadata["stop"]["num_events"]["dark_long"] == 1
    # the processed run written by the enhancer in the worker, linked to the raw run
    processed = _wait_for_processed(tiled_client, uid)
    assert processed.metadata["start"]["original_run_uid"] == uid
    # the stack's method (LOWDOSE_METHOD) reached the worker's enhancer; its result is the volume
    assert processed.metadata["start"]["provenance"]["method"] == "n2i"
    assert stream_array(processed, "recon_enhanced", "slice").shape == (SIZE, SIZE, SIZE)
    assert processed.metadata["stop"]["exit_status"] in ("success", "fail")


def test_stop_waits_until_the_processed_run_is_saved(api, stack, tiled_client):
    """``queue stop`` right after a scan: the worker is asked to finish first. When the wait
    returns, the processed run is already closed in Tiled (no polling here)."""
    from tiled.queries import Key

    assert api.item_add(_plan(num_angles=8, num_darks=1, num_flats=1))["success"] is True
    assert api.queue_start()["success"] is True
    api.wait_for_idle(timeout=60)  # the plan has ended; the enhancer is still working
    (uid,) = api.history_get()["items"][-1]["result"]["run_uids"]
    saved = stack._wait_until_saved(300)
    assert saved is not None and saved["saved"] is True, saved
    assert saved["runs"][uid] == "complete" and saved["writer_pending"] == 0
    found = tiled_client["processed"].search(Key("start.original_run_uid") == uid)
    assert len(found) == 1 and found.values().first().metadata.get("stop")


def test_bad_count_and_mv_items_are_rejected_at_item_add(api):
    for item, expected in (
        (BPlan("count", ["txm_cam"], num=10**9), "num"),
        (BPlan("mv", "rotation", 1e300), "position"),
        (BPlan("mv", "txm_cam", 5.0), "txm_cam"),
    ):
        response = api.item_add(item)
        assert response["success"] is False and expected in response["msg"], response["msg"]
    assert api.queue_get()["items"] == []


def test_only_the_stacks_own_functions_may_run_in_the_worker(api):
    from bluesky_queueserver_api import BFunc

    reply = api.function_execute(BFunc("lowdose_enhancer_status"))
    assert reply["success"] is True, reply
    api.wait_for_completed_task(reply["task_uid"], timeout=60)
    assert api.task_result(reply["task_uid"])["result"]["success"] is True
    refused = api.function_execute(BFunc("setup_beamline"))
    assert refused["success"] is False
    api.wait_for_idle(timeout=60)


def test_inconsistent_parameters_fail_when_the_plan_starts(api):
    """Relations between parameters are the plan's to check: the item fails, no run is opened."""
    n_runs = len(api.history_get()["items"])
    item = _plan(short_exposure=30, long_exposure=2, num_angles=3)  # each value in range, not the pair
    assert api.item_add(item)["success"] is True
    assert api.queue_start()["success"] is True
    api.wait_for_idle(timeout=60)
    history = api.history_get()["items"]
    assert len(history) == n_runs + 1
    result = history[-1]["result"]
    assert result["exit_status"] == "failed"
    assert result["run_uids"] == []
    assert "must be longer than short_exposure" in result["msg"] + result["traceback"]
    assert len(api.queue_get()["items"]) == 1  # a failed item goes back to the queue and stops it
    assert api.queue_clear()["success"] is True


def test_abort_through_the_api_leaves_a_consistent_run(api, tiled_client):
    raw = tiled_client["raw"]
    num_angles = 400  # 0.02 s per move: about 10 s in all
    assert api.item_add(_plan(num_angles=num_angles, num_darks=1, num_flats=1))["success"] is True
    assert api.queue_start()["success"] is True
    api.wait_for_condition(lambda s: s["manager_state"] == "executing_queue", timeout=30)
    uid = _wait_for_running_uid(api)
    _wait_for_primary_frames(raw, uid)

    assert api.re_pause("immediate")["success"] is True
    api.wait_for_condition(lambda s: s["manager_state"] == "paused", timeout=30)
    assert api.re_abort()["success"] is True
    api.wait_for_idle(timeout=30)

    result = api.history_get()["items"][-1]["result"]
    assert result["exit_status"] == "aborted", result
    run = _wait_for_run(raw, uid)
    assert run.metadata["start"]["scan_id"] == result["scan_ids"][0]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "abort"
    num_events = stop["num_events"]["primary"]
    assert 0 < num_events < num_angles
    frames = stream_array(run, "primary", IMAGE_KEY)
    assert frames.shape[0] == num_events
    assert frames.read().shape == (num_events, SIZE, SIZE)
    # an aborted item goes back to the front of the queue; leave the queue empty
    assert api.queue_clear()["success"] is True


def _wait_for_running_uid(api, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        uids = api.re_runs(option="open")["run_list"]
        if uids:
            return uids[-1]["uid"]
        time.sleep(0.05)
    raise AssertionError("no run opened")


def _wait_for_primary_frames(raw, uid: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if uid in raw and "primary" in raw[uid]:
            try:  # stream_array: databroker, if another test imported it, changes the layout
                if stream_array(raw[uid], "primary", IMAGE_KEY).shape[0] > 0:
                    return
            except KeyError:
                pass  # the image key is not registered yet
        time.sleep(0.1)
    raise AssertionError(f"no primary frames of run {uid} in Tiled after {timeout} s")


def test_the_manager_answers_only_clients_with_the_stack_s_key(stack, api) -> None:
    """``script_upload`` runs arbitrary Python in the worker: the control socket is CURVE-encrypted
    with a key pair made at start, so a local client without the key (from the 0600 state file,
    ``lowdose-tomo queue env``) gets no answer, and ``qserver`` with it works."""
    import os
    import subprocess
    import sys

    assert stack.zmq_public_key
    qserver = str(Path(sys.executable).parent / "qserver")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSERVER_")}
    plain = {**env, "QSERVER_ZMQ_CONTROL_ADDRESS": stack.zmq_control_addr}
    stranger = subprocess.run([qserver, "status"], env=plain, capture_output=True, text=True, timeout=120)
    assert stranger.returncode != 0 and "manager_state" not in stranger.stdout, stranger.stdout
    exports = subprocess.run(
        [sys.executable, "-m", "bluesky_lowdose.cli", "queue", "env", "--data-dir", str(stack.data_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    keyed = dict(env)
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        keyed[name] = value.strip("'")
    assert keyed["QSERVER_ZMQ_PUBLIC_KEY"] == stack.zmq_public_key
    member = subprocess.run([qserver, "status"], env=keyed, capture_output=True, text=True, timeout=120)
    assert member.returncode == 0 and "manager_state" in member.stdout, member.stdout + member.stderr


def test_stop_never_signals_a_process_the_stack_did_not_start(tmp_path: Path) -> None:
    """A stale state file's pid may belong to anything by now: its start time tells."""
    import subprocess

    from bluesky_lowdose._process import start_ticks

    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = start_ticks(other.pid)
        assert started is not None
        stale = QueueStack(data_dir=tmp_path, pids={"redis": other.pid}, pid_starts={"redis": started - 1})
        stale.queue_dir.mkdir(parents=True)
        stale.write_state()
        QueueStack.from_state(tmp_path).stop(timeout=1)
        assert other.poll() is None  # alive: the recorded process began earlier, this is another
        ours = QueueStack(data_dir=tmp_path, pids={"redis": other.pid}, pid_starts={"redis": started})
        ours.write_state()
        QueueStack.from_state(tmp_path).stop(timeout=5)
        assert other.wait(timeout=5) is not None  # the very process recorded: stopped
    finally:
        other.kill()
        other.wait()
