"""Shared fixtures: a real RunEngine, the simulated TXM, and a real Tiled server."""

from __future__ import annotations

from pathlib import Path

import pytest


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
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiled_client(tiled_server):
    """A client of the session's Tiled server (``raw`` and ``processed`` exist)."""
    return tiled_server.client()


@pytest.fixture
def served_txm(tiled_server):
    """The simulated microscope writing where the session's Tiled server can read."""
    from bluesky_lowdose.devices import make_devices

    return make_devices(tiled_server.layout.detector, size=32, seed=0)
