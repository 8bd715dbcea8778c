"""Shared fixtures: a real RunEngine, the simulated TXM, and a real Tiled server."""

from __future__ import annotations

from pathlib import Path

import pytest

# ``make test`` runs two workers, one module at a time each, and ends when its last module does:
# the longest modules go first and the short ones fill in at the end (pytest-xdist keeps this order
# with --no-loadscope-reorder; its default puts the modules with the most tests first, which left
# the two-test, three-minute default-method module for last). Longest first, as measured in the
# suite on 2 cores (docs/benchmarks.md); modules not named keep their order after these.
LONGEST_FIRST = (
    "test_default_method.py",
    "test_pipeline.py",
    "test_streaming.py",
    "test_evaluation.py",
    "test_storage.py",
    "test_queueserver.py",
    "test_epics.py",
    "test_quality.py",
    "test_demo.py",
    "test_dask.py",
    "test_ophyd_async.py",
    "test_registry.py",
    "test_ipython_profile.py",
    "test_bounded.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest modules first (a stable sort: the order within each module is kept)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def RE():
    """A RunEngine on a fresh event loop, halted and closed in teardown (as bluesky's own tests)."""
    from plan_helpers import run_engine

    with run_engine() as engine:
        yield engine


@pytest.fixture
def txm(tmp_path: Path):
    """The simulated microscope at 32^3, files under tmp_path."""
    from bluesky_lowdose.devices import make_devices

    return make_devices(tmp_path / "detector", size=32, seed=0)


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Tiled server (subprocess) serving a temporary data directory."""
    from bluesky_lowdose.storage import TiledServer

    server = TiledServer(tmp_path_factory.mktemp("tiled-data"), api_key="testkey" + "0" * 25)
    server.start()
    _SESSION_SERVERS.append(server)
    yield server
    _SESSION_SERVERS.remove(server)
    server.close()


# tiled 0.2.20's DuckDB tables took the whole server down under concurrent appends ("No active
# transaction, cannot commit", then "terminate called ...": one full run in four, and in CI on
# 2026-12-04); the server now uses them one request at a time (storage/tiled_serve.py,
# docs/reliability.md). Should a session's server
# die all the same, every later module of that worker would fail against it: a dead session server
# is started again (same data, same port) before the next module, and the run's summary says so
# (the test that met the crash still fails).
_SESSION_SERVERS: list = []
_RESTARTS: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _session_tiled_server_alive(request: pytest.FixtureRequest):
    """Restart a session Tiled server that died during an earlier module (see above)."""
    for server in list(_SESSION_SERVERS):
        if not server.running:
            _RESTARTS.append(f"{request.node.nodeid}: the session Tiled server at {server.uri} had died")
            server.close()
            server.start()
    yield


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its restarts to the controller (pytest-xdist's ``workeroutput``)."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["lowdose_tiled_restarts"] = list(_RESTARTS)


def pytest_testnodedown(node, error) -> None:
    """Controller side (pytest-xdist hook): collect a finished worker's restarts."""
    _RESTARTS.extend(getattr(node, "workeroutput", {}).get("lowdose_tiled_restarts", []))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say when the session's Tiled server had to be started again."""
    for line in _RESTARTS:
        terminalreporter.write_line(f"RESTARTED before {line}", red=True)


@pytest.fixture(scope="session")
def tiled_client(tiled_server):
    """A client of the session's Tiled server (``raw`` and ``processed`` exist)."""
    return tiled_server.client()


@pytest.fixture
def served_txm(tiled_server):
    """The simulated microscope writing where the session's Tiled server can read."""
    from bluesky_lowdose.devices import make_devices

    return make_devices(tiled_server.layout.detector, size=32, seed=0)
