"""One scan, one pipeline: pairs -> projection step -> log -> subset FBP -> slice step.

:class:`ScanPipeline` holds the state of one scan and is fed frame by frame (the streaming
enhancer does that as documents arrive); :func:`enhance_scan` feeds it a whole stack (the
offline CLI and the evaluation do that).  Both run the same code on the same numbers.

Methods (:data:`METHODS`):

============== ===== ============================================ ==================================
method         pairs projection step (before the log)            slice step (after reconstruction)
============== ===== ============================================ ==================================
``none``       no    --                                           --
``paper``      yes   CNN trained on the long/short pairs (Yang)   --
``n2i``        no    -- (low-count ``-log`` bias corrected)        Noise2Inverse over the rotation
``hybrid``     yes   CNN trained on the pairs                     Noise2Inverse over the rotation
``bm3d``       yes   BM3D, sigma tuned on the pairs               --
``median``     yes   median filter tuned on the pairs             --
``tv``         yes   total variation tuned on the pairs           --
``bm3d-slices`` no   -- (bias corrected)                          BM3D, sigma tuned on the split
============== ===== ============================================ ==================================

``"auto"`` is :data:`AUTO_WITH_PAIRS` when pairs are given, else :data:`AUTO_WITHOUT_PAIRS`
(the best methods measured in ``docs/evaluation.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .angles import DEFAULT_TOLERANCE, match_angles
from .flatfield import DEFAULT_FLOOR, FLOOR_PHOTONS

__all__ = [
    "AUTO_WITHOUT_PAIRS",
    "AUTO_WITH_PAIRS",
    "METHODS",
    "N2I_OPTIONS",
    "PROJECTION_TRAINING",
    "MethodSpec",
    "ScanPipeline",
    "ScanResult",
    "enhance_scan",
    "resolve_method",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """What a method does.

    Attributes
    ----------
    pairs : bool
        Needs long/short reference pairs.
    projection : str or None
        Projection step: ``"cnn"`` or a classical filter name.
    slices : str or None
        Slice step: ``"n2i"`` or ``"bm3d"``.
    debias : bool
        Corrects the low-count bias of ``-log`` when photon statistics are given.
    description : str
        One line for provenance and reports.
    """

    pairs: bool
    projection: str | None
    slices: str | None
    debias: bool
    description: str


METHODS: dict[str, MethodSpec] = {
    "none": MethodSpec(False, None, None, False, "no enhancement: flat/dark correction, -log, FBP"),
    "paper": MethodSpec(True, "cnn", None, False,
                        "Yang et al., Sci. Rep. 8:2575 (2018): CNN trained on long/short reference pairs "
                        "enhances every projection"),
    "n2i": MethodSpec(False, None, "n2i", True,
                      "Noise2Inverse (Hendriksen et al., IEEE TCI 2020): a CNN learns to denoise "
                      "reconstructed slices from disjoint angle subsets of the whole rotation"),
    "hybrid": MethodSpec(True, "cnn", "n2i", False,
                         "the paper's pair-trained CNN on projections, then Noise2Inverse on the slices"),
    "bm3d": MethodSpec(True, "bm3d", None, False, "BM3D on projections, sigma tuned on the reference pairs"),
    "median": MethodSpec(True, "median", None, False, "median filter on projections, tuned on the pairs"),
    "tv": MethodSpec(True, "tv", None, False, "total-variation denoising of projections, tuned on the pairs"),
    "bm3d-slices": MethodSpec(False, None, "bm3d", True,
                              "BM3D on reconstructed slices, sigma tuned so that the denoised reconstruction "
                              "of one angle subset best predicts the other's"),
}  # fmt: skip

#: ``method="auto"`` with reference pairs, and without.  Measured (docs/evaluation.md): Noise2Inverse
#: beats the pair-trained projection CNN and the hybrid of both in both protocols, so the pairs are
#: not used by default (they stay the input of ``"paper"`` and ``"hybrid"``).
AUTO_WITH_PAIRS = "n2i"
AUTO_WITHOUT_PAIRS = "n2i"

#: Training of the projection CNN (the paper's step): one set of defaults for every entry point.
PROJECTION_TRAINING: dict[str, Any] = {"model": "unet", "epochs": 25, "patience": 6}
#: Noise2Inverse options (see :func:`bluesky_lowdose.model.n2i.train_noise2inverse`).
N2I_OPTIONS: dict[str, Any] = {"steps": 2400, "crop": 64, "batch_size": 16}


def resolve_method(method: str, has_pairs: bool, *, has_projection_model: bool = False) -> str:
    """The method ``method`` stands for (``"auto"`` resolved), checked against the inputs.

    Parameters
    ----------
    method : str
        A key of :data:`METHODS` or ``"auto"``.
    has_pairs : bool
        Whether long/short reference pairs (or a trained projection model) are available.
    has_projection_model : bool
        A trained projection model was given: ``"auto"`` then applies it (``"paper"``).

    Returns
    -------
    str
        The method.

    Raises
    ------
    ValueError
        Unknown method, or one that needs pairs when there are none.
    """
    if method == "auto":
        if has_projection_model:
            return "paper"
        return AUTO_WITH_PAIRS if has_pairs else AUTO_WITHOUT_PAIRS
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose 'auto' or one of {', '.join(METHODS)}")
    if METHODS[method].pairs and not has_pairs:
        raise ValueError(
            f"method {method!r} needs long/short reference pairs (long_refs) or a trained projection model; "
            f"without them use 'n2i' or 'bm3d-slices'"
        )
    return method


@dataclass
class ScanResult:
    """The outcome of :func:`enhance_scan` / :meth:`ScanPipeline.finish`.

    Attributes
    ----------
    volume : numpy.ndarray or StoredArray
        ``[z, y, x]`` reconstruction of the enhanced scan (geometry of :func:`recon.reconstruct`);
        a :class:`~bluesky_lowdose.recon.stored.StoredArray` on disk when the pipeline has a
        ``workdir`` (``numpy.asarray`` reads it).
    raw_volume : numpy.ndarray or StoredArray
        The same reconstruction without enhancement (plain ``-log``, no bias correction).
    projections : numpy.ndarray or None
        Enhanced projections (input units) when the method has a projection step and they were
        kept, else None.
    method : str
        The method run (``"auto"`` resolved).
    provenance : dict
        JSON-ready record: method, inputs, models (hashes, hyper-parameters, loss curves),
        reconstruction, log and bias correction, software versions, timings.
    models : dict
        ``"projection"``: the pair-trained :class:`~bluesky_lowdose.model.Enhancer` (or baseline);
        ``"slices"``: the Noise2Inverse :class:`~bluesky_lowdose.model.Enhancer`.
    timings : dict
        Seconds per stage.
    """

    volume: Any
    raw_volume: Any
    projections: np.ndarray | None
    method: str
    provenance: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


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
        Reconstruction backend; None or ``"fbp"`` accumulates frame by frame, others
        (``"tomopy"``, ``"dfi"``, ``"skimage"``) keep the line integrals and reconstruct at the end.
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
        self.spec = METHODS[self.method]
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
        self.projection_training = {**PROJECTION_TRAINING, **(projection_training or {})}
        self.n2i_options = {**N2I_OPTIONS, **(n2i_options or {})}
        self.subsets = int(subsets) if self.spec.slices else 1
        self.center = center
        self.backend = None if backend in (None, "fbp") else backend
        self.mapper = mapper
        self.workdir = None if workdir is None else Path(workdir)
        self._scan_dir: Path | None = None  # this scan's own folder in workdir (made at first use)
        self._stacks: dict[str, Any] = {}  # name -> StackWriter of line integrals (with workdir)
        self._model_ref: Any = None  # the projection model as tasks get it
        self.keep_projections = keep_projections and self.spec.projection is not None
        self.seed = int(seed)
        self.progress = progress
        self.on_epoch = on_epoch
        self.projection_model = projection_model
        self.models: dict[str, Any] = {}
        if projection_model is not None:
            self.models["projection"] = projection_model
        self.timings: dict[str, float] = {}
        self.pairs_record: dict[str, Any] | None = None
        self._frames: list[np.ndarray] = []
        self._line_integrals: list[np.ndarray] = []
        self._raw_line_integrals: list[np.ndarray] = []
        self._theta: list[float] = []
        self._acc: Any = None
        self._raw_acc: Any = None
        self._separate_raw = self.spec.projection is not None or self.debias
        if self.backend is None and mapper is None and workdir is None:
            from ..recon.subsets import SubsetBackprojector

            self._acc = SubsetBackprojector(*self.shape, subsets=self.subsets, center=center)
            if self._separate_raw:
                self._raw_acc = SubsetBackprojector(*self.shape, subsets=1, center=center)

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
        if not self.needs_fit:
            return self.models.get("projection")
        t0 = time.perf_counter()
        if self.spec.projection == "cnn":
            from ..model import train

            opts = {"seed": self.seed, **self.projection_training}
            model = train(short, long_, progress=self.progress, on_epoch=self._hook("projection"), **opts)
        else:
            from ..model import baseline

            model = baseline(self.spec.projection, short, long_)
        self.models["projection"] = model
        self.timings["projection_training_s"] = time.perf_counter() - t0
        return model

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
        if self.open_beam_counts is None:
            return DEFAULT_FLOOR
        # half a photon of the open beam, but never above 0.5 (pixels that see no beam)
        return np.minimum(FLOOR_PHOTONS / self.open_beam_counts, 0.5)

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
        if self._acc is not None:
            self._acc.add(index, theta, li)
            if self._raw_acc is not None:
                self._raw_acc.add(index, theta, raw_li)
        elif self.workdir is not None:
            self._stack("li").append(li)
            if self._separate_raw:
                self._stack("raw").append(raw_li)
        else:
            self._line_integrals.append(li)
            if self._separate_raw:
                self._raw_line_integrals.append(raw_li)
        self._theta.extend(float(t) for t in theta)
        self.timings["backprojection_s"] = (
            self.timings.get("backprojection_s", 0.0) + time.perf_counter() - t1
        )
        return enhanced

    def _stack(self, name: str) -> Any:
        """The on-disk stack ``name`` of line integrals (created at the first frame)."""
        if name not in self._stacks:
            from ..recon.stored import StackWriter

            self._stacks[name] = StackWriter(self._dir() / f"line_integrals_{name}.h5", "li", self.shape)
        return self._stacks[name]

    def _dir(self) -> Path:
        """This scan's folder in ``workdir`` (``scan-*``: two scans never share files)."""
        if self._scan_dir is None:
            import tempfile

            assert self.workdir is not None
            self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._scan_dir = Path(tempfile.mkdtemp(prefix="scan-", dir=self.workdir))
        return self._scan_dir

    def discard(self) -> None:
        """Delete the on-disk line-integral stacks of a scan that will not be finished."""
        for stack in self._stacks.values():
            stack.discard()
        self._stacks.clear()

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
        if self._acc is not None:
            parts = self._acc.subset_volumes() if self.subsets > 1 else []
            full = self._acc.volume()
            raw = self._raw_acc.volume() if self._raw_acc is not None else full
            return parts, full, raw
        from ..recon.slabs import reconstruct_volumes
        from ..recon.subsets import subset_index

        theta = np.asarray(self._theta)
        sources: dict[str, Any]
        if self.workdir is not None:
            sources = {name: stack.close() for name, stack in self._stacks.items()}
        else:
            sources = {"li": np.concatenate(self._line_integrals)}
            if self._separate_raw:
                sources["raw"] = np.concatenate(self._raw_line_integrals)
        wanted: list[tuple[str, str, Any]] = [("full", "li", None)]
        if self._separate_raw:
            wanted.append(("raw", "raw", None))
        if self.subsets > 1:
            subsets = subset_index(len(theta), self.subsets)
            wanted += [(f"subset{k}", "li", idx) for k, idx in enumerate(subsets)]
        # slabs of slices, run by the mapper (in order here, or as tasks on a cluster), each slab
        # of every stack read once: the same volumes as reconstruct() calls, and for "fbp" the same
        # as the frame-by-frame sums
        vols = reconstruct_volumes(sources, theta, wanted, mapper=self.mapper, progress=self.progress,
                                   out_dir=None if self.workdir is None else self._dir(),
                                   backend=self.backend or "fbp",
                                   center=self.center)  # fmt: skip
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
        from ..recon import resolve_backend
        from ..recon.stored import StoredArray

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
        if self.spec.slices == "n2i":
            from ..model.n2i import denoise_splits, train_noise2inverse

            opts = {"seed": self.seed, **self.n2i_options}
            denoiser = train_noise2inverse(
                parts, progress=self.progress, on_epoch=self._hook("slices"), **opts
            )
            self.models["slices"] = denoiser
            out = None if self.workdir is None else self._dir() / "enhanced.h5"
            volume = denoise_splits(denoiser, parts, progress=self.progress, mask=True, out=out,
                                    mapper=self.mapper)  # fmt: skip
            slice_record = {"kind": "noise2inverse", "model_hash": denoiser.model_hash,
                            "model": denoiser.provenance}  # fmt: skip
        elif self.spec.slices == "bm3d":
            from .slices import bm3d_slices

            # whole volumes in memory: BM3D's tuning compares the subsets (not bounded by slabs)
            volume, slice_record = bm3d_slices([np.asarray(p) for p in parts], np.asarray(full),
                                               progress=self.progress)  # fmt: skip
        if self.spec.slices == "bm3d":
            from ..recon.core import zero_outside_circle

            zero_outside_circle(volume)
        if self.spec.slices is not None:
            self.timings["slice_step_s"] = time.perf_counter() - t1
        for part in parts:  # the subsets' volumes were the slice step's input: their files go
            if isinstance(part, StoredArray):
                Path(part.path).unlink(missing_ok=True)
        projections = np.concatenate(self._frames) if self._frames else None
        backend = resolve_backend(self.backend) if self.backend else "fbp"
        prov: dict[str, Any] = {
            "method": self.method,
            "description": self.spec.description,
            "input": self.input,
            "n_projections": self.n_frames,
            "theta_range_deg": [float(min(self._theta)), float(max(self._theta))],
            "pairs": self.pairs_record,
            "log": None if self.input == "line_integrals" else {
                "floor": "half a photon of each pixel's open beam" if self.open_beam_counts is not None
                else f"transmission {DEFAULT_FLOOR:g}",
                "bias_correction": None if not self.debias else {
                    "function": "bluesky_lowdose.pipeline.logbias.debias_line_integrals",
                    "median_open_beam_photons": float(np.median(self.open_beam_counts)),
                    "read_noise_photons": self.read_noise,
                },
            },
            "projection_step": _model_record(self.models.get("projection"), self.spec.projection,
                                             self.projection_model is not None),
            "slice_step": slice_record,
            "reconstruction": {"backend": backend, "filter": "parzen",
                               "center": (self.shape[1] - 1) / 2.0 if self.center is None else self.center,
                               "angle_subsets": self.subsets, "subset_rule": "frame i -> subset i % K"},
            "seed": self.seed,
        }  # fmt: skip
        from ..versions import software_versions

        prov["software"] = software_versions(backend)
        prov["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return ScanResult(volume=volume, raw_volume=raw, projections=projections, method=self.method,
                          provenance=prov, models=dict(self.models), timings=dict(self.timings))  # fmt: skip


def _model_record(model: Any, kind: str | None, reused: bool) -> dict[str, Any] | None:
    if kind is None:
        return None
    import json

    record: dict[str, Any] = {"kind": kind, "reused_model": reused}
    prov = getattr(model, "provenance", None)
    if prov is not None:
        record["model"] = json.loads(json.dumps(prov, default=str))
    if hasattr(model, "model_hash"):
        record["model_hash"] = model.model_hash
    return record


def pair_from_projections(
    projections: np.ndarray,
    theta_deg: np.ndarray,
    reference_angles: Any,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """The projections at ``reference_angles`` (the short partners of long references).

    Parameters
    ----------
    projections : numpy.ndarray
        ``(n, n_slices, width)``.
    theta_deg : numpy.ndarray
        Their angles, degrees.
    reference_angles : array_like
        Angles of the long references, degrees.
    tolerance : float
        Matching tolerance in degrees (modulo 360).

    Returns
    -------
    tuple of numpy.ndarray
        The matched projections and their indices.

    Raises
    ------
    ValueError
        A reference angle with no projection within ``tolerance``.
    """
    ref = np.atleast_1d(np.asarray(reference_angles, np.float64))
    idx = match_angles(ref, theta_deg, tolerance)
    if np.any(idx < 0):
        raise ValueError(
            f"reference angle(s) {ref[idx < 0].tolist()} have no projection within {tolerance} deg "
            f"(projections span {float(np.min(theta_deg)):g} .. {float(np.max(theta_deg)):g} deg)"
        )
    return projections[idx], idx


def enhance_scan(
    projections: Any,
    theta_deg: Any,
    *,
    short_refs: Any = None,
    long_refs: Any = None,
    reference_angles: Any = None,
    input: str = "transmission",
    method: str = "auto",
    open_beam_counts: Any = None,
    read_noise: float = 0.0,
    projection_model: Any = None,
    projection_training: dict[str, Any] | None = None,
    n2i_options: dict[str, Any] | None = None,
    center: float | None = None,
    backend: str | None = None,
    keep_projections: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    block: int = 8,
    progress: bool = False,
    seed: int = 0,
    mapper: Callable[..., Any] | None = None,
    workdir: str | Path | None = None,
) -> ScanResult:
    """Enhance and reconstruct one scan with one method: the package's single pipeline.

    Parameters
    ----------
    projections : array_like
        ``(n_angles, n_slices, width)``: flat/dark-corrected transmission (``input=
        "transmission"``) or line integrals (``input="line_integrals"``), in acquisition order.
    theta_deg : array_like
        ``(n_angles,)`` angles in degrees.
    short_refs, long_refs : array_like, optional
        ``(m, n_slices, width)`` short- and long-exposure reference frames at the same angles, in
        the projections' units.  Without ``short_refs``, the short partners of ``long_refs`` are
        the projections at ``reference_angles``.
    reference_angles : array_like, optional
        Angles of the references (degrees).
    input : {"transmission", "line_integrals"}
        Units of the frames.
    method : str
        ``"auto"`` or a key of :data:`METHODS` (``"paper"``, ``"n2i"``, ``"hybrid"``, ...).
    open_beam_counts : float or array_like, optional
        Detected photons of the open beam per pixel (scalar or ``(n_slices, width)``) at the
        projections' exposure, for the low-count ``-log`` bias correction; None: no correction.
    read_noise : float
        Additive detector noise in photons (with ``open_beam_counts``).
    projection_model : object, optional
        A trained projection enhancer to use instead of training on the pairs.
    projection_training : dict, optional
        Overrides of :data:`PROJECTION_TRAINING` (``epochs``, ``model``, ...).
    n2i_options : dict, optional
        Overrides of :data:`N2I_OPTIONS` (``steps``, ``crop``, ...).
    center : float, optional
        Rotation axis column.
    backend : str, optional
        Reconstruction backend (default: the package's FBP, accumulated frame by frame).
    keep_projections : bool
        Return the enhanced projections of methods with a projection step.
    tolerance : float
        Degrees within which reference angles match projection angles.
    block : int
        Frames processed together (the streaming enhancer uses the same blocks).
    progress : bool
        Progress bars.
    mapper : callable, optional
        Runs the reconstruction slabs (e.g. :meth:`bluesky_lowdose.engine.DaskEngine.map`);
        see :class:`ScanPipeline`.
    seed : int
        Seeds every learned step.
    workdir : str or Path, optional
        Line integrals and volumes go to HDF5 files there (bounded memory; the volumes come back
        as :class:`~bluesky_lowdose.recon.stored.StoredArray`); see :class:`ScanPipeline`.

    Returns
    -------
    ScanResult
        ``volume``, ``raw_volume``, ``projections``, ``method``, ``provenance``, ``models``.

    Raises
    ------
    ValueError
        Bad shapes, NaN/inf, a method that needs pairs without them, unmatched reference angles.

    Examples
    --------
    >>> result = enhance_scan(transmission, theta, long_refs=long, reference_angles=[0, 90])  # doctest: +SKIP
    >>> result.volume.shape  # doctest: +SKIP
    (128, 128, 128)
    """
    proj = _as_stack(projections, "projections")
    theta = np.asarray(theta_deg, np.float64)
    if theta.shape != (len(proj),) or not np.all(np.isfinite(theta)):
        raise ValueError(
            f"theta_deg must hold one finite angle per projection ({len(proj)}), got {theta.shape}"
        )
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if short_refs is not None and long_refs is None:
        raise ValueError("short_refs without long_refs: give both, or long_refs with reference_angles")
    has_pairs = long_refs is not None
    pipe = ScanPipeline(proj.shape[1:], method, has_pairs=has_pairs, input=input,
                        open_beam_counts=open_beam_counts, read_noise=read_noise,
                        projection_model=projection_model, projection_training=projection_training,
                        n2i_options=n2i_options, center=center, backend=backend,
                        keep_projections=keep_projections, seed=seed, progress=progress,
                        mapper=mapper, workdir=workdir)  # fmt: skip
    if has_pairs:
        long_ = _as_stack(long_refs, "long_refs")
        if short_refs is None:
            if reference_angles is None:
                raise ValueError(
                    "long_refs without short_refs need reference_angles to find their short partners"
                )
            short, _ = pair_from_projections(proj, theta, reference_angles, tolerance)
        else:
            short = _as_stack(short_refs, "short_refs")
        pipe.fit(short, long_, reference_angles=reference_angles)
    from tqdm.auto import tqdm

    with tqdm(total=len(proj), desc=f"{pipe.method}: projections", unit="frame", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for i in range(0, len(proj), block):
            pipe.add(i, theta[i : i + block], proj[i : i + block])
            bar.update(min(block, len(proj) - i))
    return pipe.finish()
