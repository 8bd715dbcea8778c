"""The work of one run of the streaming enhancer: set-up, frames, end of run, results.

A :class:`RunJob` is made by :class:`~bluesky_lowdose.callbacks.ProjectionEnhancer` for each
raw run and touched by its compute worker only: it builds the run's
:class:`~bluesky_lowdose.pipeline.ScanPipeline` (with the model registry's models), feeds it the
frames, publishes the processed run (:class:`~bluesky_lowdose.callbacks.processed.ProcessedRun`)
and keeps the outcome in a :class:`RunResult`.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._paths import safe_name
from .._process import process_identity
from .processed import STORAGE_REASON, ProcessedRun, is_number

if TYPE_CHECKING:
    from .enhancer import ProjectionEnhancer

__all__ = ["RunJob", "RunResult"]

logger = logging.getLogger("bluesky_lowdose.callbacks.enhancer")  # one logger for the enhancer's messages


@dataclass
class RunResult:
    """What the enhancer produced for one raw run (also kept in memory for scripts).

    Attributes
    ----------
    raw_uid, processed_uid : str
        The raw run and the processed run written for it.
    method : str
        The pipeline method run (``"auto"`` resolved), or "" before set-up.
    status : str
        ``"complete"``, ``"partial"`` or ``"running"``.
    reasons : list of str
        Why the result is partial.
    enhancer : object
        The projection step's model (trained or reused), or None.
    slice_model : object
        The Noise2Inverse slice model, or None.
    theta : numpy.ndarray
        Angles (degrees) of the primary frames, in acquisition order.
    raw, enhanced : numpy.ndarray
        Flat/dark-corrected transmission of the primary frames and the projection step's output
        (None for methods without one).
    recon_raw, recon_enhanced : numpy.ndarray or StoredArray
        Reconstructions without and with enhancement (``[z, y, x]``), or None; with a
        ``work_directory``, :class:`~bluesky_lowdose.recon.stored.StoredArray` files there
        (``numpy.asarray`` reads them) until :meth:`ProjectionEnhancer.forget`, or None once
        they are in Tiled when frames are not kept.
    metrics, timings : dict
        Scalars recorded in the ``metrics`` stream.
    history, n2i_history : list of dict
        Loss per epoch of the projection CNN, and per 100 steps of Noise2Inverse.
    latencies : list of float
        Seconds from each frame's arrival to the end of its processing.
    provenance : dict
        The pipeline's provenance (also in the ``provenance`` stream).
    pairs : dict or None
        The corrected reference pairs (``short``, ``long``, ``angles``) the run brought.
    quality : dict or None
        The long exposures' judgement (:attr:`bluesky_lowdose.pipeline.ScanResult.quality`).
    warnings : list of str
        What the user must know about the result (e.g. worse than the raw reconstruction).
    registry : dict
        The model registry's part: ``instrument_id``, ``used`` (kind -> registry uid of a model
        applied instead of training), ``started_from`` (kind -> uid of a model fine-tuned) and
        ``registered`` (kind -> uid of a model this run added).
    first_result : dict or None
        With a registered slice denoiser to start from: when its result came
        (``seconds_after_last_frame``), its long-exposure scores and the model's uid; also the
        ``first_result`` stream and ``recon_first`` volume of the processed run.
    """

    raw_uid: str
    processed_uid: str = ""
    method: str = ""
    status: str = "running"
    reasons: list[str] = field(default_factory=list)
    enhancer: Any = None
    slice_model: Any = None
    theta: np.ndarray | None = None
    raw: np.ndarray | None = None
    enhanced: np.ndarray | None = None
    recon_raw: Any = None
    recon_enhanced: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    n2i_history: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)
    first_result: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


def _quality_summary(res: RunResult) -> str:
    """One line for the stop document: the long exposures' judgement and any warning."""
    q = res.quality
    if not q:
        return ""
    e, r = q["enhanced"], q["raw"]
    text = (f"method {res.method}; vs long exposures: enhanced {e['psnr_db']:.2f} dB / SSIM {e['ssim']:.3f}, "
            f"raw {r['psnr_db']:.2f} dB / SSIM {r['ssim']:.3f}")  # fmt: skip
    if q.get("worse_than_raw"):
        text += " (WORSE than the raw reconstruction)"
    return text


def _join(blocks: list[np.ndarray]) -> np.ndarray:
    """Concatenate and empty ``blocks`` without holding two copies of the whole stack."""
    out = np.empty((sum(len(b) for b in blocks), *blocks[0].shape[1:]), dtype=blocks[0].dtype)
    i = 0
    while blocks:
        block = blocks.pop(0)
        out[i : i + len(block)] = block
        i += len(block)
    return out


class RunJob:
    """Compute-side state of one run (touched by the compute worker only, after creation)."""

    def __init__(self, parent: ProjectionEnhancer, start: dict[str, Any], result: RunResult) -> None:
        self.parent = parent
        self.raw_start = start
        self.ld: dict[str, Any] = dict(start.get("lowdose", {}))
        self.result = result
        self.t0 = time.perf_counter()
        self.progress: dict[str, Any] = {"stage": "waiting for references", "frames_received": 0,
                                         "frames_enhanced": 0, "epoch": 0,
                                         "frames_expected": int(self.ld.get("num_angles", 0))}  # fmt: skip
        self.pipeline: Any = None
        self.run: ProcessedRun | None = None
        self.setup: dict[str, Any] | None = None
        self._pending: dict[str, Any] = {}  # method, pairs and photon statistics chosen at set-up
        self.theta: list[float] = []
        self.raw_frames: list[np.ndarray] = []
        self.enhanced_frames: list[np.ndarray] = []
        self.finished = False
        self._bar: Any = None
        self._preview_at: tuple[float, int] = (time.perf_counter(), 0)  # time and frames of the last preview
        self.instrument: dict[str, Any] | None = None  # the registry's instrument key, once known
        self.reused: dict[str, Any] = {}  # kind -> model taken from the registry (applied)
        self.warm: dict[str, Any] = {}  # kind -> model taken from the registry (fine-tuned)
        self._first: tuple[Any, Any] | None = None  # the first result's volume and its placed file
        self._t_last = time.perf_counter()  # when the stop document came
        #: Line integrals and volumes of this run on disk (bounded memory), or None.
        wd = parent.work_directory
        self.workdir: Path | None = None if wd is None else Path(wd) / safe_name(self.result.raw_uid)

    def fail(self, reason: str) -> None:
        if reason not in self.result.reasons:
            self.result.reasons.append(reason)
            logger.warning("lowdose enhancer, run %s: %s", self.result.raw_uid[:8], reason)

    def write(self, name: str, doc: dict) -> None:
        if self.parent._writer is not None:
            self.parent._writer(name, doc)
        if self.parent.sink is not None:
            self.parent.sink(name, doc)

    # ------------------------------------------------------------------ set-up and training
    def start(self, setup: dict[str, Any]) -> None:
        self.setup = setup
        for warning in (setup.get("flat_field") or {}).get("warnings", ()):  # e.g. flats and darks swapped
            self.result.warnings.append(warning)
            logger.warning("lowdose enhancer, run %s: %s", self.result.raw_uid[:8], warning)
        if setup.get("pairs") is not None:
            self.result.pairs = {k: setup["pairs"][k] for k in ("short", "long", "angles")}
        p = self.parent
        pairs = setup.get("pairs")
        self._registry_lookup(setup.get("frame_shape"))
        model = self._projection_model()
        has_pairs = pairs is not None or model is not None
        method = p.method
        found = self.reused or self.warm
        if method == "auto" and found:  # the registered models (applied or fine-tuned) are the method
            method = {frozenset({"projection", "slices"}): "hybrid", frozenset({"slices"}): "n2i",
                      frozenset({"projection"}): "paper"}[frozenset(found)]  # fmt: skip
        try:
            from ..pipeline import resolve_method

            method = resolve_method(method, has_pairs, has_projection_model=model is not None)
        except ValueError as exc:
            self.fail(
                f"method {p.method!r} not possible: {exc}; {setup.get('pairs_error') or ''}".rstrip("; ")
            )
            method = "none"
        photon = setup.get("photon")
        shape = None
        if pairs is not None:
            shape = pairs["short"].shape[1:]
        self.result.method = method
        self._pending = dict(method=method, has_pairs=has_pairs, photon=photon)
        self._open(method, setup)
        if shape is not None:
            self._make_pipeline(shape)

    # ------------------------------------------------------------------ model registry
    def _registry_lookup(self, frame_shape: tuple[int, int] | None) -> None:
        """Key the run's instrument; with ``registry="only"`` or ``"auto"``, fetch the best
        registered model of each kind for exactly that instrument (never another instrument's):
        applied (``only``) or fine-tuned (``auto``)."""
        p, reg = self.parent, self.result.registry
        if p.registry == "off" or p.client is None or frame_shape is None:
            return
        from ..storage.models import ModelRegistry, instrument_id, instrument_key

        self.instrument = instrument_key(self.raw_start, frame_shape)
        reg["instrument_id"] = instrument_id(self.instrument)
        if p.registry not in ("only", "auto"):
            return
        from ..model import from_bytes

        models, label = (self.reused, "used") if p.registry == "only" else (self.warm, "started_from")
        try:
            registry = ModelRegistry(p.client)
            for kind in (k for k in ("slices", "projection") if self._wants(k)):
                found = registry.best(self.instrument, kind)
                if found is not None:
                    models[kind] = from_bytes(registry.blob(found["uid"]))
                    reg.setdefault(label, {})[kind] = found["uid"]
        except Exception as exc:  # the registry is a shortcut: without it the run trains as usual
            logger.exception("model registry lookup failed")
            self.result.warnings.append(f"model registry lookup failed ({exc!r}): training from scratch")
            models.clear()
            reg.pop(label, None)
            return
        if not self.reused and p.registry == "only":
            self.result.warnings.append(
                f"registry 'only': no registered model for instrument {reg['instrument_id']} "
                f"({self.instrument}) scored above its raw reconstruction: training instead"
            )

    def _wants(self, kind: str) -> bool:
        """Whether a registered model of this kind can serve the requested method (``auto``
        takes either; a projection model given to the enhancer is never replaced)."""
        from ..pipeline import METHODS

        method = self.parent.method
        if self.parent.model is not None and (kind == "projection" or method == "auto"):
            return False  # (with method "auto" the given model decides: "paper")
        if method == "auto":
            return True
        spec = METHODS[method]
        return spec.slices == "n2i" if kind == "slices" else spec.projection == "cnn"  # (bm3d has no model)

    def _projection_model(self) -> Any:
        return self.parent.model if self.parent.model is not None else self.reused.get("projection")

    def _register_models(self) -> None:
        """Add the models this run trained to the registry (complete runs only), with its score."""
        p, res = self.parent, self.result
        if p.registry == "off" or p.client is None or self.instrument is None or res.status != "complete":
            return
        from ..pipeline.methods import BLEND_SEP

        if BLEND_SEP in (res.method or ""):  # (still "auto" when the pipeline never finished)
            # the registered models decide a later run's method (start()): a projection CNN and a
            # Noise2Inverse denoiser found together make it "hybrid", which is not this blend
            res.registry["not_registered"] = (f"{res.method} is a blend of two methods' volumes; the "
                                              "registry reuses one method's models")  # fmt: skip
            return
        from ..storage.models import ModelRegistry
        from ..versions import software_versions

        m = res.metrics
        score = {k: float(m[f"quality_{k}"]) for k in ("psnr_db", "ssim", "raw_psnr_db", "raw_ssim")
                 if f"quality_{k}" in m}  # fmt: skip
        own_projection = p.model is None and "projection" not in self.reused
        trained = {"projection": res.enhancer if own_projection else None,
                   "slices": res.slice_model if "slices" not in self.reused else None}  # fmt: skip
        started = res.registry.get("started_from", {})
        try:
            registry = ModelRegistry(p.client)
            for kind, model in trained.items():
                if model is None or not hasattr(model, "to_bytes") or model is self.warm.get(kind):
                    continue  # (a registered model kept as it was is in the registry already)
                uid = registry.register(
                    model.to_bytes(), kind=kind, method=res.method, instrument=self.instrument,
                    model_hash=model.model_hash, raw_uid=res.raw_uid, processed_uid=res.processed_uid,
                    score=score, started_from=started.get(kind), extra={"versions": software_versions(None)},
                )  # fmt: skip
                res.registry.setdefault("registered", {})[kind] = uid
        except Exception as exc:  # the run is whole in Tiled; only the registry entry is missing
            logger.exception("model registry: could not register the models of %s", res.processed_uid)
            res.warnings.append(f"models not registered: {exc!r}")

    def _make_pipeline(self, shape: tuple[int, int]) -> None:
        from ..pipeline import ScanPipeline

        p, pend = self.parent, self._pending
        photon = pend["photon"]

        def on_epoch(stage: str, epoch: int, logs: dict[str, float]) -> None:
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
            (self.result.history if stage == "projection" else self.result.n2i_history).append(row)
            self.progress["epoch"] = epoch + 1

        try:
            self.pipeline = ScanPipeline(
                shape, pend["method"], has_pairs=pend["has_pairs"], input="transmission",
                open_beam_counts=None if photon is None else photon.open_beam_counts,
                read_noise=0.0 if photon is None else photon.read_noise,
                projection_model=self._projection_model(), projection_training=p.train_kwargs,
                n2i_options=p.n2i_options,
                slice_model=self.reused.get("slices"),  # only there for a method with that step
                backend=p.recon_backend, keep_projections=False, seed=p.seed, progress=p.progress,
                on_epoch=on_epoch, mapper=p.mapper, workdir=self.workdir,
                long_open_beam_counts=(self.setup or {}).get("long_open_beam_counts"),
                auto_candidates=p.auto_options.get("candidates"),
                auto_budget_s=p.auto_options.get("budget_s"), preview=p.preview_interval is not None,
                warm_start=self.warm, on_first_result=self._publish_first,
                isolate_training=p.isolate_training,
            )  # fmt: skip
        except ValueError as exc:  # e.g. photon statistics of another shape
            self.fail(f"pipeline set-up failed: {exc}; reconstructing without enhancement")
            self.pipeline = self._plain_pipeline(shape)
        pairs = self.setup.get("pairs") if self.setup else None
        if pairs is not None:  # the projection step learns from the pairs; every method is judged by them
            training = self.pipeline.needs_fit
            if training:
                self.progress["stage"] = "training"
            t = time.perf_counter()
            self.result.timings["training_started_s"] = t - self.t0
            try:
                self.pipeline.fit(pairs["short"], pairs["long"], reference_angles=pairs["angles"])
            except Exception as exc:
                self.fail(f"training failed: {exc}; reconstructing without enhancement")
                self.pipeline = self._plain_pipeline(shape)
            if training:
                self.result.timings["training_s"] = time.perf_counter() - t
        model = self.pipeline.models.get("projection")
        if model is not None and hasattr(model, "to_bytes"):
            self.result.enhancer = model
            self.run.emit_model("model", "model_keras", model)
            rows = self.result.history
            hist = {k: [h[k] for h in rows if k in h] for k in rows[0] if k != "epoch"} if rows else None
            hist = hist if hist is not None else (model.provenance.get("history") or {})
            self.run.emit_history("training", hist)
        self.progress["stage"] = "enhancing"

    def _plain_pipeline(self, shape: tuple[int, int]) -> Any:
        """The fallback: reconstruction without enhancement."""
        from ..pipeline import ScanPipeline

        p = self.parent
        return ScanPipeline(shape, "none", backend=p.recon_backend, mapper=p.mapper, workdir=self.workdir,
                            preview=p.preview_interval is not None)  # fmt: skip

    def _open(self, method: str, setup: dict[str, Any]) -> None:
        from ..pipeline import method_description
        from ..versions import software_versions

        p = self.parent
        pairs = setup.get("pairs")
        photon = setup.get("photon")
        prov: dict[str, Any] = {
            "method": method,
            "requested_method": p.method,
            "description": method_description(method),
            "pipeline": "bluesky_lowdose.pipeline.ScanPipeline (as lowdose-tomo enhance and evaluate)",
            "input": "flat/dark-corrected transmission",
            "flat_field": setup.get("flat_field"),
            "photon_statistics": None if photon is None else photon.describe(),
            "reused_model": self._projection_model() is not None,
            "registry": dict(self.result.registry),
            "projection_training": {k: v for k, v in p.train_kwargs.items() if _jsonable(v)},
            "n2i_options": {k: v for k, v in p.n2i_options.items() if _jsonable(v)},
            "training_process": "child" if p.isolate_training else "enhancer",
            "software": software_versions(p.recon_backend_name()),
            "pairs_error": setup.get("pairs_error"),
        }
        if pairs is not None:
            prov["training_pairs"] = [
                {"angle": a, "short_event_uid": s, "long_event_uid": lg}
                for a, s, lg in zip(pairs["angles"], pairs["short_uids"], pairs["long_uids"], strict=True)
            ]
        model = self._projection_model()
        if model is not None and hasattr(model, "model_hash"):
            prov["model_hash"] = model.model_hash
        md = {
            "plan_name": "lowdose_enhancement",
            "original_run_uid": self.result.raw_uid,
            "original_scan_id": self.raw_start.get("scan_id"),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "lowdose": self.ld,
            "provenance": prov,
            # who writes this run: a later process closes it if this one dies with it open
            "processor": process_identity(),
        }
        if self.raw_start.get("sample") is not None:  # the start schema allows a string or a dict, not null
            md["sample"] = self.raw_start["sample"]
        self.run = ProcessedRun(md, self.write)
        self.result.processed_uid = self.run.uid

    # ------------------------------------------------------------------ frames
    def frames(self, batch: list[tuple]) -> None:
        if self.pipeline is None:
            self._make_pipeline(batch[0][3].shape)
        index = self.pipeline.n_frames
        stack = np.stack([b[3] for b in batch])
        theta = np.array([b[2] for b in batch], np.float64)
        if batch[0][0] != index:
            raise RuntimeError(f"frame {batch[0][0]} arrived but frame {index} is next")
        enhanced = self.pipeline.add(index, theta, stack)
        done = time.perf_counter()
        self.result.latencies.extend(done - b[5] for b in batch)
        self.theta.extend(theta.tolist())
        if self.parent.keep_frames:
            self.raw_frames.append(stack)
        if enhanced is not None:
            if self.parent.keep_frames:
                self.enhanced_frames.append(enhanced)
            rows = [
                {"angle": angle, "raw_seq_num": seq, "raw_event_uid": uid}
                for _, seq, angle, _, uid, _ in batch
            ]
            if self.parent.volume_directory is not None:  # one HDF5 stack, announced as it grows
                self.run.emit_frames(
                    "enhanced", "enhanced_image", enhanced, rows, self._folder() / "enhanced.h5"
                )
            else:
                for row, frame in zip(rows, enhanced, strict=True):
                    self.run.emit("enhanced", {"enhanced_image": frame, **row})
        self.progress["frames_enhanced"] += len(batch)
        self._preview()
        if self.parent.progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.progress["frames_expected"] or None, desc="frames", unit="frame")
            self._bar.update(len(batch))

    def _preview(self, *, last: bool = False) -> None:
        """Publish the live preview when ``preview_interval`` has passed (``last``: whenever
        frames came since the previous one)."""
        preview = None if self.pipeline is None else self.pipeline.preview
        if preview is None or self.run is None or self.run.closed or preview.n_frames == self._preview_at[1]:
            return  # (the first "previous" preview had 0 frames)
        now = time.perf_counter()
        if not last and now - self._preview_at[0] < float(self.parent.preview_interval or 0.0):
            return
        try:
            planes = preview.images()
            angle = self.theta[-1] if self.theta else float("nan")
            self.run.emit("preview", {**planes, "frames": preview.n_frames, "angle_deg": float(angle),
                                      "binning": preview.bin})  # fmt: skip
        except Exception as exc:  # a picture: the scan and its result go on without it
            logger.exception("lowdose enhancer, run %s: preview failed", self.result.raw_uid[:8])
            if not any(w.startswith("preview failed") for w in self.result.warnings):
                self.result.warnings.append(f"preview failed: {exc!r}")
        self._preview_at = (now, preview.n_frames)

    # ------------------------------------------------------------------ end of run
    def finish(self, stop_doc: dict[str, Any]) -> None:
        res = self.result
        t_last = self._t_last = time.perf_counter()
        if stop_doc.get("exit_status", "success") != "success":
            status, why = stop_doc.get("exit_status"), stop_doc.get("reason", "")
            self.fail(f"raw run ended with exit_status={status!r}: {why}")
        n = 0 if self.pipeline is None else self.pipeline.n_frames
        expected = int(self.ld.get("num_angles", n))
        if n < expected:
            self.fail(f"{n} of {expected} projections received")
        res.theta = np.asarray(self.theta)
        self._preview(last=True)
        if self.raw_frames:  # one stack at a time: the blocks are released as they are joined
            res.raw = _join(self.raw_frames)
        if self.enhanced_frames:
            res.enhanced = _join(self.enhanced_frames)
        if self.pipeline is not None and n >= max(2, self.pipeline.subsets) and self.parent.reconstruct:
            self.progress["stage"] = (
                "reconstructing" if self.pipeline.spec.slices is None else "learning slices"
            )
            try:
                out = self.pipeline.finish()
            except Exception as exc:
                self.fail(f"reconstruction/slice step failed: {exc}")
            else:
                self._publish(out)
        elif self.pipeline is not None and n and self.parent.reconstruct:
            self.fail(f"{n} projection(s) are too few to reconstruct")
        if self.pipeline is not None:
            self.pipeline.discard()  # line integrals not reconstructed (reconstructed ones are gone)
        res.timings["after_last_frame_s"] = time.perf_counter() - t_last
        self._metrics()
        self._close()

    def _publish(self, out: Any) -> None:
        res = self.result
        res.recon_raw, res.recon_enhanced = out.raw_volume, out.volume
        res.provenance = out.provenance
        res.method = out.method  # "auto" resolved by the long exposures
        res.quality = out.quality
        res.warnings = [*res.warnings, *(w for w in out.warnings if w not in res.warnings)]
        q = out.quality
        if q is not None:
            res.metrics.update(_quality_scalars(q))
            if q.get("ceiling_psnr_db") is not None:
                res.metrics["quality_ceiling_psnr_db"] = q["ceiling_psnr_db"]
        res.metrics.update(_noise_free_scalars(out.provenance.get("auto") or {}))
        for warning in out.warnings:
            logger.warning("lowdose enhancer, run %s: %s", res.raw_uid[:8], warning)
        res.timings.update({f"pipeline_{k}": v for k, v in out.timings.items()})
        slice_model = out.models.get("slices")
        if slice_model is not None:
            res.slice_model = slice_model
            self.run.emit_model("model_n2i", "model_keras", slice_model)
            self.run.emit_history("training_n2i", slice_model.provenance.get("history") or {})
        if self.parent.volume_directory is not None:
            self._register_volumes(out)
        blob = json.dumps(out.provenance, default=str).encode()
        self.run.emit("provenance", {"provenance_json": np.frombuffer(blob, dtype=np.uint8)})  # UTF-8 JSON

    def _publish_first(self, first: Any) -> None:
        """The registered denoiser's result, before fine-tuning: stream ``first_result`` (when and
        how it scored) and volume ``recon_first``; the final result follows in the same run."""
        res = self.result
        seconds = time.perf_counter() - self._t_last
        uid = res.registry.get("started_from", {}).get("slices", "")
        row: dict[str, Any] = {
            "seconds_after_last_frame": seconds, "model_uid": uid,
            "label": f"first result: registered model {uid} as is; recon_enhanced replaces it (fine-tuned)",
        }  # fmt: skip
        if first.quality is not None:
            row.update(_quality_scalars(first.quality))
        res.first_result = dict(row)
        res.timings["first_result_s"] = seconds
        if self.parent.volume_directory is not None:
            from ..recon.stored import place_volume

            placed = place_volume(first.volume, self._folder() / "recon_first.h5")
            self.run.register_volume("recon_first", "slice", placed)
            self._first = (first.volume, placed)
        self.run.emit("first_result", row)
        logger.info(
            "lowdose enhancer, run %s: first result %.1f s after the last frame", res.raw_uid[:8], seconds
        )

    def _folder(self) -> Path:
        """This processed run's folder in ``volume_directory`` (volumes, enhanced frames)."""
        return Path(self.parent.volume_directory) / safe_name(self.result.processed_uid)

    def _register_volumes(self, out: Any) -> None:
        """Write each volume once into ``volume_directory/<processed uid>/`` (a volume in the work
        directory is moved, not copied) and announce it in the processed run: Tiled serves the
        files in place.  Method ``none`` has one volume, announced as both streams."""
        from ..recon.stored import StoredArray, place_volume

        res = self.result
        t0 = time.perf_counter()
        folder = self._folder()
        if self._first is not None and out.volume is self._first[0]:  # the first result was kept
            enhanced = self._first[1]
        else:
            enhanced = place_volume(out.volume, folder / "recon_enhanced.h5")
        same = out.raw_volume is out.volume
        raw = enhanced if same else place_volume(out.raw_volume, folder / "recon_raw.h5")
        self.run.register_volume("recon_raw", "slice", raw)
        self.run.register_volume("recon_enhanced", "slice", enhanced)
        # results read from disk follow their files; those in memory stay there
        if isinstance(out.volume, StoredArray):
            res.recon_enhanced = enhanced
        if isinstance(out.raw_volume, StoredArray):
            res.recon_raw = raw
        res.timings["volumes_written_s"] = time.perf_counter() - t0

    def remove_files(self) -> None:
        """Delete the run's files in the work directory (its results are in Tiled)."""
        if self.pipeline is not None:
            self.pipeline.discard()
        if self.workdir is not None and self.workdir.exists():
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    def _metrics(self) -> None:
        """Scalars anyone can check without a ground truth: the reference pairs."""
        from ..pipeline.scoring import reference_pair_check

        res = self.result
        enh = res.enhancer
        pairs = (self.setup or {}).get("pairs")
        if enh is not None and pairs is not None:
            try:
                raw_db, enh_db, problem = reference_pair_check(pairs["short"], pairs["long"],
                                                               enh.enhance(pairs["short"]))  # fmt: skip
            except Exception as exc:
                self.fail(f"metrics failed: {exc}")
            else:
                res.metrics["reference_psnr_short_db"] = raw_db
                res.metrics["reference_psnr_enhanced_db"] = enh_db
                if problem:
                    self.fail(problem)
        if self.parent.extra_metrics is not None and not res.reasons:
            try:
                extra = self.parent.extra_metrics(res)
                res.metrics.update({k: float(v) for k, v in extra.items() if is_number(v)})
            except Exception as exc:
                logger.exception("extra metrics failed")
                self.fail(f"extra metrics failed: {exc!r}")

    def _close(self) -> None:
        res, p = self.result, self.parent
        if self.run is None:
            self._open(res.method or "none", self.setup or {})
        if p._writer is not None and not p._writer.flush(timeout=p.write_timeout):
            self.fail(f"{STORAGE_REASON}Tiled writes still pending at the end of the run")
        if p._writer_failed(res.processed_uid):
            self.fail(
                f"{STORAGE_REASON}writing to Tiled failed: the processed run is in the backup directory"
            )
        res.status = "complete" if not res.reasons else "partial"
        res.timings["total_s"] = time.perf_counter() - self.t0
        data: dict[str, Any] = {f"timing_{k}": float(v) for k, v in res.timings.items()}
        data.update({k: float(v) for k, v in res.metrics.items()})
        data["method"] = res.method
        data["status"] = res.status
        data["reasons"] = "; ".join(res.reasons)
        data["warnings"] = "; ".join(res.warnings)
        self.run.emit("metrics", data)
        self.run.close(res.status, res.reasons, summary=_quality_summary(res))
        if not p.keep_frames and self.workdir is not None:
            res.recon_raw = res.recon_enhanced = None
            self.remove_files()
        if p._writer is not None:
            # the writer is asynchronous: only after it has drained is "complete" true
            if not p._writer.flush(timeout=p.write_timeout):
                logger.error("processed run %s: Tiled writes still pending", res.processed_uid)
                res.status = "partial"
                res.reasons.append(f"Tiled writes still pending {p.write_timeout} s after the end of the run")
            elif p._writer_failed(res.processed_uid) and res.status == "complete":
                res.status = "partial"
                res.reasons.append(
                    "writing to Tiled failed at the end: the processed run is in the backup directory"
                )
            else:
                self._check_served()
        self._register_models()

    def _check_served(self) -> None:
        """Read one value of the files registered in place back through Tiled.

        Tiled accepts a StreamResource anywhere but serves only files inside its readable
        storage: a volume folder outside it gives a run that looks whole and cannot be read.
        The writer registers the files when the stop document arrives, so this runs after it:
        the result turns partial (the stop document in Tiled keeps ``success``).
        """
        p = self.parent
        if p.client is None or self.run is None or not self.run.in_place:
            return
        from ..storage import PROCESSED, stream_array
        from ..storage.catalog import read_first_element

        stream, key = next(iter(self.run.in_place.items()))
        try:  # one request: the client's retries of the server's error would take ~25 s
            read_first_element(stream_array(p.client[PROCESSED][self.result.processed_uid], stream, key))
        except Exception as exc:
            self.result.status = "partial"
            self.fail(
                f"{STORAGE_REASON}Tiled does not serve {self._folder()} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): the folder must be in the server's "
                "readable storage (tiled serve ... -r DIR; lowdose-tomo serve --data-dir D reads D/volumes)"
            )

    def crashed(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # one line: the folder, the numbers
            self.fail(f"processing stopped: {exc.strerror or exc}")
        else:
            self.fail(f"processing failed: {exc!r}")
            logger.error("lowdose enhancer crashed:\n%s", traceback.format_exc())
        if self.pipeline is not None:
            self.pipeline.discard()
        try:
            if self.run is None or not self.run.closed:
                self._close()
        except Exception:
            logger.exception("could not close processed run %s", self.result.processed_uid)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self.progress["stage"] = "done"
        self.finished = True
        self.result.timings.setdefault("total_s", time.perf_counter() - self.t0)
        if not self.parent.keep_frames:  # a long-lived process: the run's state goes with its end
            if self.pipeline is not None:
                self.pipeline.discard()
            self.pipeline = None
            self.reused, self.warm, self._first = {}, {}, None
            self.setup = None  # (the reference frames; the result keeps its pairs until forgotten)
        self.result.done.set()


def _quality_scalars(q: dict[str, Any]) -> dict[str, float]:
    """The long exposures' scores of a result as metrics (``quality_psnr_db``, ``quality_ssim``,
    ``quality_raw_psnr_db``, ``quality_raw_ssim``)."""
    return {f"quality_{prefix}{m}": q[part][m] for part, prefix in (("enhanced", ""), ("raw", "raw_"))
            for m in ("psnr_db", "ssim")}  # fmt: skip


def _noise_free_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Where ``auto`` judged by recorrupted scans (the long exposures barely see the noise): their
    estimate of the raw reconstruction's PSNR against the noise-free one, the winner's gain over it (at
    the recorrupted scan's noise) and the least gain it has at the scan's own noise
    (``noise_free_raw_psnr_db``, ``noise_free_gain_db``, ``noise_free_gain_at_scan_noise_db``; 0 for the
    raw reconstruction); nothing elsewhere."""
    nf = record.get("noise_free")
    if nf is None:
        return {}
    winner = record.get("candidates", {}).get(record.get("winner"), {}).get("noise_free", {})
    return {"noise_free_raw_psnr_db": float(nf["raw_psnr_db"]),
            "noise_free_gain_db": float(winner.get("gain_psnr_db", 0.0)),
            "noise_free_gain_at_scan_noise_db": float(winner.get("at_scan_noise_db", 0.0))}  # fmt: skip


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True
