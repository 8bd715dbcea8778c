"""Streaming enhancement of a low-dose scan, while it runs.

:class:`ProjectionEnhancer` is subscribed to the RunEngine. For each run of
``lowdose_tomo_scan`` it

1. reads darks, flats and the long/short reference pairs as they arrive
   (:class:`~bluesky_lowdose.callbacks.reader.RunReader`, per run via ``RunRouter``);
2. as soon as the pairs are complete, sets up the run's
   :class:`~bluesky_lowdose.pipeline.ScanPipeline` -- the same pipeline ``lowdose-tomo enhance``
   and ``lowdose-tomo evaluate`` run -- and trains its projection step while the rotation runs;
3. feeds every rotation frame to the pipeline as it arrives: the projection step, ``-log`` and
   the filtered back-projection of its angle subset happen frame by frame, so after the last
   frame only the slice step (Noise2Inverse) and the final sums are left;
4. writes a run into the ``processed`` catalog of Tiled (:class:`ProcessedRun`), linked to the
   raw run by ``original_run_uid``: enhanced frames, both reconstructions, the models,
   training curves, metrics and the full provenance; the outcome is in the stop document.

Threads: the RunEngine-side ``__call__`` only puts documents on a queue. One document thread
(all runs) reads and corrects frames; one compute worker (all runs, one at a time: back-to-back
scans never train concurrently) runs the pipeline; a writer thread talks to Tiled.  Nothing
raised here reaches the RunEngine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from event_model import RunRouter

from ..storage.models import REGISTRY_MODES
from .job import RunJob, RunResult
from .processed import PROCESSED_STREAMS
from .reader import RunReader
from .threaded import ThreadedCallback

__all__ = ["PROCESSED_STREAMS", "ProjectionEnhancer", "RunResult"]

logger = logging.getLogger(__name__)


class ProjectionEnhancer:
    """Subscribe to a RunEngine to enhance low-dose scans as they stream in.

    Parameters
    ----------
    client : tiled.client.container.Container, optional
        Root of the Tiled server; results go into its ``processed`` run catalog. None keeps
        results in memory only (:attr:`results`).
    method : str
        Pipeline method (:data:`bluesky_lowdose.pipeline.METHODS`): ``"auto"`` (default: the best
        measured with pairs, ``"hybrid"``), ``"paper"``, ``"n2i"``, ...
    model : bluesky_lowdose.model.Enhancer, optional
        Reuse this projection model instead of training on the run's reference pairs (with
        ``method="auto"`` the method is then ``"paper"``: the model is applied).
    train_kwargs : dict, optional
        Overrides of :data:`bluesky_lowdose.pipeline.PROJECTION_TRAINING` (the projection CNN).
    n2i_options : dict, optional
        Overrides of :data:`bluesky_lowdose.pipeline.N2I_OPTIONS` (Noise2Inverse).
    reconstruct : bool
        Reconstruct (and run the slice step) at the end of each run.
    recon_backend : str, optional
        Reconstruction backend (:func:`bluesky_lowdose.recon.resolve_backend`; default the first
        available: ``"nufft"`` where TomoPy is absent), run slab by slab after the last frame
        (``"fbp"`` without ``mapper`` or ``work_directory`` accumulates frame by frame instead).
    mapper : callable, optional
        Runs the reconstruction as slab tasks at the end of each run, e.g.
        :meth:`bluesky_lowdose.engine.DaskEngine.map` (see :class:`~bluesky_lowdose.pipeline.ScanPipeline`).
    frame_queue_size : int
        Work items held while the model trains; when full, the document thread waits (the
        RunEngine never does).
    enhance_batch : int
        Frames processed together.
    min_pairs : int
        Fewest reference pairs to train on.
    backup_directory : str or Path, optional
        Where processed runs go as JSON lines if Tiled fails.
    batch_size : int
        Events (and StreamDatums) per Tiled write: 1 (default, as bluesky-tiled-plugins advises
        for streaming) makes every enhanced frame and every preview readable from Tiled at once.
    preview_interval : float or None
        Seconds between live previews: the three central orthogonal slices of the raw frames
        back-projected so far (:class:`~bluesky_lowdose.recon.preview.OrthoSlices`), published as
        the ``preview`` stream of the processed run while the rotation runs, and once more after
        the last frame (``lowdose-tomo watch`` draws them). 0: after every batch of frames;
        None: no preview.
    progress : bool
        Progress bars for training, frames and the slice step.
    sink : callable, optional
        Also receives every document of the processed runs (e.g. a list's ``append``).
    extra_metrics : callable, optional
        ``f(RunResult) -> dict[str, float]`` added to the metrics (e.g. against a simulator's
        reference).
    work_directory : str or Path, optional
        Bounded memory for beamline-size scans: each run's line integrals and volumes go to HDF5
        files in ``work_directory/<raw uid>/`` as frames arrive and are reconstructed slab by slab
        (see :class:`~bluesky_lowdose.pipeline.ScanPipeline` ``workdir``); the files go once the
        processed run is written (with ``keep_frames``, at :meth:`forget`). None (default) keeps
        the run in memory. The profile, the 0MQ service and the demo use the data directory's
        ``work`` folder.
    keep_frames : bool
        Keep each run's corrected and enhanced frames in memory (``RunResult.raw`` /
        ``.enhanced``, e.g. for the demo's comparison). False for long services and the profile:
        the enhanced frames are in Tiled and the raw ones in the detector's files, and memory no
        longer grows by two stacks per run.
    volume_directory : str or Path, optional
        Where the reconstructed volumes and the enhanced frames go, as HDF5 files in
        ``<volume_directory>/<processed uid>/`` (the frames' stack grows as they are enhanced,
        readable meanwhile); the processed run announces them (StreamResource/StreamDatum) and
        Tiled serves them in place, so this folder must be in the Tiled server's readable storage (the
        embedded server's is the data directory's ``volumes`` folder, :attr:`DataDirectory.volumes
        <bluesky_lowdose.storage.server.DataDirectory.volumes>`). Needed when writing to Tiled and
        reconstructing; without it (``reconstruct=False``) the enhanced frames go to Tiled inside
        their events.  Without Tiled (``client=None``) the results stay in :attr:`results`.
    write_timeout : float
        Seconds to wait for the Tiled writes of a run at its end.
    angle_tolerance : float
        Degrees within which a reference frame's rotation readback is matched to a planned
        reference angle (real stages do not return exactly).
    seed : int
        Seeds the learned steps.
    auto_options : dict, optional
        ``method="auto"``: ``candidates`` (methods tried) and ``budget_s`` (seconds they may take
        together); see :mod:`bluesky_lowdose.pipeline.auto`.
    registry : {"auto", "record", "only", "off"}
        The model registry in Tiled (:mod:`bluesky_lowdose.storage.models`). Every model a
        complete run trained is added, keyed on its instrument, with the run's long-exposure
        score (all modes but ``"off"``). ``"auto"`` (default): start from the best registered
        model of the run's instrument (one that scored above its raw reconstruction): its
        result is published first (stream ``first_result``, volume ``recon_first``), then it is
        fine-tuned on this scan (:data:`~bluesky_lowdose.pipeline.FINE_TUNE`) and the final
        result follows in the same run; from scratch when there is none. ``"record"``: always
        from scratch. ``"only"``: apply the registered model instead of training — with
        ``method="auto"`` the models found decide the method (also for ``"auto"``) — and train
        as usual, with a warning, when there is none. ``"off"``: neither. Needs ``client``.
    keep_results : int, optional
        Finished runs kept in :attr:`results`: the newest ``keep_results``; older ones are
        forgotten (:meth:`forget`: their arrays, models, pipeline and work files released) as
        each run ends, so a process that lives for many scans (the profile, the queue worker)
        stays flat in memory. None (default) keeps every run (scripts, the demo).
    isolate_training : bool
        Train each network in a child process that ends with its training
        (:func:`~bluesky_lowdose.model.isolated.train_in_child`): the same model, a few seconds
        later, and none of the memory TensorFlow keeps after every training (about 30 MiB each)
        stays in this process. On in the profile, the queue worker and the 0MQ service, which
        train every scan for days; off (default) for scripts and the demo.

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
        method: str = "auto",
        model: Any = None,
        train_kwargs: dict[str, Any] | None = None,
        n2i_options: dict[str, Any] | None = None,
        reconstruct: bool = True,
        recon_backend: str | None = None,
        mapper: Any = None,
        frame_queue_size: int = 64,
        enhance_batch: int = 8,
        min_pairs: int = 1,
        backup_directory: str | Path | None = None,
        batch_size: int = 1,
        preview_interval: float | None = 5.0,
        progress: bool = False,
        sink: Callable[[str, dict], Any] | None = None,
        extra_metrics: Callable[[RunResult], dict[str, float]] | None = None,
        keep_frames: bool = True,
        work_directory: str | Path | None = None,
        volume_directory: str | Path | None = None,
        write_timeout: float = 600.0,
        angle_tolerance: float = 0.05,
        seed: int = 0,
        auto_options: dict[str, Any] | None = None,
        registry: str = "auto",
        keep_results: int | None = None,
        isolate_training: bool = False,
    ) -> None:
        from ..pipeline import METHODS

        if registry not in REGISTRY_MODES:
            raise ValueError(f"registry must be one of {REGISTRY_MODES}, got {registry!r}")
        self.registry = registry
        if keep_results is not None and keep_results < 1:
            raise ValueError(f"keep_results must be None or >= 1, got {keep_results}")
        self.keep_results = keep_results

        if frame_queue_size < 1 or enhance_batch < 1 or min_pairs < 1:
            raise ValueError("frame_queue_size, enhance_batch and min_pairs must be >= 1")
        if method != "auto" and method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose 'auto' or one of {', '.join(METHODS)}")
        self.client = client
        self.method = method
        self.model = model
        self.train_kwargs = dict(train_kwargs or {})
        self.n2i_options = dict(n2i_options or {})
        self.auto_options = dict(auto_options or {})
        unknown = set(self.auto_options) - {"candidates", "budget_s"}
        if unknown:
            raise ValueError(f"unknown auto_options {sorted(unknown)}: use 'candidates' and 'budget_s'")
        self.reconstruct = reconstruct
        self.recon_backend = recon_backend
        self.mapper = mapper
        self.frame_queue_size = frame_queue_size
        self.enhance_batch = enhance_batch
        self.min_pairs = min_pairs
        self.progress = progress
        self.sink = sink
        self.extra_metrics = extra_metrics
        self.keep_frames = keep_frames
        self.work_directory = None if work_directory is None else Path(work_directory)
        if client is not None and reconstruct and volume_directory is None:
            raise ValueError(
                "volume_directory is needed to write reconstructions to Tiled: a folder the Tiled "
                "server reads (the embedded server's DataDirectory(...).volumes, <data dir>/volumes)"
            )
        self.volume_directory = None if volume_directory is None else Path(volume_directory)
        if preview_interval is not None and not preview_interval >= 0:
            raise ValueError(f"preview_interval must be >= 0 seconds or None, got {preview_interval!r}")
        self.preview_interval = preview_interval
        self.write_timeout = write_timeout
        self.angle_tolerance = angle_tolerance
        self.seed = seed
        self.isolate_training = bool(isolate_training)
        self.results: dict[str, RunResult] = {}
        self._jobs: dict[str, RunJob] = {}
        self._readers: dict[str, RunReader] = {}
        self._router = RunRouter([self._factory])
        self._docs: queue.Queue[tuple[str, dict] | None] = queue.Queue()
        self._work: queue.Queue[tuple[RunJob, str, Any]] = queue.Queue(maxsize=frame_queue_size)
        self._lock = threading.Lock()
        self._doc_thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._writer: ThreadedCallback | None = None
        if client is not None:
            from ..storage import PROCESSED, ensure_run_catalogs, make_run_writer

            ensure_run_catalogs(client, (PROCESSED,))
            # made now, while Tiled answers: a TiledWriter contacts the server when created,
            # and one writer serves every run (it routes documents per run itself)
            self._writer = ThreadedCallback(
                make_run_writer(client[PROCESSED], backup_directory=backup_directory, batch_size=batch_size),
                name="tiled-processed",
            )

    # ------------------------------------------------------------------ RunEngine side
    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start" and isinstance(doc.get("lowdose"), dict):
                # registered here, on the caller's thread, so that wait() right after the scan sees it
                self.results[doc["uid"]] = RunResult(raw_uid=doc["uid"])
            self._ensure_threads()
            self._docs.put((name, doc))
        except Exception:  # nothing raised here may reach the RunEngine
            logger.exception("lowdose enhancer could not accept a %r document; ignored", name)

    def _ensure_threads(self) -> None:
        with self._lock:
            if self._doc_thread is None or not self._doc_thread.is_alive():
                self._doc_thread = threading.Thread(target=self._doc_loop, name="lowdose-docs", daemon=True)
                self._doc_thread.start()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work_loop, name="lowdose-compute", daemon=True)
                self._worker.start()

    # ------------------------------------------------------------------ document thread
    def _factory(self, name: str, start: dict) -> tuple[list, list]:
        if not isinstance(start.get("lowdose"), dict):
            return [], []
        uid = start["uid"]
        result = self.results.setdefault(uid, RunResult(raw_uid=uid))
        job = RunJob(self, start, result)
        self._jobs[uid] = job

        def submit(kind: str, payload: Any) -> None:
            self._submit(job, kind, payload)

        reader = RunReader(start, submit, job.fail, angle_tolerance=self.angle_tolerance,
                           min_pairs=self.min_pairs, progress=job.progress)  # fmt: skip
        self._readers[uid] = reader
        return [reader], []

    def _doc_loop(self) -> None:
        while True:
            item = self._docs.get()
            if item is None:
                return
            name, doc = item
            try:
                self._router(name, doc)
            except Exception as exc:  # one bad document never stops the run's processing
                uid = doc.get("run_start") or doc.get("uid", "")
                job = self._jobs.get(uid) or self._job_of_descriptor(doc)
                if job is not None:
                    job.fail(f"{name} document could not be processed: {exc!r}")
                logger.exception("lowdose enhancer: %s document failed", name)
                if name == "stop" and job is not None:
                    self._submit(job, "stop", doc)

    def _job_of_descriptor(self, doc: dict) -> RunJob | None:
        desc = doc.get("descriptor")
        for uid, reader in self._readers.items():
            if desc and desc in reader.resolver._descriptors:
                return self._jobs.get(uid)
        return None

    def _submit(self, job: RunJob, kind: str, payload: Any) -> None:
        # blocks this thread (never the RunEngine) while the queue is full, unless the worker died
        while True:
            self._ensure_threads()
            try:
                self._work.put((job, kind, payload), timeout=0.5)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------------ compute worker
    def _work_loop(self) -> None:
        carry: tuple[RunJob, str, Any] | None = None
        while True:
            item = carry if carry is not None else self._work.get()
            carry = None
            job, kind, payload = item
            if job.finished:
                continue
            try:
                if kind == "setup":
                    job.start(payload)
                elif kind == "frame":
                    batch = [payload]
                    while len(batch) < self.enhance_batch:
                        try:
                            nxt = self._work.get_nowait()
                        except queue.Empty:
                            break
                        if nxt[0] is not job or nxt[1] != "frame":
                            carry = nxt
                            break
                        batch.append(nxt[2])
                    job.frames(batch)
                elif kind == "stop":
                    job.finish(payload)
                    job.done()
            except Exception as exc:
                job.crashed(exc)
                job.done()
            if job.finished:
                self._trim_results()

    def _trim_results(self) -> None:
        """Forget the oldest finished runs beyond ``keep_results``."""
        if self.keep_results is None:
            return
        finished = [uid for uid, res in list(self.results.items()) if res.done.is_set()]
        for uid in finished[: max(0, len(finished) - self.keep_results)]:
            try:
                self.forget(uid)
            except (KeyError, RuntimeError):  # forgotten meanwhile by its owner
                pass

    # ------------------------------------------------------------------ storage helpers
    def _writer_failed(self, uid: str) -> bool:
        """True when a write of processed run ``uid`` failed (another run's failure is not this one's)."""
        target = getattr(self._writer, "target", None)
        return uid in getattr(target, "failed_runs", ()) or bool(self._writer and self._writer.errors_of(uid))

    def recon_backend_name(self) -> str | None:
        """The reconstruction backend that will be used (for provenance).

        Returns
        -------
        str or None
            The backend, None when not reconstructing.
        """
        if not self.reconstruct:
            return None
        try:
            from ..recon import resolve_backend

            return resolve_backend(self.recon_backend)
        except Exception:
            return self.recon_backend

    # ------------------------------------------------------------------ public
    def progress_of(self, raw_uid: str) -> dict[str, Any]:
        """Stage, frames received/enhanced/expected and training epoch of a run.

        Parameters
        ----------
        raw_uid : str
            The raw run.

        Returns
        -------
        dict
            A copy of the progress record.
        """
        return dict(self._jobs[raw_uid].progress)

    def busy(self) -> list[dict[str, Any]]:
        """The runs still being processed: what each is doing, in a line a person can read.

        Returns
        -------
        list of dict
            Per unfinished run: ``raw_uid``, ``scan_id``, ``method`` (requested), ``stage``,
            ``frames_enhanced``/``frames_expected`` and ``text`` (one line for a person).
        """
        out = []
        for uid, res in list(self.results.items()):
            if res.done.is_set():
                continue
            job = self._jobs.get(uid)
            progress = dict(job.progress) if job is not None else {"stage": "waiting for documents"}
            scan_id = None if job is None else job.raw_start.get("scan_id")
            method = res.method or self.method
            text = f"scan {scan_id if scan_id is not None else uid[:8]}: {progress.get('stage')}"
            text += f" (method {method!r}"
            if progress.get("frames_expected"):
                text += f", {progress.get('frames_enhanced', 0)}/{progress['frames_expected']} frames"
            if progress.get("stage") == "training" and progress.get("epoch"):
                text += f", training block {progress['epoch']}"
            if method == "auto":
                text += f", choosing within ~{self.auto_budget_s():.0f} s"
            out.append({"raw_uid": uid, "scan_id": scan_id, "method": method, **progress, "text": text + ")"})
        return out

    def auto_budget_s(self) -> float:
        """Seconds ``method="auto"`` may spend choosing (``auto_options["budget_s"]`` or the default)."""
        from ..pipeline.auto import AUTO_BUDGET_S

        return float(self.auto_options.get("budget_s") or AUTO_BUDGET_S)

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
        for uid, res in list(self.results.items()):
            if not res.done.is_set():
                reason = "the enhancer was closed before the run ended"
                stop = {"uid": f"{uid}-abandoned", "run_start": uid, "time": time.time(),
                        "exit_status": "abort", "reason": reason}  # fmt: skip
                self("stop", stop)  # a run already stopped ignores it (its job is finished)
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

        Raises
        ------
        RuntimeError
            The run is still being processed.
        """
        res = self.results.pop(raw_uid)
        if not res.done.is_set():
            self.results[raw_uid] = res
            raise RuntimeError(f"run {raw_uid} is still being processed")
        job = self._jobs.pop(raw_uid, None)
        if job is not None:
            job.remove_files()
        self._readers.pop(raw_uid, None)
        res.raw = res.enhanced = res.recon_raw = res.recon_enhanced = res.pairs = None
        return res
