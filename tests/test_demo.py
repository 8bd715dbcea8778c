"""The main job (`make demo`) under interruption: Ctrl-C loses nothing and leaves nothing open."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from bluesky_lowdose.demo import DemoConfig, DemoInterrupted, run_demo
from bluesky_lowdose.storage import PROCESSED, RAW, connect

pytestmark = [pytest.mark.tiled]


def _config(tmp_path: Path) -> DemoConfig:
    return DemoConfig(
        data_dir=tmp_path / "data", size=32, angles=41, num_darks=2, num_flats=2, progress=False,
        method="paper", train_kwargs={"epochs": 2, "patience": 2, "max_patches": 256},
        compare=False, figures=False,
    )  # fmt: skip


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_the_scan_aborts_cleanly_and_keeps_the_frames(tmp_path: Path, presses: int) -> None:
    """Ctrl-C once (pause at the next checkpoint) or twice (immediately) mid-rotation: the run
    ends with a stop document (abort), the shutter is closed, the frames taken are in Tiled, the
    processed run is closed as partial, and the error says so."""
    seen = {"primary": None, "n": 0}

    def press_ctrl_c(name: str, doc: dict) -> None:  # runs on the RunEngine's thread
        if name == "descriptor" and doc["name"] == "primary":
            seen["primary"] = doc["uid"]
        if name == "event" and doc["descriptor"] == seen["primary"]:
            seen["n"] += 1
            if seen["n"] == 5:  # a terminal's Ctrl-C reaches the main thread; so does this
                for i in range(presses):  # presses count when at least 0.1 s apart
                    threading.Timer(
                        0.2 * i, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
                    ).start()

    with pytest.raises(DemoInterrupted, match="ended cleanly") as info:
        run_demo(_config(tmp_path), callbacks=[press_ctrl_c])
    uid = info.value.raw_uid
    assert uid is not None and "partial" in str(info.value)
    # after the interruption the embedded Tiled server is gone: read the data directory again
    from bluesky_lowdose.storage import TiledServer

    with TiledServer(tmp_path / "data") as server:
        client = connect(server.uri, api_key=server.api_key)
        run = client[RAW][uid]
        stop = run.metadata["stop"]
        assert stop["exit_status"] == "abort"
        assert stop["num_events"]["primary"] >= 5
        processed = next(iter(client[PROCESSED].values()))
        assert processed.metadata["start"]["original_run_uid"] == uid
        assert processed.metadata["stop"]["exit_status"] == "fail"
