"""Noise2Inverse: a slice denoiser learned from the scan itself (Hendriksen et al., IEEE TCI 6, 2020).

The rotation is split into ``K`` disjoint angle subsets and each is reconstructed on its own.
The noise of the subsets' reconstructions is independent (the projections are), their signal
is the same object; a network that maps the reconstruction of one subset onto that of another
therefore learns to predict the signal, i.e. to denoise (Noise2Noise in the reconstruction
domain).  Here ``K = 2`` by default (even and odd projections): the network is trained in both
directions on random crops of the reconstructed slices, with the mean squared error and Adam at
a cosine-decaying rate. The denoised volume is its prediction from the whole scan's reconstruction
(the mean of the subsets, :data:`N2I_INFERENCE`), or the mean of its predictions from each subset.

The network is the package's fully convolutional U-Net; the result is an ordinary
:class:`~bluesky_lowdose.model.Enhancer` (saved, loaded and hashed like the projection enhancer),
applied to reconstructed slices instead of projections.  No long exposures are needed, and every
frame of the scan is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from ._checks import TrainingError, check_positive_int
from .enhancer import Enhancer
from .networks import DOWNSAMPLING, build_network
from .normalization import Normalization
from .patches import dihedral
from .precision import training_policy
from .training import (
    _EpochHook,
    _Guard,
    finish_enhancer,
    fit_and_release,
    initial_hyperparameters,
    start_network,
    trained_copy,
)

__all__ = [
    "INFERENCE_INPUTS",
    "N2I_DEFAULTS",
    "N2I_INFERENCE",
    "denoise_slab",
    "denoise_splits",
    "train_noise2inverse",
    "training_rows",
]

#: Pixels (times channels) per network call when denoising slices.
_PIXELS_PER_CALL = 1 << 22

#: Most bytes of the subsets' reconstructions read for training: larger volumes are sampled at
#: evenly spaced slices (with their neighbours; at least :data:`MIN_TRAINING_SLICES`), so memory
#: grows with a slice, not with the scan.
TRAINING_BYTES = 256 * 2**20

#: Centre slices sampled at least, whatever the budget (a 2048^2 slice pair is 32 MiB).
MIN_TRAINING_SLICES = 16

#: Slices denoised (and written) at a time.
DENOISE_SLAB = 16

#: Default hyper-parameters of :func:`train_noise2inverse` (measured on 128^3 and 256^3 scans). Batches
#: of 4 crops for 4400 steps (2026-12-06): the same quality as 16 for 2400 (five 128^3 cases, 1/10 dose:
#: +0.07 dB and +0.009 SSIM on average) in a quarter less training time on 2 CPU cores
#: (docs/evaluation.md, "Noise2Inverse's optimisation").
N2I_DEFAULTS: dict[str, Any] = {
    "steps": 4400,
    "crop": 64,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "final_learning_rate_fraction": 0.05,
    "base_filters": 16,
    "context": 1,
}


#: What a trained denoiser is applied to (:func:`denoise_splits`): ``"full"``, the mean of the subsets'
#: reconstructions (the whole scan's), one prediction per flip; ``"subsets"``, the mean of the other
#: subsets for each subset (the paper's "X:1"), the predictions averaged. The network learnt to
#: predict from one subset's noise; given the whole scan's, with half its variance, it removes as much
#: and keeps more signal. Measured at 128³, 1/10 dose, one trained model each (PSNR / SSIM inside the
#: object against the noise-free reconstruction, docs/evaluation.md "Noise2Inverse applied to the
#: whole scan"): photon protocol 22.63 / 0.698 -> 23.00 / 0.713, under-blur 22.18 / 0.599 ->
#: 22.84 / 0.620.
N2I_INFERENCE = "full"
INFERENCE_INPUTS = ("full", "subsets")


class _SplitCrops(keras.utils.PyDataset):
    """Random crops of (input subset, target subset) slices, both directions, dihedral augmentation.

    The input holds the slice and ``context`` neighbours on each side as channels (their noise is
    independent: each detector row is reconstructed on its own); the target is the slice itself.
    """

    def __init__(
        self,
        splits: np.ndarray,
        norm: Normalization,
        crop: int,
        batch_size: int,
        steps: int,
        seed: int,
        weights: np.ndarray,
        near: np.ndarray,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.splits = splits
        self.norm = norm
        self.crop = crop
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.epoch = 0  # batches are a function of (seed, epoch, index): Keras may ask for one twice
        self.weights = weights
        self.near = near  # (n_centres, 2 context + 1): indices into splits' slices

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        k, _, h, w = self.splits.shape
        c, span = self.crop, self.near.shape[1]
        x = np.empty((self.batch_size, c, c, span), np.float32)
        y = np.empty((self.batch_size, c, c, 1), np.float32)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        picks = rng.choice(len(self.near), self.batch_size, p=self.weights)
        for i, pick in enumerate(picks):
            dst = int(rng.integers(k))
            r0 = int(rng.integers(0, h - c + 1))
            c0 = int(rng.integers(0, w - c + 1))
            near = self.near[pick]
            zi = near[span // 2]
            # input: the mean of every subset but the target (the N2I "X:1" strategy; K = 2: the other)
            others = [j for j in range(k) if j != dst]
            # index each subset's crop first: self.splits[others] would copy whole volumes per crop
            block = np.mean([self.splits[j, near, r0 : r0 + c, c0 : c0 + c] for j in others], axis=0)
            x[i] = np.moveaxis(block, 0, -1)
            y[i, :, :, 0] = self.splits[dst, zi, r0 : r0 + c, c0 : c0 + c]
        ops = rng.integers(0, 8, self.batch_size)
        return dihedral(self.norm.forward(x), ops), dihedral(self.norm.forward(y), ops)


class _TimeLimit(keras.callbacks.Callback):
    """Stops training after the step during which ``seconds`` have passed (None: never)."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds = seconds
        self.steps = 0
        self.stopped = False
        self._t0 = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        if self.seconds is not None and time.perf_counter() - self._t0 > self.seconds:
            self.stopped = True
            self.model.stop_training = True


class _StepProgress(keras.callbacks.Callback):
    """A tqdm bar over optimisation steps with the running loss."""

    def __init__(self, steps: int, enabled: bool) -> None:
        super().__init__()
        self.bar = tqdm(total=steps, desc="noise2inverse", unit="step", disable=not enabled, leave=False)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.bar.update(1)
        if logs and "loss" in logs and batch % 20 == 0:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3g}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()


def _check_splits(splits: Any) -> np.ndarray:
    try:
        arr = np.stack([np.asarray(s, dtype=np.float32) for s in splits])
    except ValueError as err:
        raise ValueError(f"the subsets' reconstructions must share one shape: {err}") from err
    if arr.ndim == 3:  # K single slices
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"give K reconstructions of shape (Z, Y, X) (or (Y, X)), got {arr.shape[1:]}")
    if arr.shape[0] < 2:
        raise ValueError(f"Noise2Inverse needs at least 2 disjoint subsets, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("the subsets' reconstructions contain NaN or infinite values")
    return arr


def _shape(a: Any) -> tuple[int, ...]:
    """Shape without reading an on-disk array."""
    shape = getattr(a, "shape", None)
    return tuple(shape) if shape is not None else np.shape(a)


def training_rows(
    shape: Sequence[int], n_subsets: int, context: int, budget: int = TRAINING_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """The slices of a ``(Z, Y, X)`` volume Noise2Inverse trains on, within ``budget`` bytes.

    A volume whose ``n_subsets`` reconstructions fit the budget is used whole (every slice a
    centre, its neighbours clipped at the ends); a larger one (a beamline scan) at evenly spaced
    centre slices (at least :data:`MIN_TRAINING_SLICES`) with their ``context`` neighbours. The
    same rule decides what is read from stored volumes and which detector rows ``method="auto"``
    reconstructs to train its candidate over the whole height.

    Parameters
    ----------
    shape : sequence of int
        ``(Z, Y, X)`` of one subset's reconstruction.
    n_subsets : int
        Subsets (K).
    context : int
        Neighbouring slices on each side.
    budget : int
        Bytes of float32 slices read at most (beyond :data:`MIN_TRAINING_SLICES` centres).

    Returns
    -------
    tuple of numpy.ndarray
        ``(rows, near)``: the slices needed, sorted; per centre its ``2 context + 1`` slices (indices
        into ``rows``).
    """
    z, h, w = (int(v) for v in shape)
    span = 2 * context + 1
    per_slice = n_subsets * h * w * 4
    if z * per_slice > budget:
        n = max(MIN_TRAINING_SLICES, budget // (per_slice * span))
        centres = np.unique(np.linspace(0, z - 1, n + 2)[1:-1].round().astype(int))
    else:
        centres = np.arange(z)
    near_z = np.clip(centres[:, None] + np.arange(-context, context + 1)[None, :], 0, z - 1)
    rows = np.unique(near_z)
    return rows, np.searchsorted(rows, near_z)


def _sampled_near(rows: Any, context: int) -> np.ndarray:
    """Per centre slice its neighbourhood (indices into ``rows``) for slices that are ``rows`` of a
    taller volume: the centres are the rows whose ``context`` neighbours on each side are all
    there (the first and last rows given are neighbours only)."""
    rows = np.asarray(rows, np.int64)
    if rows.ndim != 1 or rows.size == 0 or np.any(np.diff(rows) <= 0):
        raise ValueError("slice_rows must be increasing slice numbers, one per slice of the subsets")
    near_z = rows[:, None] + np.arange(-context, context + 1)[None, :]
    whole = np.isin(near_z, rows).all(axis=1)
    if not whole.any():
        raise ValueError(f"no slice of slice_rows has its {context} neighbour(s) on each side among them")
    return np.searchsorted(rows, near_z[whole])


def _training_splits(
    splits: Any, context: int, budget: int, slice_rows: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """The subsets' slices to train on, read within ``budget`` bytes (:func:`training_rows`), and
    each centre slice's neighbourhood (indices into them); ``slice_rows``: the splits hold these
    slices of a taller volume (already the sample), read whole."""
    if slice_rows is not None:
        arr = _check_splits(splits)
        if len(slice_rows) != arr.shape[1]:
            raise ValueError(f"slice_rows names {len(slice_rows)} slices, the subsets hold {arr.shape[1]}")
        return arr, _sampled_near(slice_rows, context)
    shapes = [_shape(s) for s in splits]
    if len(shapes) >= 2 and len(set(shapes)) == 1 and len(shapes[0]) == 3:
        needed, near = training_rows(shapes[0], len(shapes), context, budget)
        if len(needed) < shapes[0][0]:
            return _check_splits([np.asarray(s[needed.tolist()]) for s in splits]), near
        return _check_splits(splits), near  # within the budget: every slice (the rows 0..Z-1)
    arr = _check_splits(splits)
    z = arr.shape[1]
    return arr, np.clip(np.arange(z)[:, None] + np.arange(-context, context + 1)[None, :], 0, z - 1)


def train_noise2inverse(
    splits: Sequence[np.ndarray] | np.ndarray,
    *,
    steps: int = N2I_DEFAULTS["steps"],
    crop: int = N2I_DEFAULTS["crop"],
    batch_size: int = N2I_DEFAULTS["batch_size"],
    learning_rate: float = N2I_DEFAULTS["learning_rate"],
    final_learning_rate_fraction: float = N2I_DEFAULTS["final_learning_rate_fraction"],
    base_filters: int = N2I_DEFAULTS["base_filters"],
    context: int = N2I_DEFAULTS["context"],
    seed: int = 0,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
    time_limit_s: float | None = None,
    initial: Enhancer | None = None,
    slice_rows: Sequence[int] | None = None,
    precision: str = "auto",
) -> Enhancer:
    """Train a slice denoiser on the reconstructions of disjoint angle subsets of one scan.

    Parameters
    ----------
    splits : sequence of numpy.ndarray
        ``K >= 2`` reconstructions ``(Z, Y, X)`` of one volume, each from its own disjoint subset
        of the projections (e.g. the even and the odd ones), in the same units.
    steps : int
        Optimisation steps (batches); reported to ``on_epoch`` every 100 steps.
    crop : int
        Edge of the random square crops (a multiple of 8; reduced to the slice size if larger).
    batch_size : int
        Crops per step.
    learning_rate : float
        Initial Adam learning rate, decayed along a cosine to ``final_learning_rate_fraction`` of it.
    final_learning_rate_fraction : float
        Learning rate at the last step, as a fraction of the first.
    base_filters : int
        Filters of the U-Net's first layer.
    context : int
        Neighbouring slices on each side given to the network as extra input channels (0: the
        slice alone).
    seed : int
        Seeds the crops, the augmentation and the network's initial weights.
    progress : bool
        Show a tqdm bar over the steps.
    on_epoch : callable, optional
        ``on_epoch(block, logs)`` after every 100 steps (``logs`` holds ``loss``).
    time_limit_s : float, optional
        Stop after the step during which this many seconds of training have passed (a time
        budget, e.g. ``method="auto"``'s); the steps run are in the provenance
        (``hyperparameters.steps``, ``stopped_by_time_limit``).
    initial : Enhancer, optional
        Fine-tune this Noise2Inverse denoiser (e.g. one from the model registry, trained on another
        sample of the same instrument) instead of starting from random weights: its filters,
        context slices and normalisation are kept (training starts from exactly that model), and
        ``"fine_tuned_from"`` (its weights' hash) goes into the provenance.
    slice_rows : sequence of int, optional
        The subsets hold only these slices (increasing) of a taller volume, e.g. the detector rows
        :func:`training_rows` names, reconstructed alone: the centre slices are those whose
        neighbours are among them. Default: the subsets are the whole volume.
    precision : {"auto", "float32", "bfloat16"}
        The arithmetic of training (:mod:`~bluesky_lowdose.model.precision`): ``"auto"`` trains in
        bfloat16 where the processor computes it natively, else in float32. The returned network
        is float32 either way.

    Returns
    -------
    Enhancer
        A U-Net enhancer for reconstructed slices; its provenance records ``"method":
        "noise2inverse"``, the subsets' count and the hyper-parameters.

    Raises
    ------
    ValueError
        Fewer than two subsets, shapes that differ, NaN/inf, slices smaller than 8 pixels or bad
        hyper-parameters.
    TrainingError
        The loss became NaN or infinite.
    """
    started = time.perf_counter()
    policy = training_policy(precision)
    if initial is not None:  # fine-tuning: the starting network fixes filters and context
        hp = initial_hyperparameters(initial, ("noise2inverse",))
        base_filters, context = hp.get("base_filters", base_filters), hp.get("context_slices", context)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    base_filters = check_positive_int(base_filters, "base_filters")
    seed = check_positive_int(seed, "seed", minimum=0)
    crop = check_positive_int(crop, "crop", minimum=DOWNSAMPLING)
    context = check_positive_int(context, "context", minimum=0)
    arr, near = _training_splits(splits, context, TRAINING_BYTES, slice_rows)
    if not (isinstance(learning_rate, (int, float)) and np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if not 0 < final_learning_rate_fraction <= 1:
        raise ValueError(
            f"final_learning_rate_fraction must lie in (0, 1], got {final_learning_rate_fraction}"
        )
    k, _, h, w = arr.shape
    z_all = _shape(splits[0])[0] if len(_shape(splits[0])) == 3 else 1
    side = min(h, w) // DOWNSAMPLING * DOWNSAMPLING
    if side < DOWNSAMPLING:
        raise ValueError(f"slices of {h}x{w} are smaller than {DOWNSAMPLING} pixels")
    crop = min(crop // DOWNSAMPLING * DOWNSAMPLING, side)
    # fine-tuning keeps the starting model's normalisation: it starts from exactly that model
    norm = Normalization.fit(arr) if initial is None else initial.normalization
    # slices with structure are drawn more often than empty ones (air above/below the object)
    centres = near[:, context]
    spread = arr.mean(axis=0)[centres].reshape(len(centres), -1).std(axis=1).astype(np.float64)
    weights = spread + 0.05 * (spread.max() if spread.max() > 0 else 1.0)
    weights /= weights.sum()

    keras.utils.set_random_seed(seed)
    network = start_network(
        initial,
        lambda: build_network("unet", base_filters=base_filters, in_channels=2 * context + 1),
        policy,
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        float(learning_rate), decay_steps=steps, alpha=float(final_learning_rate_fraction)
    )
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    block = min(100, steps)
    epochs = math.ceil(steps / block)
    data = _SplitCrops(arr, norm, crop, batch_size, block, seed + 1, weights, near)
    guard = _Guard()
    callbacks: list[keras.callbacks.Callback] = [guard, _StepProgress(epochs * block, progress)]
    if on_epoch is not None:
        callbacks.append(_EpochHook(on_epoch))
    limit = _TimeLimit(time_limit_s)
    callbacks.append(limit)
    history = fit_and_release(network, data, epochs=epochs, callbacks=callbacks, verbose=0)
    if guard.failure is not None:
        raise TrainingError(f"Noise2Inverse training diverged: {guard.failure}; try a lower learning_rate")
    hist = {key: [float(v) for v in vals] for key, vals in history.history.items()}
    trained = trained_copy(network)
    provenance: dict[str, Any] = {
        "architecture": "unet",
        "method": "noise2inverse",
        "paper": "Hendriksen, Pelt, Batenburg, IEEE Trans. Comput. Imaging 6:1320 (2020), "
        "doi:10.1109/TCI.2020.3019647",
        "domain": "reconstructed slices",
        "hyperparameters": {
            "patch_size": crop,
            "inference_stride": crop // 2,
            "steps": limit.steps if limit.stopped else epochs * block,
            "planned_steps": epochs * block,
            "stopped_by_time_limit": limit.stopped,
            "batch_size": batch_size,
            "learning_rate": float(learning_rate),
            "schedule": f"cosine decay to {final_learning_rate_fraction:g} of the initial rate",
            "optimizer": "adam",
            "loss": "mean squared error against the other subset's reconstruction",
            "augment": True,
            "base_filters": base_filters,
            "context_slices": context,
            "output_activation": "linear",
            "precision": policy,
        },
        "n_parameters": int(trained.count_params()),
        "training_data": {
            "n_subsets": int(k),
            "volume_shape": [int(z_all), int(h), int(w)],
            "training_slices": len(centres),
            "slice_rows": None if slice_rows is None else [int(r) for r in slice_rows],
        },
        "normalization": norm.to_dict(),
        "history": hist,
        "epochs_run": len(hist.get("loss", [])),
        "seed": seed,
        "fine_tuned_from": None if initial is None else initial.model_hash,
    }
    return finish_enhancer(trained, norm, provenance, started)


def denoise_splits(
    denoiser: Enhancer,
    splits: Sequence[Any] | np.ndarray,
    *,
    tta: bool = True,
    progress: bool = False,
    mask: bool = False,
    out: str | Path | None = None,
    mapper: Callable[..., Any] | None = None,
    inference: str | None = None,
) -> Any:
    """Apply a Noise2Inverse denoiser to the whole scan's reconstruction (the mean of the subsets'),
    or the mean of its predictions from each subset's input (``inference``).

    The volume is processed :data:`DENOISE_SLAB` slices at a time (each slab read with its
    neighbouring slices), so on-disk subsets (:class:`~bluesky_lowdose.recon.stored.StoredArray`)
    are denoised in bounded memory, and the slabs can run as tasks elsewhere (``mapper``).

    Parameters
    ----------
    denoiser : Enhancer
        From :func:`train_noise2inverse`.
    splits : sequence of array_like
        The ``K`` subsets' reconstructions it was trained on (or of a new scan split the same way):
        arrays or on-disk arrays.
    tta : bool
        Also average the predictions for the 8 flips/rotations of each slice (the network was
        trained on all of them; the mean of their predictions is less noisy).
    progress : bool
        Show a progress bar.
    mask : bool
        Zero everything outside the inscribed circle (as the reconstruction does).
    out : str or Path, optional
        Write the volume to this HDF5 file (dataset ``volume``) slab by slab and return a
        :class:`~bluesky_lowdose.recon.stored.StoredArray`; None returns an array.
    mapper : callable, optional
        ``mapper(function, tasks) -> results in order``, e.g.
        :meth:`bluesky_lowdose.engine.DaskEngine.map`: each slab is a task that loads the model
        from bytes (once per worker) and reads its slices itself when the subsets are on disk.
    inference : {"full", "subsets"}, optional
        The network's input: the mean of all subsets (the whole scan's reconstruction, one
        prediction), or for each subset the mean of the others (Noise2Inverse's "X:1", the
        predictions averaged). Default :data:`N2I_INFERENCE`.

    Returns
    -------
    numpy.ndarray or StoredArray
        The denoised volume ``(Z, Y, X)`` float32.
    """
    from ..recon.stored import StoredArray, volume_writer
    from .remote import model_ref

    inference = N2I_INFERENCE if inference is None else inference
    if inference not in INFERENCE_INPUTS:
        raise ValueError(f"inference must be one of {INFERENCE_INPUTS}, got {inference!r}")
    shapes = {_shape(s) for s in splits}
    if len(shapes) != 1:
        raise ValueError(f"the subsets' reconstructions must share one shape, got {sorted(shapes)}")
    shape = next(iter(shapes))
    if len(shape) == 2:  # single slices
        return denoise_splits(denoiser, [np.asarray(s)[None] for s in splits], tta=tta, mask=mask,
                              inference=inference)[0]  # fmt: skip
    if len(shape) != 3:
        raise ValueError(f"give K reconstructions of shape (Z, Y, X) (or (Y, X)), got {shape}")
    z, h, w = shape
    ctx = denoiser.in_channels // 2
    n_ops = 8 if tta and h == w else 1
    ref = model_ref(denoiser, mapper is not None)
    tasks, starts = [], []
    for a in range(0, z, DENOISE_SLAB):
        b = min(a + DENOISE_SLAB, z)
        lo, hi = max(0, a - ctx), min(z, b + ctx)
        parts = [s.slices(lo, hi) if isinstance(s, StoredArray) else s[lo:hi] for s in splits]
        tasks.append((ref, parts, (a - lo, b - lo), n_ops, mask, inference))
        starts.append(a)
    writer = volume_writer(out, shape)
    slabs = (mapper or map)(denoise_slab, tasks)
    try:
        for a, slab in zip(starts, tqdm(slabs, total=len(tasks), desc="denoise slices",
                                             disable=not progress, leave=False), strict=True):  # fmt: skip
            writer.write(a, slab)
    except BaseException:
        writer.discard()  # no half-written volume, no open handle
        raise
    return writer.close()


def denoise_slab(task: tuple[Any, ...]) -> np.ndarray:
    """Denoise one slab of slices (a task of :func:`denoise_splits`).

    Parameters
    ----------
    task : tuple
        ``(model reference, K subsets' slices with neighbours (arrays or lazy slices), (first,
        stop) of the slab within them, flips/rotations averaged (1 or 8), mask, inference)``.

    Returns
    -------
    numpy.ndarray
        The slab ``(stop - first, Y, X)`` float32.
    """
    from ..recon.core import zero_outside_circle

    ref, parts, (first, stop), n_ops, mask, inference = task
    denoiser = ref.load()
    arr = _check_splits([np.asarray(p, dtype=np.float32) for p in parts])
    k = arr.shape[0]
    acc = np.zeros((stop - first, *arr.shape[2:]), np.float64)
    if inference == "full":  # the whole scan's reconstruction
        inputs = [arr.mean(axis=0)]
    else:  # each subset's complement (K = 2: the other subset)
        inputs = [np.delete(arr, j, axis=0).mean(axis=0) for j in range(k)]
    for inp in inputs:
        for op in range(n_ops):
            acc += _predict_volume(denoiser, inp, op, rows=range(first, stop))
    slab = (acc / (len(inputs) * n_ops)).astype(np.float32)
    if mask:
        zero_outside_circle(slab)
    return slab


def _predict_volume(denoiser: Enhancer, volume: np.ndarray, op: int, rows: range | None = None) -> np.ndarray:
    """The network's prediction for slices ``rows`` of ``volume`` (default: all; each with its
    neighbours, clipped at the volume's ends), under one flip/rotation ``op`` of the slices
    (undone on the output)."""
    net, norm = denoiser.network, denoiser.normalization
    channels = denoiser.in_channels
    ctx = channels // 2
    z, h, w = volume.shape
    rows = range(z) if rows is None else rows
    rr_, cc_ = -(-h // DOWNSAMPLING) * DOWNSAMPLING, -(-w // DOWNSAMPLING) * DOWNSAMPLING
    near = np.clip(np.asarray(rows)[:, None] + np.arange(-ctx, ctx + 1)[None, :], 0, z - 1)
    per_call = max(1, _PIXELS_PER_CALL // (rr_ * cc_ * channels))
    out = np.empty((len(rows), h, w), np.float32)
    for s0 in range(0, len(rows), per_call):
        x = np.moveaxis(norm.forward(volume[near[s0 : s0 + per_call]]), 1, -1)  # (b, h, w, channels)
        codes = np.full(len(x), op)
        x = dihedral(x.astype(np.float32), codes)
        hh, ww = x.shape[1:3]
        rr, cc = (rr_, cc_) if (hh, ww) == (h, w) else (cc_, rr_)
        x = np.pad(
            x, ((0, 0), (0, rr - hh), (0, cc - ww), (0, 0)), mode="reflect" if min(hh, ww) > 1 else "edge"
        )
        with denoiser._lock:  # one model may serve several task threads of a worker
            pred = np.asarray(keras.ops.convert_to_numpy(net.predict_on_batch(x)))[:, :hh, :ww, 0]
        out[s0 : s0 + per_call] = norm.inverse(dihedral(pred, codes, inverse=True))
    return out
