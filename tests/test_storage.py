"""Raw runs in a real Tiled server (subprocess), read back by tiled and databroker."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from bluesky_lowdose.callbacks import ThreadedCallback
from bluesky_lowdose.plans import PRIMARY, STREAM_ORDER, lowdose_tomo_scan
from bluesky_lowdose.storage import (
    RAW,
    DataDirectory,
    TiledServer,
    TiledServerError,
    make_raw_writer,
    replay_backups,
    resolve_api_key,
    stream_array,
)

pytestmark = pytest.mark.tiled

KW = {"num_angles": 9, "num_darks": 2, "num_flats": 2, "reference_angles": (45.0, 135.0)}


def _run(RE, txm, writer, **kw):
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda n, d: docs.append((n, d)))
    RE.subscribe(writer)
    (uid,) = RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, **{**KW, **kw}))
    return uid, docs


def _frames_from_files(docs, stream: str) -> np.ndarray:
    """What the detector wrote, read straight from its HDF5 files via the documents."""
    descs = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    frames = []
    for n, d in docs:
        if n == "stream_datum" and descs[d["descriptor"]] == stream:
            res = resources[d["stream_resource"]]
            path = res["uri"].replace("file://localhost", "")
            with h5py.File(path, "r", swmr=True) as f:
                frames.append(f[res["parameters"]["dataset"]][d["indices"]["start"] : d["indices"]["stop"]])
    return np.concatenate(frames)


def test_raw_run_reads_back_through_tiled_and_databroker(RE, served_txm, tiled_server, tiled_client) -> None:
    writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=tiled_server.layout.backup))
    uid, docs = _run(RE, served_txm, writer)
    assert writer.flush(timeout=60) and not writer.errors
    run = tiled_client[RAW][uid]
    assert set(run) == set(STREAM_ORDER)
    key = served_txm.detector.image_key
    for stream in STREAM_ORDER:
        from_tiled = stream_array(run, stream, key).read()
        np.testing.assert_array_equal(from_tiled, _frames_from_files(docs, stream))
        assert from_tiled.dtype == np.uint16
    primary = run[PRIMARY].read()
    np.testing.assert_allclose(primary["rotation"].values, np.linspace(0, 180, 9))
    assert run.metadata["start"]["lowdose"]["dose"]["dose_ratio"] > 1
    assert run.metadata["stop"]["exit_status"] == "success"
    # darks are dark, flats bright, references long > short
    means = {s: float(stream_array(run, s, key).read().mean()) for s in STREAM_ORDER}
    assert means["dark_short"] < means[PRIMARY] < means["flat_short"]
    assert means["reference_long"] > 5 * means["reference_short"]

    from databroker import Broker

    header = Broker(tiled_client[RAW])[uid]
    table = header.table(PRIMARY, fill=True)
    assert len(table) == 9
    np.testing.assert_array_equal(np.stack(table[key].to_numpy()), stream_array(run, PRIMARY, key).read())
    v2 = tiled_client[RAW].v2[uid]
    assert v2.metadata["start"]["uid"] == uid


def test_runs_are_searchable_and_visible_by_scan_id(RE, served_txm, tiled_server, tiled_client) -> None:
    writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=tiled_server.layout.backup))
    sample = f"needle-{uuid.uuid4().hex[:8]}"  # the server is shared by the session's tests
    uid, _ = _run(RE, served_txm, writer, md={"sample": sample})
    writer.flush(timeout=60)
    from tiled.queries import Key

    found = tiled_client[RAW].search(Key("start.sample") == sample)
    assert list(found) == [uid]


def test_the_web_ui_lists_runs_with_scan_id_time_plan_and_status(
    RE, served_txm, tiled_server, tiled_client
) -> None:
    """The UI's run list showed bare uids. The server now gives it columns (GET /tiled-ui-settings),
    and the UI's own list request (``select_metadata`` built from them) returns the values."""
    import httpx

    writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=tiled_server.layout.backup))
    sample = f"ui-{uuid.uuid4().hex[:8]}"
    uid, _ = _run(RE, served_txm, writer, md={"sample": sample})
    assert writer.flush(timeout=60) and not writer.errors
    settings = httpx.get(f"{tiled_server.uri}/tiled-ui-settings", timeout=10).json()
    (runs,) = [s for s in settings["specs"] if s["spec"] == "CatalogOfBlueskyRuns"]
    fields = {c["field"]: c["select_metadata"] for c in runs["columns"]}
    assert {"scan_id", "started", "plan", "exit_status", "method", "reason"} <= set(runs["default_columns"])
    select = "{" + ",".join(f"{f}:{m}" for f, m in fields.items()) + "}"  # as the UI builds it
    reply = httpx.get(
        f"{tiled_server.uri}/api/v1/search/{RAW}",
        params={"fields": "metadata", "select_metadata": select, "page[limit]": 300},
        headers={"Authorization": f"Apikey {tiled_server.api_key}"}, timeout=30,
    )  # fmt: skip
    reply.raise_for_status()
    rows = {item["id"]: item["attributes"]["metadata"]["selected"] for item in reply.json()["data"]}
    row = rows[uid]
    start = tiled_client[RAW][uid].metadata["start"]
    assert row["scan_id"] == start["scan_id"] and row["plan"] == "lowdose_tomo_scan", row
    assert row["sample"] == sample and row["exit_status"] == "success", row
    assert row["started"][:4].isdigit() and "T" in row["started"], row  # ISO 8601, readable


def test_tiled_down_loses_nothing_and_replays(RE, tmp_path: Path, monkeypatch) -> None:
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)  # fail over fast in the test
    server = TiledServer(tmp_path / "data", api_key="k" * 32).start()
    try:
        client = server.client()
        from bluesky_lowdose.devices import make_devices

        txm = make_devices(server.layout.detector, size=32)
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        server.close()  # Tiled goes away before the scan
        uid, docs = _run(RE, txm, writer)
        assert docs[-1][1]["exit_status"] == "success"  # the scan did not notice
        assert writer.flush(timeout=300)
        backups = list(server.layout.backup.glob("*.jsonl"))
        assert len(backups) == 1
        lines = [json.loads(x) for x in backups[0].read_text().splitlines()]
        assert lines[0]["doc"]["uid"] == uid and lines[-1]["name"] == "stop"
        n_events = sum(
            1 if x["name"] == "event" else len(x["doc"]["seq_num"])
            for x in lines
            if x["name"] in ("event", "event_page")
        )
        assert n_events == sum(1 for n, _ in docs if n == "event")
        # Tiled is back: replay the backup; the run is complete and its frames readable
        server.start()
        client = server.client()
        assert replay_backups(client, server.layout.backup) == [uid]
        run = client[RAW][uid]
        # (databroker, imported by another test, changes how clients show streams)
        np.testing.assert_array_equal(
            stream_array(run, PRIMARY, txm.detector.image_key).read(), _frames_from_files(docs, PRIMARY)
        )
        assert replay_backups(client, server.layout.backup) == []  # idempotent
    finally:
        server.close()


def test_tiled_killed_mid_rotation_the_replay_replaces_the_truncated_run(
    RE, tmp_path: Path, monkeypatch
) -> None:
    """Tiled dies after part of the run reached it: the raw run in Tiled is truncated (no stop,
    frames missing); the backup holds the whole run; replaying replaces the truncated node and
    the run is complete, frame for frame; replaying again does nothing."""
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)
    server = TiledServer(tmp_path / "data", api_key="k" * 32).start()
    try:
        client = server.client()
        from bluesky_lowdose.devices import make_devices

        txm = make_devices(server.layout.detector, size=32)
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        primary = {"n": 0}

        def kill_tiled_mid_rotation(name, doc):  # on the RunEngine thread: fine in a test
            if name == "descriptor" and doc["name"] == PRIMARY:
                primary["desc"] = doc["uid"]
            if name == "event" and doc["descriptor"] == primary.get("desc"):
                primary["n"] += 1
                if primary["n"] == 4:
                    assert writer.flush(timeout=60)  # what came before is in Tiled
                    server.close()

        RE.subscribe(kill_tiled_mid_rotation)
        uid, docs = _run(RE, txm, writer)
        assert docs[-1][1]["exit_status"] == "success" and writer.flush(timeout=300)
        server.start()
        client = server.client()
        truncated = client[RAW][uid]
        assert not truncated.metadata.get("stop")  # cut mid-run
        assert replay_backups(client, server.layout.backup) == [uid]
        run = client[RAW][uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        np.testing.assert_array_equal(
            stream_array(run, PRIMARY, txm.detector.image_key).read(), _frames_from_files(docs, PRIMARY)
        )
        assert replay_backups(client, server.layout.backup) == []  # idempotent
    finally:
        server.close()


def test_a_backup_that_cannot_be_written_is_reported_loudly(RE, tmp_path: Path, monkeypatch, caplog) -> None:
    """Tiled is down and the backup cannot be written (here its directory is a file; a full
    disk behaves the same): the scan still succeeds, and the loss is logged as CRITICAL and
    recorded on the writer -- never a silent empty backup."""
    import logging

    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)
    server = TiledServer(tmp_path / "data", api_key="k" * 32).start()
    client = server.client()
    from bluesky_lowdose.devices import make_devices

    not_a_directory = tmp_path / "backup-is-a-file"
    not_a_directory.write_text("")
    txm = make_devices(tmp_path / "det", size=16)
    backed_up = make_raw_writer(client, backup_directory=not_a_directory)
    writer = ThreadedCallback(backed_up)
    server.close()  # Tiled goes away before the scan
    with caplog.at_level(logging.CRITICAL, logger="bluesky_lowdose.storage.backup"):
        uid, docs = _run(RE, txm, writer)
        assert writer.flush(timeout=300)
    assert docs[-1][1]["exit_status"] == "success"
    assert uid in backed_up.backup_failed and writer.errors
    assert any("NOT SAVED" in r.getMessage() and uid in r.getMessage() for r in caplog.records)


def test_api_key_is_generated_once_with_owner_only_permissions(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    key = resolve_api_key(tmp_path)
    assert len(key) >= 32 and resolve_api_key(tmp_path) == key
    mode = stat.S_IMODE(os.stat(tmp_path / ".tiled_api_key").st_mode)
    assert mode == 0o600
    monkeypatch.setenv("TILED_API_KEY", "from-env")
    assert resolve_api_key(tmp_path) == "from-env"


def test_server_requires_the_key(tiled_server) -> None:
    import httpx

    r = httpx.get(f"{tiled_server.uri}/api/v1/metadata/", timeout=5)
    assert r.status_code == 401
    r = httpx.get(
        f"{tiled_server.uri}/api/v1/metadata/", headers={"Authorization": f"Apikey {tiled_server.api_key}"}
    )
    assert r.status_code == 200


def test_server_start_failure_is_reported(tmp_path: Path) -> None:
    layout = DataDirectory.create(tmp_path / "d")
    layout.catalog.write_text("this is not a database")
    with pytest.raises(TiledServerError):
        TiledServer(layout.root, api_key="x" * 32, startup_timeout=30).start()


def test_the_key_is_in_no_log_and_the_data_directory_is_private(tiled_server) -> None:
    log = tiled_server.layout.tiled / "server.log"
    text = log.read_text(errors="replace")
    assert "api_key=***" in text  # Tiled prints its URL with the key: redacted on the way to the file
    assert tiled_server.api_key not in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(tiled_server.layout.root.stat().st_mode) == 0o700


def test_a_squatter_on_the_port_never_gets_the_key(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[dict] = []

    class Squatter(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    squatter = HTTPServer(("127.0.0.1", 0), Squatter)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    try:
        server = TiledServer(tmp_path / "d", port=squatter.server_port, api_key="k" * 32, startup_timeout=30)
        with pytest.raises(TiledServerError, match="already in use"):
            server.start()
        assert not server.running
    finally:
        squatter.shutdown()
        squatter.server_close()
    assert not any("k" * 32 in str(headers) for headers in seen)


def test_ipv6_loopback_server_starts_and_stops(tmp_path: Path) -> None:
    import httpx

    with TiledServer(tmp_path / "d", host="::1", api_key="k" * 32, startup_timeout=60) as server:
        assert server.uri.startswith("http://[::1]:")
        assert httpx.get(f"{server.uri}/healthz", timeout=5).status_code == 200
        proc = server._proc
    assert proc is not None and proc.poll() is not None  # nothing left running


def test_server_output_is_read_to_the_end_when_its_log_cannot_be_written() -> None:
    """Disk full under the log (``/dev/full`` answers every write with ENOSPC): the copier keeps
    reading the server's pipe, so the server never blocks on its own output."""
    import io

    from bluesky_lowdose.storage.server import _redact_into

    lines = b"".join(b"GET /healthz key=secret %d\n" % i for i in range(5000))
    stream = io.BytesIO(lines)
    _redact_into(stream, Path("/dev/full"), "secret")  # returns; before, ENOSPC ended the thread
    assert stream.closed


def test_a_script_that_raises_after_start_leaves_no_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from bluesky_lowdose.storage import TiledServer\n"
        f"server = TiledServer({str(tmp_path / 'data')!r}).start()\n"
        "print(server._proc.pid, flush=True)\n"
        "raise RuntimeError('the script fails after starting Tiled')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "the script fails" in proc.stderr, proc.stderr[-2000:]
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), f"Tiled server {pid} still running after its script ended"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead but not yet reaped by its (gone) parent's reaper
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_threaded_callback_keeps_a_bounded_record_of_failures_per_run() -> None:
    """bluesky's BufferingWrapper underneath; failures are counted per run (a later run's failure
    never marks an earlier one), and the record neither grows without end nor holds documents."""
    import logging

    from bluesky_lowdose.callbacks import ThreadedCallback

    class Doc(dict):  # weak-referenceable, to see whether the record keeps documents alive
        pass

    def target(name: str, doc: dict) -> None:
        if name == "event" and doc["descriptor"] == "d-bad":
            raise OSError("disk full")

    log = logging.getLogger("bluesky_lowdose.callbacks.threaded")
    log.disabled = True  # pytest's log capture would keep each traceback (and its document)
    try:
        _run_failing_callback(ThreadedCallback(target, name="test", max_errors=10), Doc)
    finally:
        log.disabled = False


def _run_failing_callback(cb, Doc) -> None:
    import gc
    import weakref

    cb("start", {"uid": "good"})
    cb("descriptor", {"uid": "d-good", "run_start": "good"})
    cb("start", {"uid": "bad"})
    cb("descriptor", {"uid": "d-bad", "run_start": "bad"})
    docs = [Doc(descriptor="d-bad", seq_num=i) for i in range(50)]
    refs = [weakref.ref(d) for d in docs]
    for doc in docs:
        cb("event", doc)
    cb("event", {"descriptor": "d-good", "seq_num": 1})
    cb("stop", {"run_start": "bad"})
    assert cb.flush(timeout=30) and cb.pending == 0
    assert cb.errors_of("bad") == 50 and cb.errors_of("good") == 0
    assert cb.error_count == 50 and len(cb.errors) == 10
    name, message = cb.errors[-1]
    assert name == "event" and "disk full" in message and cb.errors[-1].run_uid == "bad"
    assert cb.close(timeout=10)
    del docs, doc
    gc.collect()
    assert all(r() is None for r in refs)  # no document (nor traceback) kept by the record
    with pytest.raises(RuntimeError, match="closed"):
        cb("start", {"uid": "late"})


def test_runs_left_open_by_a_dead_process_are_closed_and_no_other(tiled_client) -> None:
    """A killed enhancer's processed run would stay open forever: the next one closes it as partial."""
    import socket
    import subprocess

    from bluesky_lowdose._process import process_identity, start_ticks
    from bluesky_lowdose.callbacks.processed import ProcessedRun
    from bluesky_lowdose.storage import PROCESSED, close_abandoned_runs, make_run_writer

    dead = subprocess.Popen(["sleep", "30"])
    dead_start = start_ticks(dead.pid)
    runs = {}
    for who in ("dead", "alive", "elsewhere"):
        processor = {
            "dead": {"host": socket.gethostname(), "pid": dead.pid, "pid_start": dead_start},
            "alive": process_identity(),
            "elsewhere": {"host": "another-host.invalid", "pid": dead.pid, "pid_start": dead_start},
        }[who]
        writer = make_run_writer(tiled_client[PROCESSED], backup_directory=None, batch_size=1)
        run = ProcessedRun({"plan_name": "lowdose_enhancement", "processor": processor}, writer)
        run.emit("metrics", {"frames": 3})
        runs[who] = run.uid
    dead.kill()
    dead.wait()

    closed = close_abandoned_runs(tiled_client)
    assert runs["dead"] in closed and runs["alive"] not in closed and runs["elsewhere"] not in closed
    stop = tiled_client[PROCESSED][runs["dead"]].metadata["stop"]
    assert stop["exit_status"] == "fail" and stop["reason"].startswith("partial: abandoned: "), stop
    assert f"pid {dead.pid}" in stop["reason"], stop
    kept = stream_array(tiled_client[PROCESSED][runs["dead"]], "metrics", "frames").read()
    assert np.asarray(kept).ravel().tolist() == [3]  # what reached Tiled is kept
    for who in ("alive", "elsewhere"):
        assert not tiled_client[PROCESSED][runs[who]].metadata.get("stop"), who
    assert runs["dead"] not in close_abandoned_runs(tiled_client)  # closed once


def test_run_catalogs_created_by_many_clients_at_once(tmp_path: Path) -> None:
    """Two sessions started together on a fresh server: neither dies of the other's ``create``."""
    import threading

    from tiled.client import from_uri

    from bluesky_lowdose.storage import PROCESSED, ensure_run_catalogs

    with TiledServer(tmp_path / "data") as server:
        clients = [from_uri(server.uri, api_key=server.api_key) for _ in range(6)]
        barrier = threading.Barrier(len(clients))
        errors: list[BaseException] = []

        def create(client) -> None:
            barrier.wait()
            try:
                ensure_run_catalogs(client)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert {RAW, PROCESSED} <= set(server.client())


def _write_run(client, events: int, i: int) -> str:
    """One run of ``events`` events, each its own append request, with a scalar and an array field."""
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    writer = TiledWriter(client, batch_size=1)
    run = compose_run()
    writer("start", run.start_doc)
    keys = {"x": {"dtype": "number", "shape": [], "source": "test"},
            "spectrum": {"dtype": "array", "shape": [4], "dtype_numpy": "<f8", "source": "test"}}  # fmt: skip
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    writer("descriptor", desc.descriptor_doc)
    for j in range(events):
        data = {"x": float(j), "spectrum": [float(i), 1.0, 2.0, float(j)]}
        writer("event", desc.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0), seq_num=j + 1))
    writer("stop", run.compose_stop())
    return run.start_doc["uid"]


def test_event_tables_take_concurrent_writers_and_array_fields(tmp_path: Path) -> None:
    """Three runs written at once, one request per event: tiled 0.2.20's DuckDB tables, used by
    concurrent requests on their one shared connection, failed appends ("No active transaction"),
    duplicated rows on retry and could kill the server (``storage.tiled_serve`` serialises them).
    The tables stay in DuckDB because SQLite cannot hold an array field such as ``spectrum``."""
    import threading

    from tiled.client import from_uri

    events = 40
    with TiledServer(tmp_path / "data") as server:
        client = server.client()
        uids: dict[int, str] = {}
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                uids[i] = _write_run(client, events, i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert server.running
        # the stream's table as Tiled holds it (databroker's client classes, once imported, hide it)
        plain = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        for i, uid in uids.items():
            internal = plain[f"{uid}/primary/internal"].read()
            assert sorted(internal["seq_num"]) == list(range(1, events + 1)), uid  # each row once
            # bluesky-tiled-plugins 2.0.12 stores a short array field as its text ('[0. 1. 2. 3.]')
            spectra = np.stack([np.array(str(v).strip("[]").split(), float) if isinstance(v, str) else v
                                for v in internal["spectrum"]])  # fmt: skip
            np.testing.assert_array_equal(spectra[:, 0], i)
            np.testing.assert_array_equal(np.sort(spectra[:, 3]), np.arange(events))
        log = server.layout.tiled / "server.log"
    assert "No active transaction" not in log.read_text(errors="replace")


def test_the_table_lock_wraps_tiled_s_own_connect_and_every_use_closes_it() -> None:
    """``storage.tiled_serve`` relies on tiled opening and closing a table storage's connection in
    one block: every ``storage.connect()`` of the pinned tiled is inside ``closing(...)``."""
    import re

    import tiled
    from tiled.storage import SQLStorage

    from bluesky_lowdose.storage import tiled_serve

    original = SQLStorage.connect
    tiled_serve.install()
    tiled_serve.install()  # idempotent
    try:
        assert SQLStorage.connect.__wrapped__ is original
        uses = []
        for path in Path(tiled.__file__).parent.rglob("*.py"):
            for line in path.read_text().splitlines():
                if re.search(r"storage\.connect\(\)", line) and "def " not in line:
                    uses.append((path.name, line.strip()))
        assert uses and all(line.startswith("with closing(") for _, line in uses), uses
    finally:
        SQLStorage.connect = original


def test_kept_dependency_trees_are_the_ones_fastapi_builds() -> None:
    """``storage.tiled_serve.memoise_dependants`` relies on FastAPI's ``solve_dependencies`` looking
    ``get_dependant`` up in its module on every request; what it keeps for every dependency of every
    route of a tiled app, asked for as a request asks, must be what FastAPI builds without it."""
    from fastapi.dependencies import utils
    from fastapi.dependencies.models import Dependant
    from tiled.server.app import build_app
    from tiled.server.settings import get_settings

    from bluesky_lowdose.storage import tiled_serve

    assert "get_dependant" in utils.solve_dependencies.__code__.co_names

    def tree(dependant) -> tuple:  # a callable by name: each app has its own closures
        call = getattr(dependant.call, "__qualname__", type(dependant.call).__qualname__)
        return (call, dependant.name, dependant.path, dependant.use_cache,
                tuple(p.name for p in dependant.path_params + dependant.query_params + dependant.header_params
                      + dependant.cookie_params + dependant.body_params),
                tuple(tree(sub) for sub in dependant.dependencies))  # fmt: skip

    def trees() -> dict:
        app = build_app({}, server_settings={})
        assert get_settings in app.dependency_overrides  # why FastAPI rebuilds them per request
        found, stack = {}, list(app.routes)
        while stack:  # FastAPI 0.165 builds an included router's routes (and their dependants) lazily
            route = stack.pop()
            if hasattr(route, "effective_candidates"):
                stack.extend(route.effective_candidates())
            elif isinstance(getattr(route, "dependant", None), Dependant):
                found[(route.path, tuple(sorted(route.methods or ())))] = route.dependant
        return found

    def subs(dependant):
        for sub in dependant.dependencies:
            yield sub
            yield from subs(sub)

    original = utils.get_dependant
    built = trees()  # without the memo
    assert len(built) > 20
    tiled_serve.memoise_dependants()
    tiled_serve.memoise_dependants()  # idempotent
    try:
        assert utils.get_dependant.__wrapped__ is original
        assert {key: tree(d) for key, d in trees().items()} == {key: tree(d) for key, d in built.items()}
        for dependant in built.values():
            for sub in subs(dependant):  # what solve_dependencies passes
                kwargs = dict(path=sub.path, call=sub.call, name=sub.name, scope=sub.scope,
                              parent_oauth_scopes=sub.parent_oauth_scopes,
                              concurrency=sub.concurrency)  # fmt: skip
                kept = utils.get_dependant(**kwargs)
                assert utils.get_dependant(**kwargs) is kept
                assert tree(kept) == tree(original(**kwargs))
                assert tree(kept)[1:] == tree(sub)[1:] or sub.own_oauth_scopes  # as the route has it
    finally:
        utils.get_dependant = original


def test_a_new_catalog_is_created_in_the_server_s_own_process(tmp_path) -> None:
    """``--init`` is done by ``tiled_serve`` itself, with tiled's own init (tiled would start a
    second Python process for it): the catalog passes tiled's own check and a second init leaves
    it as it is. Run in a fresh interpreter, as the server is: in a test worker that has loaded
    TensorFlow and the rest, SQLite can resolve to a library built without FTS5."""
    import subprocess
    import sys

    from bluesky_lowdose.storage.tiled_serve import init_in_process

    catalog = tmp_path / "catalog.db"
    code = f"""
import asyncio, json, sys
from sqlalchemy.ext.asyncio import create_async_engine
from tiled.alembic_utils import check_database
from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION
from bluesky_lowdose.storage.tiled_serve import init_in_process

catalog = {str(catalog)!r}
first = init_in_process(["serve", "catalog", catalog, "--init", "-w", "data", "--port", "1"])
import os
created = os.stat(catalog).st_mtime_ns
init_in_process(["serve", "catalog", catalog, "--init"])  # --if-not-exists: a no-op

async def check():  # what tiled checks before it serves a catalog (raises if not)
    engine = create_async_engine("sqlite+aiosqlite:///" + catalog)
    try:
        await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
    finally:
        await engine.dispose()

asyncio.run(check())
print(json.dumps({{"argv": first, "unchanged": os.stat(catalog).st_mtime_ns == created}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["argv"] == ["serve", "catalog", str(catalog), "-w", "data", "--port", "1"]
    assert result["unchanged"] is True
    # other forms go to tiled unchanged (it then inits as it does)
    for argv in (["serve", "catalog", "--temp"], ["serve", "catalog", "-w", "x", "c.db", "--init"]):
        assert init_in_process(argv) == argv
