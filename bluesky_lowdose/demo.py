"""The main job: a low-dose experiment on the simulated TXM, end to end.

Simulated TXM -> ``lowdose_tomo_scan`` -> streaming enhancement with the best measured method
(training starts when the reference pairs are in) -> reconstructions -> Tiled (``raw`` and
``processed`` catalogs).  Then, for comparison, what a beamline scientist wants side by side:
the raw low-dose reconstruction, the paper's method (projection CNN only), the best method, and
a conventional full-dose scan (every angle at the long exposure, simulated on the same
microscope), each scored inside the object against the reference the simulator can provide
(the reconstruction of noise-free projections).  Figures in ``<data_dir>/results``.

``lowdose-tomo demo`` (and ``make demo``) calls :func:`run_demo`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoConfig", "DemoEnded", "DemoInterrupted", "DemoScanFailed", "run_demo"]

logger = logging.getLogger(__name__)


class DemoEnded(RuntimeError):
    """The main job ended before its result; the message says what was kept and where.

    Attributes
    ----------
    raw_uid : str or None
        The run that ended early, if the scan had started.
    """

    def __init__(self, message: str, raw_uid: str | None = None) -> None:
        super().__init__(message)
        self.raw_uid = raw_uid


class DemoInterrupted(DemoEnded):
    """The user interrupted the main job (Ctrl-C): the run's stop document says ``abort``."""


class DemoScanFailed(DemoEnded):
    """The scan failed (a device, a full disk): the run's stop document says ``fail``."""


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
    method : str
        Pipeline method of the streaming enhancer (``"auto"``: the best measured).
    train_kwargs : dict
        Training parameters of the projection CNN.
    n2i_options : dict
        Noise2Inverse parameters (default: the pipeline's, 4400 steps of 4 crops; at 600 steps of 16
        it bled the cube into the empty slices beyond its faces and ``auto`` kept the raw
        reconstruction).
    auto_budget_s : float or None
        Seconds ``method="auto"`` may spend choosing (None: the pipeline's default, 150 s; 400 lets
        Noise2Inverse train all its steps at 128^3 on 2 cores).
    compare : bool
        Also reconstruct the paper's method and a simulated conventional full-dose scan.
    figures : bool
        Write PNG figures into ``<data_dir>/results``.
    registry : str
        The enhancer's model registry mode (``"auto"``: start from the best registered model of
        this instrument, so a second demo in the same data directory fine-tunes the first's).
    dask_scheduler : str or None
        ``tcp://HOST:PORT``: the enhancer's reconstruction runs as slab tasks on that Dask
        cluster; ``"local"``: on an in-process one; None: accumulated frame by frame in this
        process while the scan runs (the default: nothing is left to reconstruct after the scan).
    """

    data_dir: Path = Path("lowdose-data")
    tiled_uri: str | None = None
    size: int = 128
    angles: int = 181
    short_exposure: float = 2.0
    long_exposure: float = 30.0
    reference_angles: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
    num_darks: int = 10
    num_flats: int = 10
    seed: int = 0
    progress: bool = True
    enhance: bool = True
    method: str = "auto"
    train_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 15, "patience": 5, "max_patches": 1024}
    )
    n2i_options: dict[str, Any] = field(default_factory=dict)
    auto_budget_s: float | None = 400.0
    compare: bool = True
    figures: bool = True
    dask_scheduler: str | None = None
    registry: str = "auto"
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


def conventional_scan(
    physics: Any, theta: np.ndarray, exposure: float, *, n_ref: int = 10, seed: int = 12345
) -> np.ndarray:
    """A conventional scan: every angle at ``exposure``, flat/dark-corrected, reconstructed.

    Simulated on a copy of the microscope (same phantom, beam and detector, its own noise), so
    the low-dose scan is compared with what the same instrument gives at full dose.

    Parameters
    ----------
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulated microscope of the low-dose scan.
    theta : numpy.ndarray
        Angles in degrees.
    exposure : float
        Exposure per frame, seconds (the long exposure).
    n_ref : int
        Flats and darks.
    seed : int
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
        The reconstruction ``[z, y, x]`` (pipeline method ``"none"``).
    """
    import copy

    from .pipeline import enhance_scan, flat_field

    sim = copy.copy(physics)
    sim.rng = np.random.default_rng(seed)
    flats = np.stack([sim.frame(0.0, exposure, sample_offset_mm=10.0) for _ in range(n_ref)])
    darks = np.stack([sim.frame(0.0, exposure, shutter_open=False) for _ in range(n_ref)])
    frames = np.stack([sim.frame(float(t), exposure) for t in theta])
    transmission = flat_field(flats, darks).correct(frames)
    return enhance_scan(transmission, theta, method="none").volume


def compare_methods(
    res: Any,
    physics: Any,
    reference: np.ndarray,
    long_exposure: float,
    projection_training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw low-dose, the paper's method, the streamed (best) method and a full-dose scan, scored.

    Parameters
    ----------
    res : bluesky_lowdose.callbacks.RunResult
        The streaming enhancer's result (corrected frames, pairs, models, volumes).
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulated microscope.
    reference : numpy.ndarray
        Reconstruction of noise-free projections.
    long_exposure : float
        Exposure of the full-dose scan, seconds.
    projection_training : dict, optional
        Training of the paper's CNN when the streamed method had none to reuse.

    Returns
    -------
    dict
        ``volumes`` (name -> volume) and ``scores`` (name -> PSNR/SSIM inside the object).
    """
    from .metrics import object_mask
    from .pipeline import enhance_scan, score_volume

    volumes: dict[str, np.ndarray] = {"raw low-dose": res.recon_raw}
    # scored against the simulator's truth below, so not by the long exposures (whose verdict on a
    # volume that is not the result would be logged as a warning about the scan)
    if res.method != "paper":
        if res.enhancer is not None:  # the streamed method had the paper's step: reuse its network
            paper = enhance_scan(
                res.raw, res.theta, method="paper", projection_model=res.enhancer, judge=False
            )
        elif res.pairs is not None:
            p = res.pairs
            paper = enhance_scan(res.raw, res.theta, short_refs=p["short"], long_refs=p["long"],
                                 reference_angles=p["angles"], method="paper",
                                 projection_training=projection_training, judge=False)  # fmt: skip
        else:
            paper = None
        if paper is not None:
            volumes["paper (Yang 2018)"] = paper.volume
    volumes[f"{res.method} (streamed)"] = res.recon_enhanced
    volumes["full dose"] = conventional_scan(physics, res.theta, long_exposure)
    mask = object_mask(reference)
    scores = {name: score_volume(vol, reference, mask=mask) for name, vol in volumes.items()}
    return {"volumes": volumes, "scores": scores}


def run_demo(config: DemoConfig, *, callbacks: Sequence[Callable[[str, dict], Any]] = ()) -> dict[str, Any]:
    """Run the main job and return its summary.

    Ctrl-C (once or twice) during the scan aborts the run cleanly: the plan closes the shutter and
    returns the stages, the stop document (``abort``) is written, queued documents are flushed to
    Tiled or to the backup, the processed run is closed as partial, and :class:`DemoInterrupted`
    says what was kept. Ctrl-C after the scan stops waiting for the enhancer the same way.

    Parameters
    ----------
    config : DemoConfig
        What to run.
    callbacks : sequence of callable, optional
        Extra document callbacks subscribed to the RunEngine (e.g. a live plot).

    Returns
    -------
    dict
        ``raw_uid``, ``processed_uid``, ``tiled_uri`` (without key), ``data_dir``, ``status``,
        ``method``, ``metrics``, ``comparison`` (PSNR/SSIM inside the object of the raw
        low-dose, paper, streamed and full-dose reconstructions, and the dose of each),
        ``dose``, ``figures``, ``timings``, ``registry`` (uid of the registered model the
        enhancer started from, or None), ``first_result_s`` (seconds from the last frame to the
        registered model's first result, or None) and ``registry_detail``.

    Raises
    ------
    DemoInterrupted
        Ctrl-C; nothing taken so far is lost.
    """
    from bluesky import RunEngine
    from bluesky.utils import RunEngineInterrupted

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

        engine = None
        if config.dask_scheduler:
            from .engine import DaskEngine

            engine = DaskEngine(config.dask_scheduler)
            stack.callback(engine.close)
        enhancer = None
        if config.enhance:
            enhancer = ProjectionEnhancer(
                client,
                method=config.method,
                train_kwargs=config.train_kwargs,
                n2i_options=config.n2i_options,
                backup_directory=layout.backup,
                progress=config.progress,
                extra_metrics=against_simulator,
                mapper=None if engine is None else engine.map,
                work_directory=layout.work,
                volume_directory=layout.volumes,
                registry=config.registry,
                auto_options=None if config.auto_budget_s is None else {"budget_s": config.auto_budget_s},
            )
            RE.subscribe(enhancer)
        for callback in callbacks:
            RE.subscribe(callback)
        started: list[str] = []
        RE.subscribe(lambda name, doc: started.append(doc["uid"]) if name == "start" else None)

        def save_what_was_taken() -> str:
            """Flush what was taken and close the processed run (before the server stops); say where."""
            flushed = writer.flush(timeout=120)
            writer.close(timeout=10)
            where = "Tiled" if flushed and not writer.errors else f"Tiled or the backup {layout.backup}"
            processed = ""
            if enhancer is not None:  # the processed run is closed as partial, with the reason
                closed = enhancer.close(timeout=120)
                processed = "; processed run closed as partial" if closed else "; processed run NOT closed"
            return f"everything taken is in {where}{processed}"

        def interrupted(when: str, uid: str | None) -> DemoInterrupted:
            saved = save_what_was_taken()
            return DemoInterrupted(
                f"interrupted by the user (Ctrl-C) {when}: run {uid or '(none)'} ended cleanly (shutter "
                f"closed, stages returned, stop document written); {saved}",
                raw_uid=uid,
            )

        t1 = time.perf_counter()
        plan = lowdose_tomo_scan(
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
        try:
            (raw_uid,) = RE(plan)
        except (RunEngineInterrupted, KeyboardInterrupt):
            # the RunEngine turns Ctrl-C into a pause: abort, so that the plan cleans up and
            # the stop document is written (a KeyboardInterrupt outside a plan: same)
            if RE.state == "paused":
                RE.abort("interrupted by the user (Ctrl-C)")
            raise interrupted("during the scan", started[0] if started else None) from None
        except Exception as exc:  # a device or the disk failed: the run has its stop document
            uid = started[0] if started else None
            raise DemoScanFailed(
                f"the scan failed: {exc}; run {uid or '(none)'} ended with its stop document; "
                f"{save_what_was_taken()}",
                raw_uid=uid,
            ) from exc
        timings["scan_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if not writer.flush(timeout=300):
            logger.error("Tiled writes still pending after 300 s; the run is kept in %s", layout.backup)
        writer.close()
        if writer.errors:
            raise RuntimeError(f"writing the raw run to Tiled failed: {writer.errors[0][1]!r}")
        run = client["raw"][raw_uid]
        n_frames = stream_array(run, "primary", devices.detector.image_key).shape[0]
        dose = dict(run.metadata["start"]["lowdose"]["dose"])
        summary: dict[str, Any] = {
            "raw_uid": raw_uid,
            "processed_uid": None,
            "tiled_uri": uri,
            "data_dir": str(layout.root),
            "frames": int(n_frames),
            "dose": dose,
        }
        if enhancer is not None:
            try:
                finished = enhancer.wait(timeout=1800)
            except KeyboardInterrupt:
                raise interrupted("while the enhancer was working", raw_uid) from None
            if not finished:
                raise TimeoutError("the enhancer did not finish within 30 minutes")
            timings["last_frame_to_processed_run_s"] = time.perf_counter() - t2
            res = enhancer.results[raw_uid]
            timings.update({f"enhancer_{k}": v for k, v in res.timings.items()})
            auto = (res.provenance or {}).get("auto")
            started = res.registry.get("started_from") or res.registry.get("used") or {}
            summary.update(
                registry=started.get("slices", started.get("projection")),  # the model it started from
                first_result_s=res.timings.get("first_result_s"),
                registry_detail=dict(res.registry),
                processed_uid=res.processed_uid,
                status=res.status,
                method=res.method,
                reasons=res.reasons,
                metrics={k: round(float(v), 4) for k, v in res.metrics.items()},
                quality=res.quality,
                warnings=list(res.warnings),
                auto=None if auto is None else {
                    "winner": auto["winner"], "why": auto["why"],
                    "candidates": {m: {k: c[k] for k in ("status", "seconds", "gain_psnr_db", "gain_ssim",
                                                         "training_steps", "whole_scan_s", "too_slow")
                                       if k in c}
                                   for m, c in auto["candidates"].items()},
                    **{k: auto[k] for k in ("side_by_side", "budget_s", "seconds", "whole_scan")
                       if k in auto},
                },
            )  # fmt: skip
            comparison = None
            if config.compare and res.recon_enhanced is not None and "volume" in reference:
                t3 = time.perf_counter()
                comparison = compare_methods(
                    res, devices.physics, reference["volume"], config.long_exposure, config.train_kwargs
                )
                timings["comparison_s"] = time.perf_counter() - t3
                full_dose_s = config.long_exposure * config.angles
                raw_score = comparison["scores"]["raw low-dose"]
                summary["comparison_warnings"] = [
                    f"{name} scores below the raw low-dose reconstruction "
                    f"({sc['psnr']:.2f} dB / SSIM {sc['ssim']:.3f} vs {raw_score['psnr']:.2f} dB / "
                    f"{raw_score['ssim']:.3f})"
                    for name, sc in comparison["scores"].items()
                    if name not in ("raw low-dose", "full dose")
                    and (sc["psnr"] < raw_score["psnr"] or sc["ssim"] < raw_score["ssim"])
                ]
                summary["comparison"] = {
                    "scored": "PSNR/SSIM inside the object against the noise-free reconstruction",
                    "scores": {k: {m: round(v, 4) for m, v in sc.items()}
                               for k, sc in comparison["scores"].items()},
                    "sample_exposure_s": {
                        "low-dose scan (sample in the beam)": dose.get("sample_exposure_s"),
                        "full dose": dose.get("conventional_exposure_s", full_dose_s),
                    },
                }  # fmt: skip
            if config.figures:
                summary["figures"] = write_figures(
                    layout.results, res, devices.physics, reference.get("volume"), comparison,
                    dose_fraction=dose.get("dose_fraction"),
                )  # fmt: skip
            if res.done.is_set():
                enhancer.forget(raw_uid)  # its volumes are in Tiled: the work files go
        summary["dask"] = (
            engine.report()
            if engine is not None
            else {"scheduler": None, "workers": 0, "tasks": 0, "in_process": True,
                  "note": "reconstructed slab by slab in this process (--dask-scheduler for Dask)"}
        )  # fmt: skip
        timings["after_scan_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
        return summary


def write_figures(
    directory: Path,
    res: Any,
    physics: Any,
    reference: np.ndarray | None,
    comparison: dict[str, Any] | None = None,
    *,
    dose_fraction: float | None = None,
) -> list[str]:
    """Projection raw/enhanced/noise-free, slices of every method side by side, training curves.

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
    comparison : dict, optional
        From :func:`compare_methods`: ``volumes`` and ``scores`` shown side by side.
    dose_fraction : float, optional
        The low-dose scan's dose over a conventional scan's (the start document's ``lowdose``
        block), written on each panel.

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
        paths.append(
            _reconstruction_figure(plt, directory, res, physics, reference, comparison, dose_fraction)
        )
    path = _training_figure(plt, directory, res)
    if path is not None:
        paths.append(path)
    return paths


#: Units of a reconstructed voxel (the FBP of -log transmission, per pixel).
ATTENUATION_UNITS = "attenuation per pixel (μ · pixel)"


def _panel_dose(name: str, dose_fraction: float | None) -> str:
    if name.startswith("reference"):
        return "no noise (simulator)"
    if name == "full dose":
        return "dose 1 (conventional scan)"
    return "dose ?" if dose_fraction is None else f"dose {dose_fraction:.2f} (1/{1 / dose_fraction:.1f})"


def _reconstruction_figure(plt, directory, res, physics, reference, comparison, dose_fraction) -> str:
    """Middle slice of every method in one grey window with its colorbar, scale bar, doses, histograms."""
    z = res.recon_raw.shape[0] // 2
    if comparison is not None:
        sc = comparison["scores"]
        vols = [(name, f"SSIM {sc[name]['ssim']:.3f}, {sc[name]['psnr']:.1f} dB", vol)
                for name, vol in comparison["volumes"].items()]  # fmt: skip
    else:
        vols = [("raw low-dose", "", res.recon_raw), (f"{res.method}", "", res.recon_enhanced)]
    vols.append(("reference (noise-free)", "", reference))
    vols = [(n, sc, v) for n, sc, v in vols if v is not None]
    ref = reference if reference is not None else res.recon_raw
    lo, hi = (float(v) for v in np.percentile(ref[z], [0.5, 99.5]))
    pad = 0.2 * (hi - lo)
    pixel_mm = getattr(physics, "pixel_size_mm", None)
    fig, axes = plt.subplots(2, len(vols), figsize=(3.2 * len(vols) + 1.0, 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.2]}, layout="constrained")  # fmt: skip
    image = None
    for k, (name, score, vol) in enumerate(vols):
        ax = axes[0, k]
        image = ax.imshow(vol[z], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title("\n".join(t for t in (name, _panel_dose(name, dose_fraction), score) if t), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:  # a scale bar: a quarter of the field
            width = vol.shape[-1]
            bar = max(1, width // 4)
            y = vol.shape[-2] * 0.94
            ax.plot([width * 0.05, width * 0.05 + bar], [y, y], color="yellow", lw=3)
            label = f"{bar} px" + (f" = {bar * pixel_mm * 1000:.0f} μm" if pixel_mm else "")
            ax.text(width * 0.05, y - vol.shape[-2] * 0.04, label, color="yellow", fontsize=9,
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0})  # fmt: skip
        h = axes[1, k]
        h.hist(vol[z].ravel(), bins=100, range=(lo - pad, hi + pad), color="0.3")
        h.set_yscale("log")
        h.set_xlabel(ATTENUATION_UNITS, fontsize=8)
        h.set_ylabel("voxels in the slice" if k == 0 else "", fontsize=8)
        h.axvspan(lo, hi, color="tab:blue", alpha=0.08, lw=0)  # the grey window above
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9, label=ATTENUATION_UNITS)
    fig.suptitle(f"Slice {z} of each reconstruction, one grey window (shaded in the histograms); "
                 "scores inside the object against the noise-free reference", fontsize=10)  # fmt: skip
    path = str(directory / "reconstruction.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _training_figure(plt, directory, res) -> str | None:
    """Loss curves on a log scale: the paper's CNN per epoch, Noise2Inverse per step."""
    curves = [
        (h, t, x, y, scale)
        for h, t, x, y, scale in (
            (res.history, "projection CNN (pairs), per epoch", "epoch", "loss: 1 / PSNR", 1),
            (res.n2i_history, "Noise2Inverse, per 100 steps", "training steps", "loss: MSE", 100),
        )
        if h
    ]
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (hist, title, xlabel, ylabel, scale) in zip(axes[0], curves, strict=True):
        xs = [h["epoch"] * scale for h in hist]
        for key, label in (("loss", "training"), ("val_loss", "validation")):
            if all(key in h for h in hist):
                ax.plot(xs, [h[key] for h in hist], marker="o", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.set_title(title)
    fig.tight_layout()
    path = str(directory / "training.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
