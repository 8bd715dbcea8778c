"""The main job (`make demo`) under interruption: Ctrl-C loses nothing and leaves nothing open."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from bluesky_lowdose.demo import DemoConfig, DemoInterrupted, run_demo
from bluesky_lowdose.storage import PROCESSED, RAW, connect, stream_array

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


def test_a_full_disk_mid_scan_ends_the_run_cleanly_and_keeps_the_frames(tmp_path: Path, monkeypatch) -> None:
    """The disk fills after the fifth projection. HDF5 does not survive a full disk (the demo
    used to die of a segfault, leaving the raw run without a stop document and Tiled orphaned);
    the writers stop while room is left: the run ends with its stop document naming the full
    disk, the frames taken are in Tiled, the processed run is closed as partial."""
    import shutil

    from bluesky_lowdose._disk import RESERVE_ENV
    from bluesky_lowdose.demo import DemoScanFailed
    from bluesky_lowdose.storage import TiledServer

    seen = {"primary": None, "n": 0}

    def fill_the_disk(name: str, doc: dict) -> None:
        if name == "descriptor" and doc["name"] == "primary":
            seen["primary"] = doc["uid"]
        if name == "event" and doc["descriptor"] == seen["primary"]:
            seen["n"] += 1
            if seen["n"] == 5:  # from now on the disk has less room than the package keeps free
                free_mb = shutil.disk_usage(tmp_path).free / 2**20
                monkeypatch.setenv(RESERVE_ENV, str(free_mb + 1))

    with pytest.raises(DemoScanFailed, match="disk full") as info:
        run_demo(_config(tmp_path), callbacks=[fill_the_disk])
    uid = info.value.raw_uid
    assert uid is not None and "processed run closed as partial" in str(info.value), info.value
    assert str(tmp_path / "data") in str(info.value)  # the message names where the disk is full
    monkeypatch.delenv(RESERVE_ENV)  # space freed
    with TiledServer(tmp_path / "data") as server:
        client = connect(server.uri, api_key=server.api_key)
        run = client[RAW][uid]
        stop = run.metadata["stop"]
        assert stop["exit_status"] == "fail" and "disk full" in stop["reason"], stop
        assert stop["num_events"]["primary"] == 5
        assert stream_array(run, "primary", "txm_cam_image").shape[0] == 5
        processed = next(iter(client[PROCESSED].values()))
        assert processed.metadata["start"]["original_run_uid"] == uid
        assert processed.metadata["stop"]["exit_status"] == "fail"


def test_figures_are_written_with_their_labels(tmp_path) -> None:
    """reconstruction.png and training.png from a result (synthetic volumes: the drawing is tested,
    not the enhancer): one grey window with a colorbar, doses, a scale bar, log-scale losses."""
    import types

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from bluesky_lowdose.demo import ATTENUATION_UNITS, _reconstruction_figure, write_figures
    from bluesky_lowdose.physics import TXMPhysics, make_phantom

    rng = np.random.default_rng(0)
    ref = rng.random((16, 24, 24)).astype(np.float32)
    vols = {"raw low-dose": ref + 0.3, "n2i (streamed)": ref + 0.1, "full dose": ref}
    scores = {k: {"psnr": 20.0 + i, "ssim": 0.5 + 0.1 * i} for i, k in enumerate(vols)}
    n2i = [{"epoch": i + 1, "loss": 0.1 / (i + 1)} for i in range(5)]
    res = types.SimpleNamespace(raw=None, enhanced=None, recon_raw=vols["raw low-dose"], n2i_history=n2i,
                                theta=np.linspace(0, 180, 9), recon_enhanced=vols["n2i (streamed)"],
                                method="n2i", history=[])  # fmt: skip
    physics = TXMPhysics(make_phantom(24, seed=0), seed=0)
    paths = write_figures(tmp_path, res, physics, ref, {"volumes": vols, "scores": scores}, dose_fraction=0.1)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["reconstruction.png", "training.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    # the labels a reader needs, on the figure itself
    captured = {}
    savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["texts"] = [
            t.get_text() for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)
        ]
        captured["texts"] += [t.get_text() for ax in fig.axes for t in ax.texts]
        return savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        _reconstruction_figure(plt, tmp_path, res, physics, ref, {"volumes": vols, "scores": scores}, 0.1)
    finally:
        plt.Figure.savefig = savefig
    texts = "\n".join(captured["texts"])
    assert "dose 0.10 (1/10.0)" in texts and "dose 1 (conventional scan)" in texts and "no noise" in texts
    assert ATTENUATION_UNITS in texts  # histogram axes and the colorbar
    assert "px = " in texts and "μm" in texts  # the scale bar
