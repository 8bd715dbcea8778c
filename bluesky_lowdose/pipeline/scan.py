"""One scan, one pipeline: pairs -> projection step -> log -> subset FBP -> slice step.

:class:`ScanPipeline` holds the state of one scan and is fed frame by frame (the streaming
enhancer does that as documents arrive); :func:`enhance_scan` feeds it a whole stack (the
offline CLI and the evaluation do that).  Both run the same code on the same numbers.

The methods are in :mod:`~bluesky_lowdose.pipeline.methods`; :func:`enhance_scan` is in
:mod:`~bluesky_lowdose.pipeline.stack`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .angles import check_rotation
from .flatfield import log_floor
from .methods import AUTO_SPEC, FINE_TUNE, METHODS, N2I_OPTIONS, PROJECTION_TRAINING, resolve_method
from .result import AUTO_CANDIDATE, ScanResult, build_result, first_result, keep_better
from .sinks import AccumulatingSink, DiskSink, FrameSink, MemorySink

__all__ = ["ScanPipeline", "ScanResult"]

logger = logging.getLogger(__name__)

#: Detector rows beyond the judged ones that the judge's score still reads: its SSIM's 7 x 7 window
#: (:func:`skimage.metrics.structural_similarity`'s default) reaches 3 rows past them.
JUDGE_REACH = 3


def judge_reach(judged: slice, n: int) -> slice:
    """The slices of ``n`` that a judge of the rows ``judged`` reads: those and :data:`JUDGE_REACH`
    on each side (``auto``'s BM3D-on-slices candidates filter only these).

    Parameters
    ----------
    judged : slice
        The judged rows.
    n : int
        Slices in the volume.

    Returns
    -------
    slice
    """
    first, last = judged.indices(n)[:2]
    return slice(max(0, first - JUDGE_REACH), min(n, last + JUDGE_REACH))


def _as_stack(a: Any, name: str, ndim: int = 3) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim or 0 in arr.shape:
        raise ValueError(f"{name} must be {ndim}-D (n, n_slices, width) and not empty, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


class ScanPipeline:
    """State of one scan going through a method, fed in acquisition order.

    Parameters
    ----------
    shape : tuple of int
        ``(n_slices, width)`` of a projection.
    method : str
        Key of :data:`METHODS` or ``"auto"`` (resolved with ``has_pairs``).
    has_pairs : bool
        Whether :meth:`fit` will get reference pairs (or ``projection_model`` is given).
    input : {"transmission", "line_integrals"}
        What the frames are: flat/dark-corrected transmission (``-log`` is taken here) or line
        integrals already.
    open_beam_counts : float or numpy.ndarray, optional
        Detected photons of the open beam per pixel at the frames' exposure (scalar or
        ``(n_slices, width)``): sets the transmission floor to half a photon and enables the
        low-count bias correction of methods without a projection step.
    read_noise : float
        Additive detector noise in photons (for the bias correction).
    projection_model : object, optional
        A trained projection enhancer (``enhance(frames)``) to use instead of training one.
    projection_training : dict, optional
        Overrides of :data:`PROJECTION_TRAINING`.
    n2i_options : dict, optional
        Overrides of :data:`N2I_OPTIONS`.
    subsets : int
        Disjoint angle subsets for Noise2Inverse (2: even and odd frames).
    center : float, optional
        Rotation axis column (default: the detector centre).
    backend : str, optional
        Reconstruction backend (:func:`bluesky_lowdose.recon.resolve_backend`; None: the first
        available, ``"nufft"`` where TomoPy is absent).  ``"fbp"`` without a work directory or
        mapper accumulates frame by frame; the others keep the line integrals (in memory or in
        the work directory) and reconstruct slab by slab after the last frame.
    keep_projections : bool
        Keep the enhanced projections (memory: one stack).
    seed : int
        Seeds every learned step.
    progress : bool
        Progress bars for training, enhancement and reconstruction.
    on_epoch : callable, optional
        ``on_epoch(stage, epoch, logs)`` after each training epoch (``stage`` is ``"projection"`` or
        ``"slices"``).
    mapper : callable, optional
        ``mapper(function, tasks)``, e.g. :meth:`bluesky_lowdose.engine.DaskEngine.map`: the
        reconstruction then runs at the end as slab tasks on a cluster instead of accumulating
        frame by frame in this process (same volume, bit for bit); the learned steps run there
        too — the projection network on each block of frames, the Noise2Inverse denoiser on each
        slab of slices — with the trained model sent as bytes and loaded once per worker
        (:mod:`bluesky_lowdose.model.remote`). Training stays in this process.
    long_open_beam_counts : float or numpy.ndarray, optional
        Detected photons of the open beam per pixel at the *long* exposure: the noise of the
        long-exposure judge (:mod:`~bluesky_lowdose.pipeline.judge`); default: estimated.
    judge : bool
        Score the volumes against the long exposures given to :meth:`fit` (with their angles);
        pair-trained methods then train without the held-out pair when there are three or more.
    judge_rows : slice, optional
        The detector rows the judge scores (default all; ``auto`` leaves out its slab's margins).
    slice_model : object, optional
        A trained Noise2Inverse denoiser to apply instead of training one.
    slice_factor : float, optional
        BM3D on slices: its sigma as a multiple of the measured noise, already tuned on this scan
        (``auto``'s winner on its slab), so not tuned again.
    held_out : int, optional
        Judge on this pair only (a reused model was trained without it).
    auto_candidates : sequence of str, optional
        ``method="auto"``: the methods tried (default
        :data:`~bluesky_lowdose.pipeline.auto.AUTO_CANDIDATES`).
    auto_budget_s : float, optional
        ``method="auto"``: seconds the candidates may take together (default
        :data:`~bluesky_lowdose.pipeline.auto.AUTO_BUDGET_S`); the winner's whole scan should end by
        1.2 x it (:data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`).
    holdout : bool or int
        With the judge and three or more pairs, train pair methods without the last pair and judge
        them on it (honest scores, one pair less to learn from: take four or more pairs); an int
        holds out that pair instead (``auto``'s leave-one-out judging); False trains on all pairs
        and flags the score as in-sample (optimistic).
    warm_start : dict, optional
        Models to fine-tune instead of training from random weights, by kind (``"projection"``,
        ``"slices"``), e.g. the model registry's best for this instrument: each trains for
        :data:`FINE_TUNE` ``["fraction"]`` of the from-scratch steps/epochs at that fraction of
        the learning rate.  With ``"slices"`` the registered denoiser's result comes first
        (``on_first_result``); the fine-tuned one replaces it only where the long exposures score
        it at least as high (else the first is kept, with a warning).
    fine_tune : dict, optional
        Overrides of :data:`FINE_TUNE`.
    on_first_result : callable, optional
        ``on_first_result(result)`` with a :class:`ScanResult` of the registered slice denoiser's
        volume, as soon as it exists (before fine-tuning); ``result.provenance["first_result"]``
        is True.  Exceptions it raises are logged, not raised.
    isolate_training : bool
        Train each network in a child process that ends with the training
        (:func:`~bluesky_lowdose.model.isolated.train_in_child`: same weights, a few seconds more
        to start it): a process that lives for many scans then keeps flat memory, which
        TensorFlow's per-training caches otherwise grow. ``on_epoch`` still runs here.
    training_threads : int, optional
        With ``isolate_training``: TensorFlow's threads in the training process (default one per
        core). ``auto`` trains Noise2Inverse on half the cores while BM3D runs on the others.
    preview : bool
        Back-project every added frame's raw line integrals into the three central orthogonal
        slices too (:class:`~bluesky_lowdose.recon.preview.OrthoSlices`, at most 512 pixels
        across): :attr:`preview` shows the sample while the rotation runs, whatever the method.
    workdir : str or Path, optional
        Bounded memory: line integrals go to HDF5 stacks in a ``scan-*`` folder of this directory
        (one per pipeline: two scans never share files) as frames arrive, the
        reconstruction reads them back slab by slab (on the ``mapper``'s workers, which must see
        the directory) and writes the volumes there; Noise2Inverse trains on a bounded sample of
        slices and denoises slab by slab. The result's volumes are then
        :class:`~bluesky_lowdose.recon.stored.StoredArray` handles on ``workdir/*.h5`` and the
        line-integral stacks are deleted once reconstructed. None keeps everything in memory.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        method: str = "auto",
        *,
        has_pairs: bool = False,
        input: str = "transmission",
        open_beam_counts: Any = None,
        read_noise: float = 0.0,
        projection_model: Any = None,
        projection_training: dict[str, Any] | None = None,
        n2i_options: dict[str, Any] | None = None,
        subsets: int = 2,
        center: float | None = None,
        backend: str | None = None,
        keep_projections: bool = True,
        seed: int = 0,
        progress: bool = False,
        on_epoch: Callable[[str, int, dict[str, float]], Any] | None = None,
        mapper: Callable[..., Any] | None = None,
        workdir: str | Path | None = None,
        long_open_beam_counts: Any = None,
        judge: bool = True,
        judge_rows: slice | None = None,
        slice_model: Any = None,
        slice_factor: float | None = None,
        held_out: int | None = None,
        auto_candidates: Any = None,
        auto_budget_s: float | None = None,
        holdout: bool | int = True,
        preview: bool = False,
        warm_start: dict[str, Any] | None = None,
        fine_tune: dict[str, float] | None = None,
        on_first_result: Callable[[ScanResult], Any] | None = None,
        isolate_training: bool = False,
        training_threads: int | None = None,
    ) -> None:
        if input not in ("transmission", "line_integrals"):
            raise ValueError(f"input must be 'transmission' or 'line_integrals', got {input!r}")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (n_slices, width), got {shape}")
        self.method = resolve_method(
            method,
            has_pairs or projection_model is not None,
            has_projection_model=projection_model is not None,
        )
        self.spec = AUTO_SPEC if self.method == "auto" else METHODS[self.method]
        if self.spec.slices == "n2i" and subsets < 2:
            raise ValueError(f"Noise2Inverse needs at least 2 angle subsets, got {subsets}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.input = input
        self.read_noise = float(read_noise)
        self.open_beam_counts: np.ndarray | None = None
        if open_beam_counts is not None:
            n0 = np.asarray(open_beam_counts, dtype=np.float32)
            if not (np.all(np.isfinite(n0)) and np.all(n0 > 0)):
                raise ValueError("open_beam_counts must be positive and finite")
            try:
                self.open_beam_counts = np.ascontiguousarray(np.broadcast_to(n0, self.shape))
            except ValueError as err:
                raise ValueError(f"open_beam_counts {n0.shape} do not match frames {self.shape}") from err
            if input != "transmission":
                raise ValueError("open_beam_counts apply to transmission input only")
        self.debias = self.spec.debias and self.open_beam_counts is not None
        if self.spec.split == "counts" and self.open_beam_counts is None:
            raise ValueError(
                f"method {self.method!r} splits the detected photons: it needs open_beam_counts (photon "
                "statistics from repeated flats and darks)"
            )
        self.projection_training = {**PROJECTION_TRAINING, **(projection_training or {})}
        self.n2i_options = {**N2I_OPTIONS, **(n2i_options or {})}
        self.subsets = int(subsets) if self.spec.slices else 1
        self.center = center
        #: the live preview (:class:`~bluesky_lowdose.recon.preview.OrthoSlices`), or None
        self.preview: Any = None
        if preview:
            from ..recon.preview import OrthoSlices

            self.preview = OrthoSlices(*self.shape, center=center)
        from ..recon import resolve_backend

        self.backend = resolve_backend(backend)  # None: "nufft" (TomoPy's gridrec where installed)
        self.mapper = mapper
        self.workdir = None if workdir is None else Path(workdir)
        self._scan_dir: Path | None = None  # this scan's own folder in workdir (made at first use)
        self._model_ref: Any = None  # the projection model as tasks get it
        self.keep_projections = keep_projections and self.spec.projection is not None
        self.seed = int(seed)
        self.progress = progress
        self.on_epoch = on_epoch
        self.isolate_training = bool(isolate_training)
        self.training_threads = training_threads
        self.projection_model = projection_model
        self.models: dict[str, Any] = {}
        if projection_model is not None:
            self.models["projection"] = projection_model
        self.timings: dict[str, float] = {}
        self.pairs_record: dict[str, Any] | None = None
        self.use_judge = bool(judge)
        self.judge_rows = judge_rows
        self.long_open_beam_counts = long_open_beam_counts
        self.judge: Any = None  # LongExposureJudge once fit() had long frames with angles
        self.held_out: int | None = held_out  # the pair kept out of training (judged on it)
        self.slice_model = slice_model
        self.slice_factor = slice_factor
        self.warm_start = {k: v for k, v in (warm_start or {}).items() if v is not None}
        unknown = set(self.warm_start) - {"projection", "slices"}
        if unknown:
            raise ValueError(f"warm_start kinds are 'projection' and 'slices', got {sorted(unknown)}")
        self.fine_tune = {**FINE_TUNE, **(fine_tune or {})}
        if not (0 < self.fine_tune["fraction"] <= 1 and 0 < self.fine_tune["learning_rate_fraction"] <= 1):
            raise ValueError(f"fine_tune fractions must lie in (0, 1], got {self.fine_tune}")
        self.on_first_result = on_first_result
        self.auto_candidates = auto_candidates
        self.auto_budget_s = auto_budget_s
        if not isinstance(holdout, bool | int | np.integer):
            raise TypeError(f"holdout must be a bool or a pair's index, got {holdout!r}")
        self.holdout: bool | int = holdout if isinstance(holdout, bool) else int(holdout)
        self._pairs: tuple[np.ndarray, np.ndarray, list[float] | None] | None = None  # kept for auto
        self._frames: list[np.ndarray] = []
        self._theta: list[float] = []
        self._separate_raw = self.spec.projection is not None or self.debias
        # the streams kept while frames arrive: "li", "raw" (without the projection step), "half0/1"
        # (n2i-counts), "inputs" (auto: the frames as given, the chosen method runs at the end)
        self._sink: FrameSink
        if self.method != "auto" and self.backend == "fbp" and mapper is None and workdir is None:
            counts = self.spec.split == "counts"
            streams = {"li": 1 if counts else self.subsets}
            streams.update({"half0": 1, "half1": 1} if counts else {})
            streams.update({"raw": 1} if self._separate_raw else {})
            self._sink = AccumulatingSink(self.shape, streams, center)
        elif workdir is not None:
            self._sink = DiskSink(self._dir, self.shape)
        else:
            self._sink = MemorySink()

    # ------------------------------------------------------------------ pairs
    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` must run before frames can be added.

        Returns
        -------
        bool
            True for methods with a projection step and no given model.
        """
        return self.spec.projection is not None and "projection" not in self.models

    def fit(self, short_refs: Any, long_refs: Any, *, reference_angles: Any = None) -> Any:
        """Train (or tune) the projection step on long/short reference pairs.

        Parameters
        ----------
        short_refs, long_refs : array_like
            ``(m, n_slices, width)`` pairs in the input's units (corrected transmission or line
            integrals), the same scene at the same angles.
        reference_angles : array_like, optional
            Their angles (degrees), recorded in provenance.

        Returns
        -------
        object
            The trained enhancer or tuned baseline (None for methods without a projection step).

        Raises
        ------
        ValueError
            Shapes that differ or do not match the frames, NaN/inf.
        """
        short = _as_stack(short_refs, "short_refs")
        long_ = _as_stack(long_refs, "long_refs")
        if short.shape != long_.shape:
            raise ValueError(f"short_refs {short.shape} and long_refs {long_.shape} differ in shape")
        if short.shape[1:] != self.shape:
            raise ValueError(f"reference frames {short.shape[1:]} do not match the projections {self.shape}")
        angles = None if reference_angles is None else [float(a) for a in np.atleast_1d(reference_angles)]
        if angles is not None and len(angles) != len(short):
            raise ValueError(f"{len(angles)} reference angle(s) for {len(short)} reference pair(s)")
        self.pairs_record = {"n_pairs": len(short), "angles_deg": angles}
        if self.use_judge and angles is not None:
            self._make_judge(long_, angles)
        if self.method == "auto":
            self._pairs = (short, long_, angles)
        if not self.needs_fit:
            return self.models.get("projection")
        given = not isinstance(self.holdout, bool)  # a pair's index: held out with or without a judge
        if self.spec.pairs and self.holdout is not False and (self.judge is not None or given):
            from .judge import holdout_index

            if self.holdout is True:
                self.held_out = holdout_index(len(short))
            elif not 0 <= self.holdout < len(short) or len(short) < 2:
                raise ValueError(f"holdout={self.holdout}: no such pair to hold out of {len(short)} "
                                 "(one at least must be left to train on)")  # fmt: skip
            else:
                self.held_out = self.holdout
            if self.held_out is not None:  # judged on a pair it never saw
                keep = [i for i in range(len(short)) if i != self.held_out]
                short, long_ = short[keep], long_[keep]
                self.pairs_record["held_out_deg"] = angles[self.held_out] if angles else None
        t0 = time.perf_counter()
        if self.spec.projection == "cnn":
            from ..model import train

            opts = {"seed": self.seed, **self.projection_training}
            initial = self.warm_start.get("projection")
            if initial is not None:
                opts = self._fine_tuned(opts, "epochs", initial)
            hook = self._hook("projection")
            model = self._train(train, short, long_, progress=self.progress, on_epoch=hook, **opts)
        else:
            from ..model import baseline

            model = baseline(self.spec.projection, short, long_)
        self.models["projection"] = model
        self.timings["projection_training_s"] = time.perf_counter() - t0
        return model

    def _fine_tuned(self, opts: dict[str, Any], length: str, initial: Any) -> dict[str, Any]:
        """``opts`` (with ``length``: ``"steps"`` or ``"epochs"``) for fine-tuning ``initial``:
        :data:`FINE_TUNE`'s fraction of that length and of the rate (both trainers start at 1e-3)."""
        import math

        lr, n = opts.get("learning_rate", 1e-3), opts[length]
        return {**opts, "initial": initial, length: max(1, math.ceil(self.fine_tune["fraction"] * n)),
                "learning_rate": lr * self.fine_tune["learning_rate_fraction"]}  # fmt: skip

    def _make_judge(self, long_: np.ndarray, angles: list[float]) -> None:
        """The long-exposure judge of this scan (its frames in line integrals)."""
        from .judge import make_judge

        self.judge = make_judge(long_, angles, input=self.input, open_beam_counts=self.long_open_beam_counts,
                                center=self.center, rows=self.judge_rows)  # fmt: skip

    def _train(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)``, a training: in a child process with ``isolate_training``."""
        if not self.isolate_training:
            return function(*args, **kwargs)
        from ..model.isolated import train_in_child

        return train_in_child(function, *args, tf_threads=self.training_threads, **kwargs)

    def _hook(self, stage: str) -> Callable[[int, dict[str, float]], None] | None:
        """``on_epoch`` of a training, tagged with its stage, or None."""
        if self.on_epoch is None:
            return None
        on_epoch = self.on_epoch

        def hook(epoch: int, logs: dict[str, float]) -> None:
            on_epoch(stage, epoch, logs)

        return hook

    # ------------------------------------------------------------------ frames
    def _floor(self) -> float | np.ndarray:
        return log_floor(self.open_beam_counts)

    def _log(self, frames: np.ndarray) -> np.ndarray:
        if self.input == "line_integrals":
            return frames
        from ..recon import transmission_to_line_integrals

        return transmission_to_line_integrals(frames, floor=self._floor())

    def add(self, index: int, theta_deg: Any, frames: Any) -> np.ndarray | None:
        """Process frames that follow the ones already added (acquisition order).

        Parameters
        ----------
        index : int
            Acquisition index of the first frame (0 for the first frame of the scan).
        theta_deg : float or array_like
            Angle(s) in degrees.
        frames : array_like
            ``(n_slices, width)`` or ``(n, n_slices, width)`` in the input's units.

        Returns
        -------
        numpy.ndarray or None
            The frames after the projection step (input units), or None without one.

        Raises
        ------
        RuntimeError
            The projection step is not trained yet (call :meth:`fit`).
        ValueError
            Frames out of order, of the wrong shape, NaN/inf.
        """
        block = np.asarray(frames)
        if block.ndim == 2:
            block = block[None]
        block = _as_stack(block, "frames")
        if block.shape[1:] != self.shape:
            raise ValueError(f"frames of {block.shape[1:]} do not match the detector {self.shape}")
        theta = np.atleast_1d(np.asarray(theta_deg, np.float64))
        if theta.shape != (len(block),) or not np.all(np.isfinite(theta)):
            raise ValueError(f"need one finite angle per frame: {theta.size} for {len(block)}")
        if index != len(self._theta):
            raise ValueError(f"frame {index} out of order: frame {len(self._theta)} is next")
        if self.needs_fit:
            raise RuntimeError(
                f"method {self.method!r}: train the projection step (fit) before adding frames"
            )
        if self.method == "auto":
            self._preview(theta, block, None)
            self._sink.append("inputs", index, theta, block)
            self._theta.extend(float(t) for t in theta)
            return None
        t0 = time.perf_counter()
        enhanced = None
        if self.spec.projection is not None:
            from ..model.remote import enhance_frames, model_ref

            if self._model_ref is None:  # with a mapper, the model travels as bytes (loaded once per worker)
                self._model_ref = model_ref(self.models["projection"], self.mapper is not None)
            (enhanced,) = list((self.mapper or map)(enhance_frames, [(self._model_ref, block)]))
            if self.keep_projections:
                self._frames.append(enhanced)
            self.timings["projection_step_s"] = (
                self.timings.get("projection_step_s", 0.0) + time.perf_counter() - t0
            )
        t1 = time.perf_counter()
        raw_li = self._log(block)
        if enhanced is not None:
            li = self._log(np.clip(enhanced, 1e-6, None) if self.input == "transmission" else enhanced)
        elif self.debias:
            from .logbias import debias_line_integrals

            li = debias_line_integrals(raw_li, self.open_beam_counts, read_noise=self.read_noise)
        else:
            li = raw_li
        if self.spec.split == "counts":
            for k, half in enumerate(self._split_counts(index, block)):
                self._sink.append(f"half{k}", index, theta, half)
        self._sink.append("li", index, theta, li)
        if self._separate_raw:
            self._sink.append("raw", index, theta, raw_li)
        self._theta.extend(float(t) for t in theta)
        self.timings["backprojection_s"] = (
            self.timings.get("backprojection_s", 0.0) + time.perf_counter() - t1
        )
        self._preview(theta, block, raw_li)
        return enhanced

    def _preview(self, theta: np.ndarray, block: np.ndarray, line_integrals: np.ndarray | None) -> None:
        """Feed the live preview the frames' raw line integrals (taken here when not given)."""
        if self.preview is None:
            return
        t0 = time.perf_counter()
        self.preview.add(theta, self._log(block) if line_integrals is None else line_integrals)
        self.timings["preview_s"] = self.timings.get("preview_s", 0.0) + time.perf_counter() - t0

    def _split_counts(self, index: int, block: np.ndarray) -> list[np.ndarray]:
        """Two half-dose frames of line integrals from a binomial split of each frame's photons.

        The photons of a pixel are ``T * N0`` (transmission times open-beam counts); each is kept
        in half A with probability 1/2, the rest go to B: for Poisson counts A and B are
        independent Poisson scans of half the dose (exactly so for photon counting; approximately
        for integrating detectors).  Seeded per frame: the same at any block size.
        """
        from ..recon import transmission_to_line_integrals
        from .logbias import debias_line_integrals

        n0 = self.open_beam_counts
        half_n0 = n0 / 2.0
        floor = log_floor(half_n0)
        out: list[list[np.ndarray]] = [[], []]
        for j, frame in enumerate(block):
            photons = np.rint(np.clip(frame, 0.0, None) * n0).astype(np.int64)
            a = np.random.default_rng([self.seed, 11, index + j]).binomial(photons, 0.5)
            for k, part in enumerate((a, photons - a)):
                li = transmission_to_line_integrals((part / half_n0).astype(np.float32), floor=floor)
                out[k].append(debias_line_integrals(li, half_n0, read_noise=self.read_noise / np.sqrt(2.0)))
        return [np.stack(o).astype(np.float32) for o in out]

    def _dir(self) -> Path:
        """This scan's folder in ``workdir`` (``scan-*``: two scans never share files)."""
        if self._scan_dir is None:
            import tempfile

            assert self.workdir is not None
            self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._scan_dir = Path(tempfile.mkdtemp(prefix="scan-", dir=self.workdir))
        return self._scan_dir

    def discard(self) -> None:
        """Drop the frames kept (the on-disk stacks too) of a scan that is reconstructed or will not be."""
        self._sink.discard()

    @property
    def n_frames(self) -> int:
        """Frames added so far.

        Returns
        -------
        int
            The count.
        """
        return len(self._theta)

    # ------------------------------------------------------------------ end of scan
    def _subset_volumes(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(subset volumes, full volume, raw volume)."""
        from ..recon.subsets import subset_index

        theta = np.asarray(self._theta)
        wanted: list[tuple[str, str, Any]] = [("full", "li", None)]
        if self._separate_raw:
            wanted.append(("raw", "raw", None))
        if self.spec.split == "counts":
            wanted += [(f"subset{k}", f"half{k}", None) for k in range(2)]
        elif self.subsets > 1:
            subsets = subset_index(len(theta), self.subsets)
            wanted += [(f"subset{k}", "li", idx) for k, idx in enumerate(subsets)]
        # slabs of slices, run by the mapper (in order here, or as tasks on a cluster), each slab
        # of every stack read once: the same volumes as reconstruct() calls, and for "fbp" the same
        # as the frame-by-frame sums (the accumulating sink's)
        vols = self._sink.volumes(theta, wanted, mapper=self.mapper, progress=self.progress,
                                  out_dir=None if self.workdir is None else self._dir(),
                                  backend=self.backend, center=self.center)  # fmt: skip
        self.discard()  # the line integrals are reconstructed: their stacks go
        parts = [vols[f"subset{k}"] for k in range(self.subsets)] if self.subsets > 1 else []
        return parts, vols["full"], vols.get("raw", vols["full"])

    def finish(self) -> ScanResult:
        """Reconstruct, run the slice step and return the result.

        Returns
        -------
        ScanResult
            Volumes, enhanced projections, models and provenance.

        Raises
        ------
        ValueError
            Too few frames for the subsets.
        """
        from ..recon.stored import StoredArray

        if self.n_frames >= 2:
            check_rotation(self._theta)  # also for the streaming enhancer: identical angles give NaN
        if self.method == "auto":
            from .auto import finish_auto

            return finish_auto(self)
        if self.n_frames < max(2, self.subsets):
            raise ValueError(f"{self.n_frames} frame(s): at least {max(2, self.subsets)} are needed")
        t0 = time.perf_counter()
        parts, full, raw = self._subset_volumes()
        self.timings["reconstruction_s"] = (
            self.timings.get("backprojection_s", 0.0) + time.perf_counter() - t0
        )
        volume = full
        slice_record: dict[str, Any] | None = None
        t1 = time.perf_counter()
        first: ScanResult | None = None
        if self.spec.slices == "n2i":
            opts = {"seed": self.seed, **self.n2i_options}
            initial = self.warm_start.get("slices")
            if self.slice_model is not None:
                denoiser = self.slice_model
            else:
                if initial is not None:  # the registered denoiser's result first, then fine-tune it
                    first = first_result(self, initial, parts, raw, t1)
                    opts = self._fine_tuned(opts, "steps", initial)
                denoiser = self._fit_denoiser(parts, opts)
            self.models["slices"] = denoiser
            volume, slice_record = self._denoise(denoiser, parts, "enhanced.h5")
        elif self.spec.slices == "bm3d":
            from .slices import bm3d_slices

            # whole volumes in memory: BM3D's tuning compares the subsets (not bounded by slabs). An auto
            # candidate filters only the slices its judge reads (BM3D filters each slice on its own)
            candidate = AUTO_CANDIDATE.get() and self.judge_rows is not None
            only = judge_reach(self.judge_rows, len(full)) if candidate else None
            volume, slice_record = bm3d_slices([np.asarray(p) for p in parts], np.asarray(full),
                                               factor=self.slice_factor, progress=self.progress,
                                               rows=only)  # fmt: skip
        if self.spec.slices == "bm3d":
            from ..recon.core import zero_outside_circle

            zero_outside_circle(volume)
        if self.spec.slices is not None:
            self.timings["slice_step_s"] = time.perf_counter() - t1
        for part in parts:  # the subsets' volumes were the slice step's input: their files go
            if isinstance(part, StoredArray):
                Path(part.path).unlink(missing_ok=True)
        raw_score = None if first is None or first.quality is None else first.quality["raw"]
        result = build_result(self, volume, raw, slice_record, raw_score=raw_score)
        if first is not None:
            result = keep_better(self, first, result)
        return result

    def train_denoiser(self, slice_rows: Any = None) -> Any:
        """Reconstruct the angle subsets of the frames added and train the Noise2Inverse denoiser
        on them, without denoising anything (``method="auto"`` trains its candidate on detector
        rows sampled over the whole height this way, then judges it on its slab).

        Parameters
        ----------
        slice_rows : sequence of int, optional
            The detector rows the frames hold, when they are a sample of a taller detector (see
            :func:`~bluesky_lowdose.model.n2i.train_noise2inverse`).

        Returns
        -------
        Enhancer
            The denoiser (also in ``models["slices"]``).

        Raises
        ------
        ValueError
            A method without Noise2Inverse, or too few frames for the subsets.
        """
        if self.spec.slices != "n2i":
            raise ValueError(f"method {self.method!r} trains no Noise2Inverse denoiser")
        if self.n_frames < max(2, self.subsets):
            raise ValueError(f"{self.n_frames} frame(s): at least {max(2, self.subsets)} are needed")
        parts, _, _ = self._subset_volumes()
        self.models["slices"] = self._fit_denoiser(parts, {"seed": self.seed, **self.n2i_options},
                                                   slice_rows=slice_rows)  # fmt: skip
        return self.models["slices"]

    def _fit_denoiser(self, parts: list[Any], opts: dict[str, Any], **kwargs: Any) -> Any:
        """Noise2Inverse trained on the subsets' volumes ``parts`` with ``opts`` (and ``kwargs``)."""
        from ..model.n2i import train_noise2inverse

        return self._train(train_noise2inverse, parts, progress=self.progress, on_epoch=self._hook("slices"),
                           **opts, **kwargs)  # fmt: skip

    def _denoise(self, denoiser: Any, parts: list[Any], name: str) -> tuple[Any, dict[str, Any]]:
        """The Noise2Inverse volume of ``denoiser`` (in ``workdir/name`` with a work directory)."""
        from ..model import n2i

        out = None if self.workdir is None else self._dir() / name
        inference = n2i.N2I_INFERENCE
        volume = n2i.denoise_splits(denoiser, parts, progress=self.progress, mask=True, out=out,
                                    mapper=self.mapper, inference=inference)  # fmt: skip
        reused = denoiser is self.slice_model or denoiser is self.warm_start.get("slices")
        return volume, {"kind": "noise2inverse", "model_hash": denoiser.model_hash, "inference": inference,
                        "reused_model": reused, "model": denoiser.provenance}  # fmt: skip
