"""Reconstruction slabs as Dask tasks: a real scheduler and real workers (separate processes,
loopback) give the same arrays as this process, and a worker killed mid-run loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bluesky_lowdose._process import ChildProcess
from bluesky_lowdose.physics import make_phantom
from bluesky_lowdose.pipeline import ScanPipeline, enhance_scan
from bluesky_lowdose.recon import reconstruct
from bluesky_lowdose.recon.slabs import reconstruct_slabs
from bluesky_lowdose.recon.stored import StoredArray

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _line_integrals(size: int, n_angles: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    phantom = make_phantom(size, seed=seed)
    theta = np.linspace(0.0, 180.0, n_angles)
    li = phantom.project_many(theta).astype(np.float32)
    rng = np.random.default_rng(seed)
    return li + rng.normal(0, 0.02 * li.max(), li.shape).astype(np.float32), theta


def test_slabs_give_the_volume_of_one_call_bit_for_bit() -> None:
    li, theta = _line_integrals(32, 61)
    whole = reconstruct(li, theta, backend="fbp")
    for slab in (1, 5, 32, 100):
        np.testing.assert_array_equal(reconstruct_slabs(li, theta, slab=slab, backend="fbp"), whole)


def test_a_mapper_gives_what_frame_by_frame_accumulation_gives() -> None:
    li, theta = _line_integrals(32, 61, seed=1)
    transmission = np.exp(-li)
    local = enhance_scan(transmission, theta, method="none")
    mapped = enhance_scan(transmission, theta, method="none", mapper=map)
    np.testing.assert_array_equal(mapped.volume, local.volume)
    np.testing.assert_array_equal(mapped.raw_volume, local.raw_volume)
    with pytest.raises(ValueError, match="shape"):
        ScanPipeline((0, 4), "none")


class _Cluster:
    """``dask scheduler`` and ``dask worker`` processes on loopback (no nanny: a kill is final)."""

    def __init__(self, tmp_path: Path, n_workers: int) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.log = tmp_path / "dask.log"
        self.scheduler = ChildProcess(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            log=self.log, env=env, name="dask scheduler",
        )  # fmt: skip
        self.workers = [
            ChildProcess([DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                          "--host", "127.0.0.1", "--name", f"w{i}"], log=self.log, env=env, name=f"w{i}")
            for i in range(n_workers)
        ]  # fmt: skip

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            proc.stop(timeout=15)


@pytest.fixture
def cluster(tmp_path: Path):
    c = _Cluster(tmp_path, n_workers=2)
    yield c
    c.close()


def _engine(cluster: _Cluster, n_workers: int):
    from bluesky_lowdose.engine import DaskEngine

    engine = DaskEngine(cluster.address, timeout=60)
    engine.client.wait_for_workers(n_workers, timeout=60)
    return engine


def test_same_scan_on_a_separate_scheduler_and_workers_gives_identical_arrays(cluster, tmp_path) -> None:
    li, theta = _line_integrals(32, 61, seed=2)
    transmission = np.exp(-li)
    local = enhance_scan(transmission, theta, method="none")
    engine = _engine(cluster, 2)
    try:
        remote = enhance_scan(transmission, theta, method="none", mapper=engine.map)
        report = engine.report()
        # bounded memory: the line integrals go to a file; the workers read their slabs from it
        on_disk = enhance_scan(transmission, theta, method="none", mapper=engine.map, workdir=tmp_path / "w")
        tasks_on_disk = engine.report()["tasks"] - report["tasks"]
    finally:
        engine.close()
    np.testing.assert_array_equal(remote.volume, local.volume)
    np.testing.assert_array_equal(remote.raw_volume, local.raw_volume)
    assert report["workers"] == 2 and report["tasks"] == 2 and report["scheduler"] == cluster.address
    scan_dir = Path(on_disk.volume.path).parent  # the scan's own folder in the work directory
    assert isinstance(on_disk.volume, StoredArray) and scan_dir.parent == tmp_path / "w"
    np.testing.assert_array_equal(np.asarray(on_disk.volume), local.volume)
    assert tasks_on_disk == 2
    assert sorted(p.name for p in scan_dir.iterdir()) == ["full.h5"]  # line integrals deleted


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost(cluster) -> None:
    """SIGKILL one of two workers while it holds tasks: the scheduler reruns them on the other;
    the volume is complete and identical to the local one."""
    li, theta = _line_integrals(96, 361, seed=3)
    expected = reconstruct(li, theta, backend="fbp")
    engine = _engine(cluster, 2)
    killed: dict[str, float] = {}

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "stop" not in killed:
            try:
                busy = {addr for addr, keys in engine.client.processing().items() if keys}
                names = engine.workers()
            except Exception:  # the client closed: the run is over
                return
            for addr in busy:
                victim = cluster.workers[int(str(names[addr])[1:])]
                os.killpg(victim.pid, signal.SIGKILL)
                killed["at"] = time.monotonic()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    try:
        killer.start()
        volume = reconstruct_slabs(li, theta, slab=1, backend="fbp", mapper=engine.map)
        killed["stop"] = True
        killer.join(10)
        workers_after = engine.report()["workers"]
    finally:
        engine.close()
    assert "at" in killed, "no worker was busy long enough to be killed"
    assert workers_after == 1  # the other one finished the job
    np.testing.assert_array_equal(volume, expected)


def test_the_workers_are_counted_while_the_client_refreshes_its_cache() -> None:
    """``Client.scheduler_info()`` fetches, then returns a cache that the client's periodic refresh
    (without per-worker information) can overwrite in between: a CI run read 0 workers of 2. The
    engine asks the scheduler itself. A refresh every millisecond makes the old race frequent."""
    import dask
    import distributed  # noqa: F401  (its config keys exist once it is imported)

    from bluesky_lowdose.engine import DaskEngine

    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}):
        engine = DaskEngine(None, n_workers=2)
    try:
        engine.client.wait_for_workers(2, timeout=30)
        counts = {engine.report()["workers"] for _ in range(200)}
        names = engine.workers()
    finally:
        engine.close()
    assert counts == {2}
    assert len(names) == 2 and all(isinstance(n, str) for n in names.values())


def test_a_cluster_whose_only_worker_died_is_said_not_waited_on(tmp_path) -> None:
    """The scheduler keeps the tasks of a dead last worker forever; ``map`` used to wait with them
    (enhance/demo hung > 300 s, the processed run open). Now it gives up, saying why."""
    from bluesky_lowdose.engine import DaskEngine, NoWorkers

    li, theta = _line_integrals(32, 61, seed=4)
    lonely = _Cluster(tmp_path, n_workers=1)
    try:
        engine = DaskEngine(lonely.address, timeout=60, no_worker_timeout=3)
        engine.client.wait_for_workers(1, timeout=60)
        os.killpg(lonely.workers[0].pid, signal.SIGKILL)
        lonely.workers[0].proc.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(NoWorkers, match="no Dask worker has been connected"):
            reconstruct_slabs(li, theta, slab=4, backend="fbp", mapper=engine.map)
        assert time.monotonic() - started < 60
        engine.close()
    finally:
        lonely.close()


def test_learned_steps_run_on_the_workers_and_give_the_local_volume(cluster, tmp_path) -> None:
    """Method "hybrid": the projection network on each block of frames and the Noise2Inverse
    denoiser on each slab run on the worker processes (the models travel as bytes); the
    subsets' volumes are on disk and the workers read their slabs. Same volume as in process."""
    li, theta = _line_integrals(32, 61, seed=4)
    transmission = np.exp(-li).astype(np.float32)
    refs = [0, 30]
    long_refs = np.exp(-make_phantom(32, seed=4).project_many(theta[refs])).astype(np.float32)  # noise-free
    kw = {"long_refs": long_refs, "reference_angles": theta[refs], "method": "hybrid",
          "projection_training": {"epochs": 2, "max_patches": 256},
          "n2i_options": {"steps": 30, "crop": 16, "batch_size": 16}}  # fmt: skip
    local = enhance_scan(transmission, theta, mapper=map, **kw)
    engine = _engine(cluster, 2)
    try:
        remote = enhance_scan(transmission, theta, mapper=engine.map, workdir=tmp_path / "w", **kw)
        report = engine.report()
    finally:
        engine.close()
    # 8 blocks of frames, 2 reconstruction slabs (full, raw, 2 subsets each), 2 denoising slabs
    assert report["tasks"] == 8 + 2 + 2
    scale = float(np.abs(local.volume).max())
    np.testing.assert_allclose(np.asarray(remote.volume), local.volume, rtol=0, atol=1e-4 * scale)
    np.testing.assert_array_equal(np.asarray(remote.raw_volume), local.raw_volume)
