"""The main job: a low-dose experiment on the simulated TXM, end to end.

Simulated TXM -> ``lowdose_tomo_scan`` -> streaming enhancement (training starts when the
reference pairs are in) -> reconstructions -> Tiled (``raw`` and ``processed`` catalogs),
then a summary with PSNR/SSIM against the reference the simulator can provide (the
reconstruction of noise-free projections) and figures in ``<data_dir>/results``.

``lowdose-tomo demo`` (and ``make demo``) calls :func:`run_demo`.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    enhance : bool
        Subscribe the streaming enhancer (False: raw acquisition only).
    train_kwargs : dict
        Training parameters of the enhancer.
    figures : bool
        Write PNG figures into ``<data_dir>/results``.
    """

    data_dir: Path = Path("lowdose-data")
    tiled_uri: str | None = None
    size: int = 128
    angles: int = 181
    short_exposure: float = 2.0
    long_exposure: float = 30.0
    reference_angles: tuple[float, ...] = (0.0, 60.0, 120.0)
    num_darks: int = 10
    num_flats: int = 10
    seed: int = 0
    progress: bool = True
    enhance: bool = True
    train_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 15, "patience": 5, "max_patches": 2048}
    )
    figures: bool = True
    extra_md: dict[str, Any] = field(default_factory=dict)


def simulator_reference(physics: Any, theta: np.ndarray, *, backend: str | None = None) -> np.ndarray:
    """Reconstruction of noise-free projections: the best a perfect long exposure could give.

    Parameters
    ----------
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulator.
    theta : numpy.ndarray
        Angles in degrees.
    backend : str, optional
        Reconstruction backend.

    Returns
    -------
    numpy.ndarray
        Volume ``[z, y, x]``.
    """
    from .recon import reconstruct

    line_integrals = np.stack([physics.mu * physics.phantom.project(a) for a in theta]).astype(np.float32)
    return reconstruct(line_integrals, theta, backend=backend)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the main job and return its summary.

    Parameters
    ----------
    config : DemoConfig
        What to run.

    Returns
    -------
    dict
        ``raw_uid``, ``processed_uid``, ``tiled_uri`` (without key), ``data_dir``,
        ``status``, ``metrics``, ``dose``, ``figures`` and ``timings``.
    """
    from bluesky import RunEngine

    from .callbacks import ProjectionEnhancer, ScanProgress, ThreadedCallback
    from .devices import make_devices
    from .metrics import compare
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
        RE.subscribe(writer)
        RE.subscribe(ScanProgress(disable=not config.progress))
        reference: dict[str, np.ndarray] = {}

        def against_simulator(res: Any) -> dict[str, float]:
            ref = simulator_reference(devices.physics, res.theta)
            reference["volume"] = ref
            out = {}
            for name, vol in (("raw", res.recon_raw), ("enhanced", res.recon_enhanced)):
                if vol is not None:
                    for metric, value in compare(vol, ref).items():
                        out[f"recon_{metric}_{name}"] = value
            return out

        enhancer = None
        if config.enhance:
            enhancer = ProjectionEnhancer(
                client,
                train_kwargs=config.train_kwargs,
                backup_directory=layout.backup,
                progress=config.progress,
                extra_metrics=against_simulator,
            )
            RE.subscribe(enhancer)

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
        if writer.errors:
            raise RuntimeError(f"writing the raw run to Tiled failed: {writer.errors[0][1]!r}")
        run = client["raw"][raw_uid]
        n_frames = stream_array(run, "primary", devices.detector.image_key).shape[0]
        summary: dict[str, Any] = {
            "raw_uid": raw_uid,
            "processed_uid": None,
            "tiled_uri": uri,
            "data_dir": str(layout.root),
            "frames": int(n_frames),
            "dose": dict(run.metadata["start"]["lowdose"]["dose"]),
        }
        if enhancer is not None:
            if not enhancer.wait(timeout=1800):
                raise TimeoutError("the enhancer did not finish within 30 minutes")
            res = enhancer.results[raw_uid]
            timings.update({f"enhancer_{k}": v for k, v in res.timings.items()})
            summary.update(
                processed_uid=res.processed_uid,
                status=res.status,
                reasons=res.reasons,
                metrics={k: round(float(v), 4) for k, v in res.metrics.items()},
            )
            if config.figures:
                summary["figures"] = write_figures(
                    layout.results, res, devices.physics, reference.get("volume")
                )
        timings["after_scan_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
        return summary


def write_figures(directory: Path, res: Any, physics: Any, reference: np.ndarray | None) -> list[str]:
    """Projection raw/enhanced/long, reconstructed slice raw/enhanced/reference, training curve.

    Parameters
    ----------
    directory : Path
        Where the PNG files go.
    res : bluesky_lowdose.callbacks.RunResult
        The enhancer's result.
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulator (for the noise-free projection).
    reference : numpy.ndarray, optional
        Reconstruction of noise-free projections.

    Returns
    -------
    list of str
        Paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    if res.raw is not None and res.enhanced is not None:
        i = len(res.theta) // 4
        truth = physics.transmission(float(res.theta[i]))
        panels = [("short exposure (raw)", res.raw[i]), ("enhanced", res.enhanced[i]),
                  ("noise-free (simulator)", truth)]  # fmt: skip
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
        lo, hi = np.percentile(truth, [0.5, 99.5])
        for ax, (title, img) in zip(axes, panels, strict=True):
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(
                f"{title}\n{res.theta[i]:.1f} deg (not a training angle)" if title == "enhanced" else title
            )
            ax.axis("off")
        fig.suptitle("Projection (flat/dark-corrected transmission)")
        fig.tight_layout()
        paths.append(str(directory / "projection.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if res.recon_raw is not None:
        z = res.recon_raw.shape[0] // 2
        vols = [
            ("raw", res.recon_raw),
            ("enhanced", res.recon_enhanced),
            ("reference (noise-free)", reference),
        ]
        vols = [(t, v) for t, v in vols if v is not None]
        ref = reference if reference is not None else res.recon_raw
        lo, hi = np.percentile(ref[z], [0.5, 99.5])
        fig, axes = plt.subplots(2, len(vols), figsize=(4 * len(vols), 8), squeeze=False)
        for k, (title, vol) in enumerate(vols):
            axes[0, k].imshow(vol[z], cmap="gray", vmin=lo, vmax=hi)
            axes[0, k].set_title(f"{title}, slice {z}")
            axes[0, k].axis("off")
            axes[1, k].hist(vol[z].ravel(), bins=100, range=(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo)))
            axes[1, k].set_yscale("log")
            axes[1, k].set_xlabel("attenuation per voxel")
        fig.suptitle("Reconstruction and histogram (background, cube and spheres)")
        fig.tight_layout()
        paths.append(str(directory / "reconstruction.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if res.history:
        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = [h["epoch"] for h in res.history]
        for key in ("loss", "val_loss"):
            if all(key in h for h in res.history):
                ax.plot(epochs, [h[key] for h in res.history], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("1 / PSNR")
        ax.legend()
        ax.set_title("Training curve")
        fig.tight_layout()
        paths.append(str(directory / "training.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
