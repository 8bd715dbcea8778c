"""The startup files of ``profile/`` as IPython runs them, writing into the session's Tiled server."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiled.queries import Key

from bluesky_lowdose.storage import stream_array

pytestmark = [pytest.mark.tiled, pytest.mark.timeout(240)]

PROFILE = Path(__file__).resolve().parents[1] / "profile"
STARTUP = PROFILE / "startup"
SIZE = 16
NAMES = (
    "RE",
    "tiled_client",
    "raw",
    "tiled_writer",
    "txm",
    "txm_cam",
    "rotation",
    "shutter",
    "sample_x",
    "lowdose_tomo_scan",
    "count",
    "mv",
)


def _env(tiled_server, data_dir: Path) -> dict[str, str]:
    return {
        "LOWDOSE_DATA_DIR": str(data_dir),
        "LOWDOSE_TILED_URI": tiled_server.uri,
        "TILED_API_KEY": tiled_server.api_key,
        "LOWDOSE_DETECTOR_DIR": str(tiled_server.layout.detector),
        "LOWDOSE_VOLUME_DIR": str(tiled_server.layout.volumes),  # read by the server, as it must be
        "LOWDOSE_SIZE": str(SIZE),
        "LOWDOSE_ENHANCE": "0",  # the enhancer has its own tests
    }


def _exec_startup_files() -> dict:
    """Run the startup files the way IPython and the RE Worker do: in name order, one namespace."""
    namespace: dict = {"__name__": "__main__"}
    files = sorted(STARTUP.glob("*.py"))
    assert [f.name for f in files] == ["00-setup.py", "10-devices.py", "20-plans.py"]
    for path in files:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_ipython_profile_shares_the_queueserver_startup_files():
    startup = PROFILE / "ipython" / "startup"
    assert startup.is_symlink() or startup.is_dir()
    assert startup.resolve() == STARTUP.resolve()


def test_startup_files_give_a_working_session(tiled_server, tmp_path, monkeypatch):
    for key, value in _env(tiled_server, tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    sessions = []
    try:
        ns = _exec_startup_files()
        sessions.append(ns)
        assert set(NAMES) <= set(ns)
        assert ns["tiled_server"] is None  # LOWDOSE_TILED_URI given: no embedded server
        assert ns["txm_cam"] is ns["txm"].detector and ns["txm_cam"].name == "txm_cam"
        assert ns["txm_cam"].shape == (SIZE, SIZE)

        devices = [ns[name] for name in ("txm_cam", "rotation", "shutter", "sample_x")]
        (uid,) = ns["RE"](ns["lowdose_tomo_scan"](*devices, num_angles=4, num_darks=1, num_flats=1))
        assert ns["tiled_writer"].flush(timeout=60)
        assert list(ns["tiled_writer"].errors) == []
        run = ns["raw"][uid]
        assert stream_array(run, "primary", "txm_cam_image").shape == (4, SIZE, SIZE)
        scan_id = run.metadata["start"]["scan_id"]

        # A new session on the same data directory continues the scan ids (RE.md persists).
        # One PersistentDict per directory at a time (zict): the first session's is written and
        # finalised before the second opens, as when one IPython session ends before the next.
        ns["tiled_writer"].close()
        first_md, ns["RE"].md = ns["RE"].md, {}
        first_md.flush()
        del first_md
        gc.collect()
        ns2 = _exec_startup_files()
        sessions.append(ns2)
        (uid2,) = ns2["RE"](ns2["count"]([ns2["txm_cam"]]))
        assert ns2["tiled_writer"].flush(timeout=60)
        assert ns2["raw"][uid2].metadata["start"]["scan_id"] == scan_id + 1
    finally:
        for ns in sessions:
            ns["tiled_writer"].close(timeout=10)


@pytest.mark.slow
def test_ipython_runs_the_readme_line(tiled_server, tmp_path):
    """``ipython --profile-dir=profile/ipython``, then the README's command as typed."""
    code = (
        "import json; "
        "uids = RE(lowdose_tomo_scan(txm_cam, rotation, shutter, sample_x)); "
        "assert tiled_writer.flush(timeout=120); "
        "names = sorted(k for k in dir() if not k.startswith('_')); "
        "print('RESULT ' + json.dumps({'uids': list(uids), 'names': names}))"
    )
    ipython = Path(sys.executable).with_name("ipython")
    env = {**os.environ, **_env(tiled_server, tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [str(ipython), f"--profile-dir={PROFILE / 'ipython'}", "--no-banner", "--colors=NoColor", "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=200,
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    assert set(NAMES) <= set(result["names"])
    (uid,) = result["uids"]
    run = tiled_server.client()["raw"][uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert stream_array(run, "primary", "txm_cam_image").shape == (361, SIZE, SIZE)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_exiting_ipython_right_after_a_scan_keeps_the_processed_run(tiled_server, tmp_path):
    """A scan, then the session ends at once (``ipython -c``): the exit waits for the enhancer.

    The enhancer is still training when the interpreter starts to shut down; before the exit
    waited early enough, keras' ``save_model`` met h5py after h5py had unregistered its type
    converters, and the processed run ended ``fail``.
    """
    code = (
        "import json; "
        "uids = RE(lowdose_tomo_scan(txm_cam, rotation, shutter, sample_x, num_angles=31, num_darks=2,"
        " num_flats=2, reference_angles=(0.0, 60.0, 120.0))); "
        "print('RESULT ' + json.dumps(list(uids)), flush=True)"
    )
    ipython = Path(sys.executable).with_name("ipython")
    env = {
        **os.environ,
        **_env(tiled_server, tmp_path / "data"),
        "LOWDOSE_ENHANCE": "1",
        "LOWDOSE_REGISTRY": "record",  # from scratch: the session's other tests register models
        "LOWDOSE_METHOD": "n2i",
        "LOWDOSE_N2I_STEPS": "200",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    proc = subprocess.run(
        [str(ipython), f"--profile-dir={PROFILE / 'ipython'}", "--no-banner", "--colors=NoColor", "-c", code],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=380, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    log = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and lines, log
    (uid,) = json.loads(lines[-1][len("RESULT ") :])
    client = tiled_server.client()
    (processed,) = client["processed"].search(Key("start.original_run_uid") == uid).values()
    assert processed.metadata["stop"]["exit_status"] == "success", (processed.metadata["stop"], log)
    assert {"recon_enhanced", "model_n2i"} <= set(processed), (list(processed), log)
    volume = stream_array(processed, "recon_enhanced", "slice")  # served: the folder is the server's
    assert volume.shape == (SIZE, SIZE, SIZE) and np.isfinite(volume[SIZE // 2, SIZE // 2, SIZE // 2])
    assert "waiting for the enhancer" in proc.stdout + proc.stderr, log
