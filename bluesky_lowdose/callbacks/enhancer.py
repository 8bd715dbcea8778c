"""Streaming CNN enhancement of a low-dose scan, while it runs.

:class:`ProjectionEnhancer` is subscribed to the RunEngine. For each run of
``lowdose_tomo_scan`` it

1. collects darks, flats and the long/short reference pairs as they arrive and
   flat/dark-corrects each exposure with its own darks and flats;
2. starts training as soon as the pairs are complete (before the rotation, not after it);
3. corrects and enhances every ``primary`` frame as it arrives -- frames that arrive while
   the model trains wait in a bounded queue;
4. at the end of the run, reconstructs the raw and the enhanced stacks;
5. writes everything as a run in the ``processed`` catalog of Tiled, linked to the raw
   run by ``original_run_uid``, with provenance, the model itself, and metrics.

The RunEngine-side ``__call__`` only puts documents on a queue. Reading frames, training,
enhancement, reconstruction and Tiled writes happen on two threads per run (documents;
compute) and a writer thread, so the scan is never held up, and nothing raised here
reaches the RunEngine.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from event_model import DocumentRouter, RunRouter, compose_run

from .frames import Frame, FrameResolver
from .threaded import ThreadedCallback

__all__ = ["ProjectionEnhancer", "RunResult"]

logger = logging.getLogger(__name__)

PROCESSED_STREAMS = ("training", "model", "enhanced", "recon_raw", "recon_enhanced", "metrics")

#: Default training parameters of the streaming enhancer (fits a demo on 2 CPU cores).
DEFAULT_TRAIN_KWARGS: dict[str, Any] = {"model": "unet", "epochs": 20, "patience": 6, "seed": 0}


@dataclass
class RunResult:
    """What the enhancer produced for one raw run (also kept in memory for scripts).

    Attributes
    ----------
    raw_uid, processed_uid : str
        The raw run and the processed run written for it.
    status : str
        ``"complete"``, ``"partial"`` or ``"running"``.
    reasons : list of str
        Why the result is partial.
    enhancer : object
        The trained (or reused) :class:`bluesky_lowdose.model.Enhancer`, or None.
    theta : numpy.ndarray
        Angles (degrees) of the primary frames, in acquisition order.
    raw, enhanced : numpy.ndarray
        Flat/dark-corrected transmission of the primary frames and its enhanced version.
    recon_raw, recon_enhanced : numpy.ndarray
        Reconstructed volumes (``[z, y, x]``), or None.
    metrics, timings : dict
        Scalars recorded in the ``metrics`` stream.
    history : list of dict
        Loss and validation loss per epoch.
    latencies : list of float
        Seconds from each frame's arrival to its enhancement (includes waiting for the model).
    """

    raw_uid: str
    processed_uid: str = ""
    status: str = "running"
    reasons: list[str] = field(default_factory=list)
    enhancer: Any = None
    theta: np.ndarray | None = None
    raw: np.ndarray | None = None
    enhanced: np.ndarray | None = None
    recon_raw: np.ndarray | None = None
    recon_enhanced: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event, repr=False)


def _software_versions(backend: str | None) -> dict[str, str]:
    import os
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("bluesky-lowdose", "bluesky", "event-model", "tiled", "bluesky-tiled-plugins", "keras",
                 "numpy", "tensorflow-cpu", "tensorflow", "torch", "jax"):  # fmt: skip
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass  # not installed: nothing to record

    out["keras_backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend:
        out["reconstruction_backend"] = backend
    return out


class _Item:
    """Work for the compute thread."""

    __slots__ = ("kind", "payload")

    def __init__(self, kind: str, payload: Any = None) -> None:
        self.kind = kind
        self.payload = payload


class _RunProcessor(DocumentRouter):
    """Per-run state. ``handle`` runs on the RunEngine thread and only enqueues."""

    def __init__(self, parent: ProjectionEnhancer, start: dict[str, Any]) -> None:
        super().__init__()
        self.parent = parent
        self.raw_start = start
        self.ld: dict[str, Any] = dict(start.get("lowdose", {}))
        self.result = RunResult(raw_uid=start["uid"])
        self.t0 = time.perf_counter()
        self.resolver = FrameResolver(
            image_key=f"{self.ld['detector']}_image" if self.ld.get("detector") else None
        )
        self.angle_key: str = self.ld.get("rotation") or "rotation"
        self.calib: dict[str, list[np.ndarray]] = {}
        self.refs: dict[str, dict[float, tuple[np.ndarray, str]]] = {"short": {}, "long": {}}
        self.flat_dark: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.training_sent = False
        self.primary_seen: set[int] = set()
        self._calib_seen: set[tuple[str, int]] = set()
        self._pairs: dict[str, Any] | None = None
        self.progress: dict[str, Any] = {"stage": "waiting for references", "frames_received": 0,
                                         "frames_enhanced": 0, "epoch": 0,
                                         "frames_expected": int(self.ld.get("num_angles", 0))}  # fmt: skip
        self.docs: queue.Queue[tuple[str, dict] | None] = queue.Queue()
        self.work: queue.Queue[_Item] = queue.Queue(maxsize=parent.frame_queue_size)
        self.doc_thread = threading.Thread(target=self._doc_loop, name="lowdose-docs", daemon=True)
        self.compute_thread = threading.Thread(target=self._compute_loop, name="lowdose-compute", daemon=True)
        self.writer: ThreadedCallback | None = None
        self.processed_start: dict[str, Any] | None = None
        self.compose: Any = None
        self.stream_bundles: dict[str, Any] = {}
        self._bar: Any = None
        self._stopped = False
        self.doc_thread.start()
        self.compute_thread.start()

    # ---------------------------------------------------------------- RunEngine side
    def handle(self, name: str, doc: dict) -> None:
        """Hand a document over (the only thing done on the RunEngine's thread)."""
        self.docs.put((name, doc))

    # ---------------------------------------------------------------- document thread
    def _doc_loop(self) -> None:
        while True:
            item = self.docs.get()
            if item is None:
                return
            name, doc = item
            try:
                self(name, doc)
            except Exception as exc:  # never let one bad document stop the run's processing
                self._fail(f"{name} document could not be processed: {exc!r}")
                logger.exception("lowdose enhancer: %s document failed", name)
            if name == "stop":
                self.resolver.close()
                self._put(_Item("stop", doc))
                return

    def start(self, doc: dict) -> None:
        pass

    def descriptor(self, doc: dict) -> None:
        self.resolver.descriptor(doc)

    def stream_resource(self, doc: dict) -> None:
        self.resolver.stream_resource(doc)

    def stream_datum(self, doc: dict) -> None:
        self.resolver.stream_datum(doc)

    def event(self, doc: dict) -> None:
        self._frames("event", doc)

    def event_page(self, doc: dict) -> None:
        self._frames("event_page", doc)

    def _frames(self, name: str, doc: dict) -> None:
        from ..streams import PRIMARY

        for frame in self.resolver.events(name, doc):
            if frame.stream == PRIMARY:
                self._primary(frame)
            elif frame.stream.startswith(("dark_", "flat_")):
                if (frame.stream, frame.seq_num) not in self._calib_seen:  # a rewind may repeat one
                    self._calib_seen.add((frame.stream, frame.seq_num))
                    self.calib.setdefault(frame.stream, []).append(frame.image)
            elif frame.stream.startswith("reference_"):
                kind = frame.stream.removeprefix("reference_")
                angle = self._nominal_angle(float(frame.data.get(self.angle_key, np.nan)))
                self.refs.setdefault(kind, {})[angle] = (frame.image, frame.event_uid)
                expected = len(self.ld.get("reference_angles", ()))
                complete = all(len(self.refs.get(k, {})) >= expected for k in ("short", "long"))
                if expected and complete and not self.training_sent:
                    self._send_training()  # the pairs are in: train while the rotation runs

    def _nominal_angle(self, readback: float) -> float:
        """The planned reference angle a readback belongs to (real motors jitter)."""
        planned = [float(a) for a in self.ld.get("reference_angles", ())]
        if planned:
            nearest = min(planned, key=lambda a: abs(a - readback))
            if abs(nearest - readback) <= self.parent.angle_tolerance:
                return nearest
        return round(readback, 6)

    def _corrector(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind not in self.flat_dark:
            flats, darks = self.calib.get(f"flat_{kind}"), self.calib.get(f"dark_{kind}")
            missing = [s for s, v in ((f"flat_{kind}", flats), (f"dark_{kind}", darks)) if not v]
            if missing:
                raise LookupError(f"missing stream(s) {missing}: cannot flat/dark-correct {kind} exposures")
            self.flat_dark[kind] = (np.stack(flats), np.stack(darks))
        return self.flat_dark[kind]

    def _correct(self, kind: str, frames: np.ndarray) -> np.ndarray:
        from ..recon import flat_dark_correct

        flats, darks = self._corrector(kind)
        return flat_dark_correct(frames, flats, darks)

    def _reference_pairs(self) -> dict[str, Any]:
        """The flat/dark-corrected reference pairs (built once; raises when there are none)."""
        if self._pairs is None:
            angles = sorted(set(self.refs["short"]) & set(self.refs["long"]))
            if not angles:
                raise LookupError(
                    "no reference pairs (streams reference_short/reference_long) before the rotation"
                )
            if len(angles) < self.parent.min_pairs:
                raise LookupError(f"{len(angles)} reference pair(s), {self.parent.min_pairs} needed")
            short = np.stack([self.refs["short"][a][0] for a in angles])
            long_ = np.stack([self.refs["long"][a][0] for a in angles])
            if short.shape != long_.shape:
                raise ValueError(f"short references {short.shape} and long references {long_.shape} differ")
            self._pairs = {
                "short": self._correct("short", short),
                "long": self._correct("long", long_),
                "angles": angles,
                "short_uids": [self.refs["short"][a][1] for a in angles],
                "long_uids": [self.refs["long"][a][1] for a in angles],
            }
        return self._pairs

    def _send_training(self) -> None:
        self.training_sent = True
        if self.parent.model is not None:
            self._put(_Item("model", self.parent.model))
            return
        try:
            pairs = self._reference_pairs()
        except Exception as exc:
            self._fail(f"training not possible: {exc}")
            self._put(_Item("no-model"))
            return
        self._put(_Item("train", pairs))

    def _primary(self, frame: Frame) -> None:
        if not self.training_sent:
            self._send_training()
        if frame.seq_num in self.primary_seen:
            logger.warning("primary event %d seen twice (pause/rewind); keeping the first", frame.seq_num)
            return
        self.primary_seen.add(frame.seq_num)
        self.progress["frames_received"] += 1
        angle = float(frame.data.get(self.angle_key, np.nan))
        corrected = self._correct("short", frame.image)
        self._put(_Item("frame", (frame.seq_num, angle, corrected, frame.event_uid, time.perf_counter())))

    def _put(self, item: _Item) -> None:
        # blocks this thread (never the RunEngine) while the queue is full, unless the
        # compute thread has died: then the item is dropped instead of hanging forever
        while self.compute_thread.is_alive():
            try:
                self.work.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _fail(self, reason: str) -> None:
        if reason not in self.result.reasons:
            self.result.reasons.append(reason)
            logger.warning("lowdose enhancer, run %s: %s", self.result.raw_uid[:8], reason)

    # ---------------------------------------------------------------- compute thread
    def _compute_loop(self) -> None:
        enhancer = None
        frames: dict[int, tuple[float, np.ndarray, str]] = {}
        enhanced: dict[int, np.ndarray] = {}
        stop_doc: dict[str, Any] = {}
        timings = self.result.timings
        try:
            while True:
                item = self.work.get()
                if item.kind == "train":
                    enhancer = self._train(item.payload)
                    self._open_processed(enhancer, item.payload)
                elif item.kind == "model":
                    enhancer = item.payload
                    self._open_processed(enhancer, None)
                elif item.kind == "no-model":
                    self._open_processed(None, None)
                elif item.kind == "frame":
                    batch = [item.payload]
                    stop_item = None
                    while len(batch) < self.parent.enhance_batch:
                        try:
                            nxt = self.work.get_nowait()
                        except queue.Empty:
                            break
                        if nxt.kind != "frame":
                            stop_item = nxt
                            break
                        batch.append(nxt.payload)
                    self._open_processed(enhancer, None)
                    for seq, angle, img, uid, _ in batch:
                        frames[seq] = (angle, img, uid)
                    if enhancer is not None:
                        self._enhance(enhancer, batch, enhanced)
                    if stop_item is not None:
                        stop_doc = stop_item.payload
                        break
                elif item.kind == "stop":
                    stop_doc = item.payload
                    break
            self._open_processed(enhancer, None)
            self._finish(enhancer, frames, enhanced, stop_doc)
        except Exception as exc:
            self._fail(f"processing failed: {exc!r}")
            logger.error("lowdose enhancer crashed:\n%s", traceback.format_exc())
            try:
                self._open_processed(enhancer, None)
                if not self._stopped:
                    self._close_processed(stop_doc)
            except Exception:
                logger.exception("could not close the processed run normally; closing it as failed")
                self._emergency_stop()
        finally:
            if self._bar is not None:
                self._bar.close()
            timings["total_s"] = time.perf_counter() - self.t0
            self.progress["stage"] = "done"
            self.result.done.set()

    def _train(self, pairs: dict[str, Any]) -> Any:
        from ..model import train

        self.progress["stage"] = "training"
        t = time.perf_counter()
        self.result.timings["training_started_s"] = t - self.t0

        def on_epoch(epoch: int, logs: dict) -> None:
            self.progress["epoch"] = epoch + 1
            self.result.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

        try:
            enhancer = train(pairs["short"], pairs["long"], progress=self.parent.progress, on_epoch=on_epoch,
                             **self.parent.train_kwargs)  # fmt: skip
        except Exception as exc:
            self._fail(f"training failed: {exc}")
            enhancer = None
        self.result.timings["training_s"] = time.perf_counter() - t
        self.progress["stage"] = "enhancing" if enhancer is not None else "collecting (no model)"
        return enhancer

    def _enhance(
        self, enhancer: Any, batch: list[tuple[int, float, np.ndarray, str, float]], out: dict
    ) -> None:
        t = time.perf_counter()
        stack = np.stack([b[2] for b in batch])
        try:
            result = enhancer.enhance(stack)
        except Exception as exc:
            self._fail(f"enhancement failed: {exc}")
            return
        done = time.perf_counter()
        self.result.timings["enhance_s"] = self.result.timings.get("enhance_s", 0.0) + done - t
        self.result.latencies.extend(done - b[4] for b in batch)
        for (seq, angle, _, uid, _), frame in zip(batch, result, strict=True):
            out[seq] = frame
            self._emit_event("enhanced", {"enhanced_image": frame, "angle": angle, "raw_seq_num": seq,
                                          "raw_event_uid": uid})  # fmt: skip
        self.progress["frames_enhanced"] += len(batch)
        if self.parent.progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.progress["frames_expected"] or None, desc="enhance", unit="frame")
            self._bar.update(len(batch))

    # ---------------------------------------------------------------- processed run
    def _open_processed(self, enhancer: Any, pairs: dict[str, Any] | None) -> None:
        if self.processed_start is not None:
            return
        prov: dict[str, Any] = {
            "method": "Yang et al., Sci. Rep. 8:2575 (2018): CNN trained on long/short reference pairs",
            "input": "flat/dark-corrected transmission, each exposure with its own flats and darks",
            "software": _software_versions(self.parent.recon_backend_name()),
            "reused_model": self.parent.model is not None,
            "train_kwargs": {k: v for k, v in self.parent.train_kwargs.items() if _jsonable(v)},
            "status": "running",
            "reasons": list(self.result.reasons),
        }
        if pairs is not None:
            prov["training_pairs"] = [
                {"angle": a, "short_event_uid": s, "long_event_uid": lg}
                for a, s, lg in zip(pairs["angles"], pairs["short_uids"], pairs["long_uids"], strict=True)
            ]
        if enhancer is not None:
            model_prov = json.loads(json.dumps(enhancer.provenance, default=str))
            prov["model"] = model_prov
            prov["model_hash"] = enhancer.model_hash
            prov["architecture"] = enhancer.architecture
        md = {
            "plan_name": "lowdose_enhancement",
            "original_run_uid": self.result.raw_uid,
            "original_scan_id": self.raw_start.get("scan_id"),
            "lowdose": self.ld,
            "provenance": prov,
        }
        bundle = compose_run(metadata=md)
        self.compose = bundle
        self.processed_start = bundle.start_doc
        self.result.processed_uid = bundle.start_doc["uid"]
        self.writer = self.parent._writer
        self._write("start", bundle.start_doc)
        if enhancer is not None:
            self.result.enhancer = enhancer
            self._emit_model(enhancer)

    def _write(self, name: str, doc: dict) -> None:
        if self.writer is not None:
            self.writer(name, doc)
        if self.parent.sink is not None:
            self.parent.sink(name, doc)

    def _emit_event(self, stream: str, data: dict[str, Any]) -> None:
        if stream not in self.stream_bundles:
            keys = {}
            for k, v in data.items():
                arr = np.asarray(v)
                if isinstance(v, str):
                    keys[k] = {"source": "lowdose", "dtype": "string", "shape": []}
                else:
                    keys[k] = {"source": "lowdose", "dtype": "array" if arr.ndim else "number",
                               "shape": list(arr.shape), "dtype_numpy": arr.dtype.str}  # fmt: skip

            bundle = self.compose.compose_descriptor(name=stream, data_keys=keys)
            self.stream_bundles[stream] = bundle
            self._write("descriptor", bundle.descriptor_doc)
        bundle = self.stream_bundles[stream]
        now = time.time()
        ev = bundle.compose_event(data=data, timestamps=dict.fromkeys(data, now))
        self._write("event", ev)

    def _emit_model(self, enhancer: Any) -> None:
        blob = np.frombuffer(enhancer.to_bytes(), dtype=np.uint8)
        self._emit_event("model", {"model_keras": blob, "model_hash": enhancer.model_hash})
        rows = self.result.history
        if not rows:  # a reused model: its own training history, stored as {name: [values]}
            hist = enhancer.provenance.get("history", {}) or {}
            n = max((len(v) for v in hist.values()), default=0)
            rows = [{"epoch": i + 1, **{k: v[i] for k, v in hist.items() if i < len(v)}} for i in range(n)]
        for row in rows:
            self._emit_event("training", {k: float(v) for k, v in row.items() if _is_number(v)})

    def _finish(self, enhancer: Any, frames: dict, enhanced: dict, stop_doc: dict[str, Any]) -> None:
        res = self.result
        if stop_doc.get("exit_status", "success") != "success":
            status, why = stop_doc.get("exit_status"), stop_doc.get("reason", "")
            self._fail(f"raw run ended with exit_status={status!r}: {why}")
        order = sorted(frames)
        if order:
            res.theta = np.array([frames[s][0] for s in order])
            res.raw = np.stack([frames[s][1] for s in order])
            if enhancer is not None and all(s in enhanced for s in order):
                res.enhanced = np.stack([enhanced[s] for s in order])
        expected = int(self.ld.get("num_angles", len(order)))
        if len(order) < expected:
            self._fail(f"{len(order)} of {expected} projections received")
        if enhancer is not None and len(enhanced) < len(order):
            self._fail(f"{len(enhanced)} of {len(order)} projections enhanced")
        if self.parent.reconstruct and res.raw is not None and len(order) >= 2:
            self.progress["stage"] = "reconstructing"
            self._reconstruct()
        self._metrics()
        self._close_processed(stop_doc)

    def _reconstruct(self) -> None:
        from ..recon import reconstruct, transmission_to_line_integrals

        res = self.result
        t = time.perf_counter()
        kw = {"backend": self.parent.recon_backend, "progress": self.parent.progress}
        try:
            res.recon_raw = reconstruct(transmission_to_line_integrals(res.raw), res.theta, **kw)
            if res.enhanced is not None:
                enh = transmission_to_line_integrals(np.clip(res.enhanced, 1e-6, None))
                res.recon_enhanced = reconstruct(enh, res.theta, **kw)
        except Exception as exc:
            self._fail(f"reconstruction failed: {exc}")
            return
        res.timings["reconstruction_s"] = time.perf_counter() - t
        for stream, vol in (("recon_raw", res.recon_raw), ("recon_enhanced", res.recon_enhanced)):
            if vol is not None:
                for z, sl in enumerate(vol):
                    self._emit_event(stream, {"slice": sl.astype(np.float32), "z": z})

    def _metrics(self) -> None:
        """Scalars anyone can check without a ground truth: the reference pairs."""
        from ..metrics import psnr

        res = self.result
        enh = res.enhancer
        if enh is None or not self.refs["short"]:
            return
        try:
            pairs = self._reference_pairs()  # already corrected for training, unless a model was reused
            short, long_ = pairs["short"], pairs["long"]
            res.metrics["reference_psnr_short_db"] = psnr(short, long_)
            res.metrics["reference_psnr_enhanced_db"] = psnr(enh.enhance(short), long_)
        except Exception as exc:
            self._fail(f"metrics failed: {exc}")
            return
        if res.metrics["reference_psnr_enhanced_db"] <= res.metrics["reference_psnr_short_db"]:
            self._fail(
                "the model does not improve even its own reference pairs "
                f"({res.metrics['reference_psnr_enhanced_db']:.1f} dB vs "
                f"{res.metrics['reference_psnr_short_db']:.1f} dB raw): undertrained or diverged"
            )

    def _emergency_stop(self) -> None:
        if self._stopped or self.compose is None:
            return
        self._stopped = True
        self.result.status = "partial"
        reason = "partial: " + "; ".join(self.result.reasons)
        try:
            self._write("stop", self.compose.compose_stop(exit_status="fail", reason=reason))
        except Exception:
            logger.exception("could not even write the stop document of %s", self.result.processed_uid)

    def _close_processed(self, stop_doc: dict[str, Any]) -> None:
        res = self.result
        if self.parent.extra_metrics is not None and not res.reasons:
            try:
                extra = self.parent.extra_metrics(res)
                res.metrics.update({k: float(v) for k, v in extra.items() if _is_number(v)})
            except Exception as exc:
                logger.exception("extra metrics failed")
                self._fail(f"extra metrics failed: {exc!r}")
        if self.writer is not None and self.parent._writer_failed(res.processed_uid):
            self._fail("writing to Tiled failed: the processed run is in the backup directory")
        res.status = "complete" if not res.reasons else "partial"
        res.timings["total_s"] = time.perf_counter() - self.t0
        data: dict[str, Any] = {f"timing_{k}": float(v) for k, v in res.timings.items()}
        data.update({k: float(v) for k, v in res.metrics.items()})
        data["status"] = res.status
        data["reasons"] = "; ".join(res.reasons)
        self._emit_event("metrics", data)
        stop = self.compose.compose_stop(
            exit_status="success" if res.status == "complete" else "fail",
            reason="" if res.status == "complete" else "partial: " + "; ".join(res.reasons),
        )
        self._stopped = True
        self._write("stop", stop)
        if self.writer is not None:
            if not self.writer.flush(timeout=self.parent.write_timeout):
                logger.error("processed run %s: Tiled writes still pending", res.processed_uid)
            self.parent._mark_status(res)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class ProjectionEnhancer:
    """Subscribe to a RunEngine to enhance low-dose scans as they stream in.

    Parameters
    ----------
    client : tiled.client.container.Container, optional
        Root of the Tiled server; results go into its ``processed`` run catalog. None keeps
        results in memory only (:attr:`results`).
    model : bluesky_lowdose.model.Enhancer, optional
        Reuse this model instead of training on the run's reference pairs.
    train_kwargs : dict, optional
        Passed to :func:`bluesky_lowdose.model.train` (default :data:`DEFAULT_TRAIN_KWARGS`).
    reconstruct : bool
        Reconstruct the raw and enhanced stacks at the end of each run.
    recon_backend : str, optional
        Reconstruction backend (default: the best available).
    frame_queue_size : int
        Frames held while the model trains; when full, the document thread waits (the
        RunEngine never does).
    enhance_batch : int
        Frames enhanced together.
    min_pairs : int
        Fewest reference pairs to train on.
    backup_directory : str or Path, optional
        Where processed runs go as JSON lines if Tiled fails.
    batch_size : int
        Events per Tiled write (small: enhanced frames appear while the scan runs).
    progress : bool
        Show progress bars for training, enhancement and reconstruction.
    sink : callable, optional
        Also receives every document of the processed runs (e.g. a list's ``append``).
    extra_metrics : callable, optional
        ``f(RunResult) -> dict[str, float]`` added to the metrics (e.g. against a simulator's
        reference).
    write_timeout : float
        Seconds to wait for the Tiled writes of a run at its end.
    angle_tolerance : float
        Degrees within which a reference frame's rotation readback is matched to a planned
        reference angle (real stages do not return exactly).

    Examples
    --------
    >>> enhancer = ProjectionEnhancer(client)  # doctest: +SKIP
    >>> RE.subscribe(enhancer)  # doctest: +SKIP
    >>> RE(lowdose_tomo_scan(det, rot, shutter, sample))  # doctest: +SKIP
    >>> enhancer.wait(timeout=600)  # doctest: +SKIP
    """

    def __init__(
        self,
        client: Any = None,
        *,
        model: Any = None,
        train_kwargs: dict[str, Any] | None = None,
        reconstruct: bool = True,
        recon_backend: str | None = None,
        frame_queue_size: int = 64,
        enhance_batch: int = 8,
        min_pairs: int = 1,
        backup_directory: str | Path | None = None,
        batch_size: int = 10,
        progress: bool = False,
        sink: Callable[[str, dict], Any] | None = None,
        extra_metrics: Callable[[RunResult], dict[str, float]] | None = None,
        write_timeout: float = 600.0,
        angle_tolerance: float = 0.05,
    ) -> None:
        if frame_queue_size < 1 or enhance_batch < 1 or min_pairs < 1:
            raise ValueError("frame_queue_size, enhance_batch and min_pairs must be >= 1")
        self.client = client
        self.model = model
        self.train_kwargs = {**DEFAULT_TRAIN_KWARGS, **(train_kwargs or {})}
        self.reconstruct = reconstruct
        self.recon_backend = recon_backend
        self.frame_queue_size = frame_queue_size
        self.enhance_batch = enhance_batch
        self.min_pairs = min_pairs
        self.progress = progress
        self.sink = sink
        self.extra_metrics = extra_metrics
        self.write_timeout = write_timeout
        self.angle_tolerance = angle_tolerance
        self.results: dict[str, RunResult] = {}
        self._runs: dict[str, _RunProcessor] = {}
        self._router = RunRouter([self._factory])
        self._catalog = None
        self._writer: ThreadedCallback | None = None
        if client is not None:
            from ..storage import PROCESSED, ensure_run_catalogs, make_run_writer

            ensure_run_catalogs(client, (PROCESSED,))
            # made now, while Tiled answers: a TiledWriter contacts the server when created,
            # and one writer serves every run (it routes documents per run itself)
            self._catalog = client[PROCESSED]
            self._writer = ThreadedCallback(
                make_run_writer(self._catalog, backup_directory=backup_directory, batch_size=batch_size),
                name="tiled-processed",
            )

    def __call__(self, name: str, doc: dict) -> None:
        try:
            self._router(name, doc)
        except Exception:  # nothing raised here may reach the RunEngine
            logger.exception("lowdose enhancer could not route a %r document; ignored", name)

    def _factory(self, name: str, start: dict) -> tuple[list, list]:
        if not isinstance(start.get("lowdose"), dict):
            return [], []
        run = _RunProcessor(self, start)
        self._runs[start["uid"]] = run
        self.results[start["uid"]] = run.result
        return [run.handle], []

    def _writer_failed(self, uid: str) -> bool:
        target = getattr(self._writer, "target", None)
        return uid in getattr(target, "failed_runs", ())

    def _mark_status(self, res: RunResult) -> None:
        """Record the final status and timings in the processed run's metadata (searchable)."""
        if self.client is None or not res.processed_uid:
            return
        from ..storage import PROCESSED

        try:
            node = self.client[PROCESSED][res.processed_uid]
            start = dict(node.metadata["start"])
            prov = dict(start.get("provenance", {}))
            prov.update(status=res.status, reasons=list(res.reasons),
                        timings={k: round(float(v), 3) for k, v in res.timings.items()},
                        metrics={k: float(v) for k, v in res.metrics.items()})  # fmt: skip
            start["provenance"] = prov
            node.update_metadata(metadata={"start": start})
        except Exception:
            logger.exception("could not record the final status of processed run %s", res.processed_uid)

    def recon_backend_name(self) -> str | None:
        """The reconstruction backend that will be used (for provenance)."""
        if not self.reconstruct:
            return None
        try:
            from ..recon import resolve_backend

            return resolve_backend(self.recon_backend)
        except Exception:
            return self.recon_backend

    def progress_of(self, raw_uid: str) -> dict[str, Any]:
        """Stage, frames received/enhanced/expected and training epoch of a run."""
        return dict(self._runs[raw_uid].progress)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every run seen so far is fully processed and written.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait in total.

        Returns
        -------
        bool
            True when everything finished in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for res in list(self.results.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not res.done.wait(left):
                return False
        return True

    def close(self, timeout: float | None = 600.0) -> bool:
        """Finish every run, also those whose stop document never came, and wait for them.

        A run still open (its scan was killed, or the enhancer was unsubscribed mid-run) is
        ended with what has arrived: its processed run is closed as partial.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait in total.

        Returns
        -------
        bool
            True when everything finished in time.
        """
        for uid, run in list(self._runs.items()):
            if not run.result.done.is_set() and run.doc_thread.is_alive():
                reason = "the enhancer was closed before the run ended"
                stop = {"uid": f"{uid}-abandoned", "run_start": uid, "time": time.time(),
                        "exit_status": "abort", "reason": reason}  # fmt: skip
                run.handle("stop", stop)
        return self.wait(timeout)

    def forget(self, raw_uid: str) -> RunResult:
        """Drop a finished run's in-memory arrays and state (they are in Tiled); return its result.

        Long beamtimes otherwise keep every run's stacks in memory.

        Parameters
        ----------
        raw_uid : str
            The raw run.

        Returns
        -------
        RunResult
            The result, without its arrays.
        """
        res = self.results.pop(raw_uid)
        if not res.done.is_set():
            self.results[raw_uid] = res
            raise RuntimeError(f"run {raw_uid} is still being processed")
        self._runs.pop(raw_uid, None)
        res.raw = res.enhanced = res.recon_raw = res.recon_enhanced = None
        return res
