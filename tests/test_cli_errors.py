"""A user's mistake at the command line is one clear line on stderr and a non-zero exit, never a
traceback; and it is found before anything slow starts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from plan_helpers import run_engine

from bluesky_lowdose.cli import main
from bluesky_lowdose.dxchange import DX_PATHS, DataExchange, write_dxfile

pytestmark = [pytest.mark.tiled]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``lowdose-tomo`` in this process; an uncaught exception fails the test by itself."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: usage line + exit status 2
        rc = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture
def scan_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    dx = DataExchange(
        data=rng.integers(100, 4000, (6, 8, 12), dtype=np.uint16), theta=np.linspace(0.0, 180.0, 6),
        data_white=rng.integers(3000, 4000, (2, 8, 12), dtype=np.uint16),
        data_dark=rng.integers(90, 110, (2, 8, 12), dtype=np.uint16), exposure_time=1.0,
    )  # fmt: skip
    return write_dxfile(tmp_path / "scan.h5", dx)


# ------------------------------------------------------------------------------------ export
def test_export_with_tiled_down(tmp_path: Path, capsys) -> None:
    rc, err = _cli(["export", str(tmp_path / "o.h5"), "--tiled-uri", f"http://127.0.0.1:{_free_port()}",
                    "--uid", "-1"], capsys)  # fmt: skip
    assert rc == 2 and "cannot reach Tiled" in err


@pytest.mark.parametrize("key", ["wrong-key-0123456789", None])
def test_export_with_a_wrong_or_missing_key(tiled_server, tmp_path: Path, capsys, monkeypatch, key) -> None:
    if key is None:
        monkeypatch.delenv("TILED_API_KEY", raising=False)
    else:
        monkeypatch.setenv("TILED_API_KEY", key)
    rc, err = _cli(["export", str(tmp_path / "o.h5"), "--tiled-uri", tiled_server.uri, "--uid", "-1"], capsys)
    assert rc == 2 and ("API key" in err or "401" in err), err


@pytest.mark.parametrize(
    ("extra", "out", "expected"),
    [
        (["--uid", ""], "o.h5", "--uid is empty"),
        (["--uid", "-1", "--catalog", "nope"], "o.h5", "no catalog 'nope'"),
        (["--uid", "-1", "--compression", "zstd-max"], "o.h5", "--compression"),
        (["--uid", "-1"], "missing-dir/o.h5", "does not exist"),
        (["--uid", "-1"], "a-file/o.h5", "is not a directory"),
        (["--uid", "no-such-run-uid"], "o.h5", "no run 'no-such-run-uid'"),
    ],
)
def test_export_mistakes(
    tiled_server, tiled_client, tmp_path: Path, capsys, monkeypatch, extra, out, expected
):
    monkeypatch.setenv("TILED_API_KEY", tiled_server.api_key)
    (tmp_path / "a-file").write_text("")
    rc, err = _cli(["export", str(tmp_path / out), "--tiled-uri", tiled_server.uri, *extra], capsys)
    assert rc == 2 and expected in err, err


def test_export_refuses_an_ambiguous_scan_id(tiled_server, tiled_client, tmp_path: Path, capsys, monkeypatch):
    """Every new RunEngine starts at scan_id 1: ``--uid 1`` must not pick one run silently."""
    from bluesky_lowdose.callbacks import ThreadedCallback
    from bluesky_lowdose.devices import make_devices
    from bluesky_lowdose.plans import lowdose_tomo_scan
    from bluesky_lowdose.storage import make_raw_writer

    txm = make_devices(tiled_server.layout.detector, size=16)
    for _ in range(2):
        with run_engine() as RE:
            writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
            RE.subscribe(writer)
            RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=3,
                                 num_darks=1, num_flats=1, reference_angles=(0.0,)))  # fmt: skip
            assert writer.flush(timeout=60)
            writer.close()
    monkeypatch.setenv("TILED_API_KEY", tiled_server.api_key)
    rc, err = _cli(["export", str(tmp_path / "o.h5"), "--tiled-uri", tiled_server.uri, "--uid", "1"], capsys)
    assert rc == 2 and "scan_id 1 names" in err and "give the run uid" in err


# ------------------------------------------------------------------------------------ enhance
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--tolerance", "-1"], "must be a positive"),
        (["--tolerance", "nan"], "must be a positive"),
        (["--out", "{tmp}/missing/out.h5"], "does not exist"),
        (["--out", "{tmp}/a-file/out.h5"], "is not a directory"),
        (["--out", "{tmp}"], "is a directory"),
        (["--save-model", "{tmp}/missing/m.keras"], "does not exist"),
    ],
)
def test_enhance_mistakes_found_before_any_training(scan_file: Path, capsys, extra, expected) -> None:
    tmp = scan_file.parent
    (tmp / "a-file").write_text("")
    t0 = time.monotonic()
    rc, err = _cli(["enhance", str(scan_file), *(e.format(tmp=tmp) for e in extra)], capsys)
    assert rc == 2 and expected in err, err
    assert time.monotonic() - t0 < 60  # (not a timing test: a trained model would take minutes)
    assert not (tmp / "scan_enhanced.h5").exists()


def test_degrees_labelled_as_radians_are_refused(scan_file: Path, capsys) -> None:
    with h5py.File(scan_file, "a") as f:
        f[DX_PATHS["theta"]].attrs["units"] = "radians"  # the values are 0..180: degrees
    rc, err = _cli(["enhance", str(scan_file)], capsys)
    assert rc == 2 and "degrees labelled as radians" in err


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """The real entry point, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "bluesky_lowdose.cli", "export", str(tmp_path / "o.h5"), "--tiled-uri",
         f"http://127.0.0.1:{_free_port()}", "--uid", "-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "cannot reach Tiled" in proc.stderr


# ------------------------------------------------------------------------------------ demo / serve
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--size", "0"], "must be >= 8"),
        (["demo", "--angles", "0"], "must be >= 2"),
        (["demo", "--epochs", "-3"], "must be >= 1"),
        (["demo", "--method", "magic"], "choose auto or one of"),
        (["serve", "--data-dir", "{tmp}/d", "--port", "99999"], "1 ... 65535"),
    ],
)
def test_bad_numbers_are_refused_before_anything_starts(tmp_path: Path, capsys, argv, expected) -> None:
    t0 = time.monotonic()
    rc, err = _cli([a.format(tmp=tmp_path) for a in argv] + ["--data-dir", str(tmp_path / "d")]
                   if argv[0] == "demo" else [a.format(tmp=tmp_path) for a in argv], capsys)  # fmt: skip
    assert rc == 2 and expected in err, err
    assert not (tmp_path / "d").exists()  # no data directory, no Tiled server
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_data_directory_that_is_a_file(tmp_path: Path, capsys, command: str) -> None:
    (tmp_path / "f").write_text("")
    rc, err = _cli([command, "--data-dir", str(tmp_path / "f")], capsys)
    assert rc == 2 and "is a file" in err


def test_demo_with_tiled_down(tmp_path: Path, capsys) -> None:
    rc, err = _cli(["demo", "--data-dir", str(tmp_path / "d"), "--tiled-uri", f"http://127.0.0.1:{_free_port()}",
                    "--no-progress"], capsys)  # fmt: skip
    assert rc == 1 and "cannot reach Tiled" in err


def test_serve_on_a_taken_port(tmp_path: Path, capsys) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        rc, err = _cli(["serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)], capsys)
    assert rc == 1 and "already in use" in err


def test_connect_and_the_profile_say_at_once_that_tiled_is_down(tmp_path: Path, monkeypatch) -> None:
    """``connect`` asks ``/healthz`` once instead of sitting through the client's retries, and the
    IPython/queue profile names the variable to fix."""
    from bluesky_lowdose.beamline import BeamlineConfig, setup_run_engine
    from bluesky_lowdose.storage import TiledUnreachable, connect

    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TiledUnreachable, match="cannot reach Tiled at"):
        connect(dead)
    config = BeamlineConfig(data_dir=str(tmp_path / "d"), tiled_uri=dead, enhance=False, persistent_md=False)
    with pytest.raises(TiledUnreachable, match="unset LOWDOSE_TILED_URI"):
        setup_run_engine(config)


def test_commands_create_data_directories_private(tmp_path: Path, monkeypatch) -> None:
    """``demo``/``serve`` check the data directory before any server starts; ``queue start`` makes
    its ``queue`` folder first. A directory they create is 0700 with its new parents, whatever the
    umask; one that exists keeps its mode."""
    import os

    from bluesky_lowdose.cli import _data_dir_problem
    from bluesky_lowdose.queue import QueueStack

    old = os.umask(0o022)  # the common default, under which mkdir gives 0755
    try:
        _check_private_directories(tmp_path, _data_dir_problem, QueueStack)
    finally:
        os.umask(old)


def _check_private_directories(tmp_path, _data_dir_problem, QueueStack) -> None:
    import stat

    assert _data_dir_problem(str(tmp_path / "new" / "data")) is None
    for p in (tmp_path / "new", tmp_path / "new" / "data"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    stack = QueueStack(data_dir=tmp_path / "q" / "data")
    stack._prepare_files()
    for p in (tmp_path / "q", tmp_path / "q" / "data", tmp_path / "q" / "data" / "queue"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    (tmp_path / "shared").mkdir(mode=0o755)
    assert _data_dir_problem(str(tmp_path / "shared")) is None
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755


def _scan_with(tmp_path: Path, changes=None) -> Path:
    """A small, plausible Data Exchange scan (a bright open beam, a disc of absorption), changed."""
    rng = np.random.default_rng(1)
    n, rows, cols = 24, 8, 16
    theta = np.linspace(0.0, 180.0, n)
    _, xx = np.mgrid[:rows, :cols]
    absorb = np.exp(-0.8 * ((np.abs(xx - cols / 2) < 4)[None].repeat(n, 0)))
    data = (100 + 3000 * absorb * rng.uniform(0.98, 1.02, (n, rows, cols))).astype(np.uint16)
    fields = {"data": data, "theta": theta, "exposure_time": 1.0,
              "data_white": rng.integers(3000, 3200, (3, rows, cols), dtype=np.uint16),
              "data_dark": rng.integers(90, 110, (3, rows, cols), dtype=np.uint16)}  # fmt: skip
    fields.update(changes(fields) if changes is not None else {})
    return write_dxfile(tmp_path / "scan.h5", DataExchange(**fields))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: {"theta": np.zeros_like(f["theta"])}, "all 24 projection angles are 0°"),
        (lambda f: {"theta": np.deg2rad(f["theta"])}, "look like radians labelled as degrees"),
        (
            lambda f: {
                "data": np.zeros_like(f["data"]),
                "data_white": np.zeros_like(f["data_white"]),
                "data_dark": np.zeros_like(f["data_dark"]),
            },
            "all zeros",
        ),
    ],
    ids=["all-angles-0", "radians", "all-zero"],
)
def test_enhance_refuses_data_that_cannot_be_a_scan(tmp_path: Path, capsys, change, expected) -> None:
    """Silent wrong results (outside campaign): each is now one clear line and exit 2."""
    path = _scan_with(tmp_path, changes=change)
    rc, err = _cli(["enhance", str(path), "--method", "none"], capsys)
    assert rc == 2 and expected in err, err


def test_enhance_says_which_options_the_method_ignored(tmp_path: Path, capsys) -> None:
    """Options of a step the chosen method does not have used to vanish without a word."""
    import json

    path = _scan_with(tmp_path, changes=lambda f: {})
    rc = main(["enhance", str(path), "--method", "none", "--patch-size", "16", "--epochs", "3", "--n2i-steps",
               "10", "--auto-budget", "30", "--json", "--out", str(tmp_path / "out.h5")])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    warnings = json.loads(out.out.strip().splitlines()[-1])["warnings"]
    ignored = [w for w in warnings if w.startswith("ignored: ")]
    given = ("--patch-size", "--epochs", "--n2i-steps", "--auto-budget")
    assert ignored and all(o in ignored[0] for o in given), warnings
    assert "method 'none' trains no projection CNN" in ignored[0] and ignored[0] in out.err
    rc, err = _cli(["enhance", str(path), "--stride", "0"], capsys)
    assert rc == 2 and "--stride" in err and "must be >= 1" in err, err
    for bad in ("0", "-5", "nan"):
        rc, err = _cli(["enhance", str(path), "--auto-budget", bad], capsys)
        assert rc == 2 and "--auto-budget" in err and "positive" in err, err


def test_enhance_warns_when_flats_and_darks_are_swapped(tmp_path: Path, capsys) -> None:
    """The correction is still made (a scientist may want to look), but the output and the
    provenance say what looks wrong."""
    import json

    import h5py

    path = _scan_with(
        tmp_path, changes=lambda f: {"data_white": f["data_dark"], "data_dark": f["data_white"]}
    )
    rc = main(["enhance", str(path), "--method", "none", "--json", "--out", str(tmp_path / "out.h5")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert any("flats and darks swapped" in w for w in summary["warnings"]), summary
    assert "flats and darks swapped" in out.err
    with h5py.File(tmp_path / "out.h5") as f:
        provenance = json.loads(f[DX_PATHS["provenance"]][()])
    assert any("flats and darks swapped" in w for w in provenance["warnings"]), provenance.get("warnings")
