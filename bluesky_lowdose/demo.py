"""The main job: a low-dose scan on the simulated TXM, stored in Tiled.

``lowdose-tomo demo`` (and ``make demo``) calls :func:`run_demo`.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Parameters of the main job.

    Attributes
    ----------
    data_dir : Path
        Data directory (Tiled catalog, detector files, backups, results).
    tiled_uri : str or None
        Use this Tiled server instead of starting the embedded one (its key comes from
        ``$TILED_API_KEY``; it must be able to read ``<data_dir>/detector``).
    size : int
        Phantom edge / detector width in pixels.
    angles : int
        Number of short-exposure projections over 180 degrees.
    short_exposure, long_exposure : float
        Exposure times in seconds.
    reference_angles : tuple of float
        Angles of the long/short training pairs.
    num_darks, num_flats : int
        Darks and flats per exposure time.
    seed : int
        Seed of the phantom and noise.
    progress : bool
        Show progress bars.
    """

    data_dir: Path = Path("lowdose-data")
    tiled_uri: str | None = None
    size: int = 128
    angles: int = 181
    short_exposure: float = 2.0
    long_exposure: float = 30.0
    reference_angles: tuple[float, ...] = (30.0, 120.0)
    num_darks: int = 10
    num_flats: int = 10
    seed: int = 0
    progress: bool = True
    extra_md: dict[str, Any] = field(default_factory=dict)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the main job and return its summary.

    Parameters
    ----------
    config : DemoConfig
        What to run.

    Returns
    -------
    dict
        ``raw_uid``, ``tiled_uri`` (without key), ``data_dir``, ``dose`` and ``timings``.
    """
    from bluesky import RunEngine

    from .callbacks import ScanProgress, ThreadedCallback
    from .devices import make_devices
    from .plans import lowdose_tomo_scan
    from .storage import DataDirectory, TiledServer, connect, make_raw_writer, stream_array

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    layout = DataDirectory.create(config.data_dir)
    with ExitStack() as stack:
        if config.tiled_uri:
            uri = config.tiled_uri
            client = connect(uri)
        else:
            server = stack.enter_context(TiledServer(layout.root))
            uri = server.uri
            client = server.client()
        timings["tiled_start_s"] = time.perf_counter() - t0

        devices = make_devices(layout.detector, size=config.size, seed=config.seed)
        RE = RunEngine({}, call_returns_result=False)
        writer = ThreadedCallback(make_raw_writer(client, backup_directory=layout.backup), name="tiled-raw")
        progress = ScanProgress(disable=not config.progress)
        RE.subscribe(writer)
        RE.subscribe(progress)

        t1 = time.perf_counter()
        (raw_uid,) = RE(
            lowdose_tomo_scan(
                devices.detector,
                devices.rotation,
                devices.shutter,
                devices.sample_stage,
                num_angles=config.angles,
                short_exposure=config.short_exposure,
                long_exposure=config.long_exposure,
                reference_angles=config.reference_angles,
                num_darks=config.num_darks,
                num_flats=config.num_flats,
                md={
                    "sample": f"cube-of-spheres phantom {config.size}^3, seed {config.seed}",
                    **config.extra_md,
                },
            )
        )
        timings["scan_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if not writer.flush(timeout=300):
            logger.error("Tiled writes still pending after 300 s; the run is kept in %s", layout.backup)
        writer.close()
        timings["tiled_flush_s"] = time.perf_counter() - t2
        if writer.errors:
            raise RuntimeError(f"writing the raw run to Tiled failed: {writer.errors[0][1]!r}")

        run = client["raw"][raw_uid]
        n_frames = stream_array(run, "primary", devices.detector.image_key).shape[0]
        timings["total_s"] = time.perf_counter() - t0
        return {
            "raw_uid": raw_uid,
            "tiled_uri": uri,
            "data_dir": str(layout.root),
            "frames": int(n_frames),
            "dose": dict(run.metadata["start"]["lowdose"]["dose"]),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
