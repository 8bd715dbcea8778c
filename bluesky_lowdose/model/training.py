"""Training of the enhancer on pairs of short/long exposure reference frames."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from ._checks import TrainingError, as_frames, check_positive_int
from .enhancer import Enhancer, weights_sha256
from .networks import DOWNSAMPLING, InversePSNRLoss, build_network
from .normalization import Normalization
from .patches import dihedral, patch_grid
from .precision import training_policy, with_policy

__all__ = ["DEFAULTS", "train"]

#: Default hyper-parameters per architecture (patch_size, stride).
DEFAULTS: dict[str, dict[str, int]] = {
    "unet": {"patch_size": 32, "stride": 8},
    "paper": {"patch_size": 32, "stride": 8},
}


#: Patch positions per frame (at stride 1) below which the default patch is made smaller (a
#: 32-row slab of a 64-wide detector has 33 positions of the 32² patch and keeps it, as measured).
MIN_PATCH_POSITIONS = 16


def default_patch_size(patch_size: int, frame_shape: tuple[int, ...]) -> int:
    """The default patch edge for frames of ``frame_shape``: ``patch_size``, or on small frames the
    largest multiple of 8 below it with at least :data:`MIN_PATCH_POSITIONS` positions per frame.

    A 32² patch on 32² frames has one position per frame: four pairs gave two training patches and
    a volume 26 dB below the raw reconstruction (``lowdose-tomo demo --size 32 --angles 31``: 8.97 dB
    / SSIM -0.20 against the truth, raw 35.35 / 0.981); 24² patches there have 81 positions per
    frame: 32.98 / 0.976 (still below raw, as every method but BM3D on slices is at that size).

    Parameters
    ----------
    patch_size : int
        The architecture's default edge (a multiple of 8).
    frame_shape : tuple of int
        ``(H, W)`` of the training frames.

    Returns
    -------
    int
        The edge, a multiple of 8 and at least 8.
    """
    h, w = frame_shape
    size = patch_size
    while size > DOWNSAMPLING and max(h - size + 1, 0) * max(w - size + 1, 0) < MIN_PATCH_POSITIONS:
        size -= DOWNSAMPLING
    return size


class _PatchPairs(keras.utils.PyDataset):
    """Shuffled batches of (short, long) patches with optional random flips/rotations per epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, augment: bool, seed: int) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        self.order = self.rng.permutation(len(self.x))
        self.ops = self.rng.integers(0, 8, len(self.x)) if self.augment else None

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sel = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        xb, yb = self.x[sel], self.y[sel]
        if self.ops is not None:
            xb, yb = dihedral(xb, self.ops[sel]), dihedral(yb, self.ops[sel])
        return xb, yb

    def on_epoch_end(self) -> None:
        self._draw()


def fit_and_release(network: keras.Model, data: keras.utils.PyDataset, **kwargs: Any) -> Any:
    """``network.fit(data, **kwargs)``, then drop ``data``'s arrays.

    Keras feeds a ``PyDataset`` through ``tf.data.Dataset.from_generator``, whose generator stays in
    TensorFlow's process-wide ``py_func`` registry after training: every training left its dataset,
    and the scan's slices or patches in it, in memory (one process training Noise2Inverse at 160^3:
    +61 MiB per training, +30 MiB with this; the rest is TensorFlow's own). The dataset object
    itself stays there, empty.
    """
    try:
        return network.fit(data, **kwargs)
    finally:
        for name, value in list(vars(data).items()):
            if isinstance(value, np.ndarray):
                setattr(data, name, None)


class _TqdmProgress(keras.callbacks.Callback):
    """A tqdm bar over epochs showing the loss and validation loss."""

    def __init__(self, epochs: int, enabled: bool) -> None:
        super().__init__()
        self.bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not enabled)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in logs.items() if k in ("loss", "val_loss")})
        self.bar.update(1)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()


class _Guard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers why."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None
        self.epoch = 0

    def _check(self, logs: dict[str, Any] | None, where: str) -> None:
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not np.isfinite(float(value)) and self.failure is None:
                self.failure = f"{key} became {float(value)} in epoch {self.epoch + 1} ({where})"
                self.model.stop_training = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check(logs, f"batch {batch}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check(logs, "end of epoch")


class _BestWeights(keras.callbacks.Callback):
    """Early stopping on a monitored loss; always restores the best weights at the end."""

    def __init__(self, monitor: str, patience: int | None) -> None:
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get(self.monitor, math.nan))
        if np.isfinite(value) and value < self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class _EpochHook(keras.callbacks.Callback):
    """Calls the user's ``on_epoch(epoch, logs)`` with plain floats."""

    def __init__(self, hook: Callable[[int, dict[str, float]], Any]) -> None:
        super().__init__()
        self.hook = hook

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.hook(epoch, {k: float(v) for k, v in (logs or {}).items()})


def _describe(arr: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(arr)
    return {
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "shape": list(data.shape),
        "dtype": data.dtype.str,
    }


def _versions() -> dict[str, str]:
    from ..versions import software_versions

    out = software_versions()
    out["keras_backend"] = keras.backend.backend()
    return out


def _check_refs(short_refs: Any, long_refs: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        short, _ = as_frames(short_refs, "short_refs", allow_single=False)
        long, _ = as_frames(long_refs, "long_refs", allow_single=False)
    except ValueError as err:
        if "empty" in str(err):
            raise ValueError(f"training needs at least one short/long pair: {err}") from err
        raise
    if short.shape != long.shape:
        raise ValueError(f"short_refs {short.shape} and long_refs {long.shape} must have the same shape")
    for name, stack in (("short_refs", short), ("long_refs", long)):
        for i, frame in enumerate(stack):
            if frame.max() == frame.min():
                raise ValueError(f"{name}[{i}] is constant: nothing to learn from it")
    return short, long


def train(
    short_refs: Any,
    long_refs: Any,
    *,
    model: str = "unet",
    patch_size: int | None = None,
    stride: int | None = None,
    epochs: int = 40,
    batch_size: int = 32,
    seed: int = 0,
    validation_fraction: float = 0.15,
    patience: int | None = 8,
    augment: bool = True,
    learning_rate: float = 1e-3,
    base_filters: int = 16,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
    max_patches: int | None = 2048,
    initial: Enhancer | None = None,
    precision: str = "auto",
) -> Enhancer:
    """Train an enhancer that maps short-exposure frames to long-exposure ones.

    Both stacks are normalised with one set of statistics taken from all of them, cut into
    overlapping patches (the last patch of each axis flush with the edge), optionally augmented
    with random flips/rotations, and a random ``validation_fraction`` of the patches is held out
    for early stopping (the best weights are restored).  Minimises ``1/PSNR`` with Adam.

    Parameters
    ----------
    short_refs, long_refs : array_like
        ``(n_pairs, H, W)`` frames of the same scene, any real dtype; flat/dark-corrected
        transmission is recommended.  One pair suffices when its patches allow a validation split.
    model : {"unet", "paper"}
        ``"unet"`` (fully convolutional, enhances whole frames) or ``"paper"`` (with the fully
        connected bottleneck of Yang et al.; enhances overlapping patches).
    patch_size : int, optional
        Training patch edge, a multiple of 8 (default 32, smaller on frames too small for 16
        positions of it: :func:`default_patch_size`; the unet then runs on whole frames).
    stride : int, optional
        Step between training patches (default 8, made finer for small frames until
        ``max_patches`` patches are available).
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Patches per optimisation step.
    seed : int
        Seeds Keras, the backend, numpy and Python (``keras.utils.set_random_seed``), the split,
        the shuffling and the augmentation.
    validation_fraction : float
        Fraction of patches held out, in ``[0, 0.5]``; 0 monitors the training loss instead.
    patience : int or None
        Epochs without improvement before stopping; None trains all ``epochs``.
    augment : bool
        Random flips/rotations by 90 degrees of each training patch pair, drawn anew each epoch.
    learning_rate : float
        Adam learning rate.
    base_filters : int
        Filters of the first layer (16 in the paper); the widest layers have 4 times as many.
    progress : bool
        Show a tqdm bar over epochs with the loss.
    on_epoch : callable, optional
        ``on_epoch(epoch, logs)`` after each epoch (``epoch`` from 0, ``logs`` a dict of floats with
        ``loss`` and ``val_loss``).  Exceptions it raises stop training and propagate.
    max_patches : int or None
        Upper bound of the number of patches (training + validation); when the frames give more, a
        seeded random subset is used, so memory and time per epoch stay bounded for large frames.
        None uses every patch.
    initial : Enhancer, optional
        Fine-tune this projection enhancer (e.g. one from the model registry) instead of starting
        from random weights: its architecture, patch size, filters and normalisation are kept
        (training starts from exactly that model), and ``"fine_tuned_from"`` (its weights' hash)
        goes into the provenance.
    precision : {"auto", "float32", "bfloat16"}
        The arithmetic of training (:mod:`~bluesky_lowdose.model.precision`): ``"auto"`` trains in
        bfloat16 where the processor computes it natively, else in float32. The returned network
        is float32 either way.

    Returns
    -------
    Enhancer
        The trained enhancer with its provenance.

    Raises
    ------
    TypeError
        Non-numeric data or hyper-parameters of the wrong type.
    ValueError
        Bad data (wrong ndim, mismatched shapes, NaN/inf, constant frames, frames smaller than a
        patch, too few patches for the validation split) or bad hyper-parameters.
    TrainingError
        The loss became NaN or infinite (training diverged).
    """
    started = time.perf_counter()
    policy = training_policy(precision)
    if initial is not None:  # fine-tuning: the starting network decides the shape of the problem
        hp = initial_hyperparameters(initial, ("unet", "paper"))
        model, patch_size, base_filters = initial.architecture, hp["patch_size"], hp["base_filters"]
    if model not in DEFAULTS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(DEFAULTS)}")
    short, long = _check_refs(short_refs, long_refs)
    if patch_size is None:
        patch_size = default_patch_size(DEFAULTS[model]["patch_size"], short.shape[1:])
    patch_size = check_positive_int(patch_size, "patch_size", minimum=DOWNSAMPLING)
    if patch_size % DOWNSAMPLING:
        raise ValueError(f"patch_size must be a multiple of {DOWNSAMPLING}, got {patch_size}")
    auto_stride = stride is None
    stride = check_positive_int(DEFAULTS[model]["stride"] if stride is None else stride, "stride")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_positive_int(seed, "seed", minimum=0)
    base_filters = check_positive_int(base_filters, "base_filters")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
    if not isinstance(validation_fraction, (int, float)) or not 0 <= validation_fraction <= 0.5:
        raise ValueError(f"validation_fraction must lie in [0, 0.5], got {validation_fraction!r}")
    if not isinstance(learning_rate, (int, float)) or not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be callable, got {type(on_epoch).__name__}")
    if max_patches is not None:
        max_patches = check_positive_int(max_patches, "max_patches", minimum=2)
    h, w = short.shape[1:]
    if patch_size > min(h, w):
        raise ValueError(f"frames of {h}x{w} are smaller than a patch ({patch_size}x{patch_size})")

    if auto_stride:
        # small frames: step more finely until there are max_patches patches to draw from
        target = max_patches or 2048
        while stride > 1 and len(short) * len(patch_grid((h, w), patch_size, stride)) < target:
            stride -= 1
    norm = Normalization.fit(short, long) if initial is None else initial.normalization  # (fine-tuning: kept)
    rng = np.random.default_rng(seed)
    corners = patch_grid((h, w), patch_size, stride)
    # (pair, row, column) of every patch, then a seeded subset when there are too many.
    where = np.concatenate([np.column_stack([np.full(len(corners), i), corners]) for i in range(len(short))])
    n_available = len(where)
    if max_patches is not None and n_available > max_patches:
        where = where[np.sort(rng.choice(n_available, max_patches, replace=False))]
    n = len(where)
    x = np.empty((n, patch_size, patch_size, 1), np.float32)
    y = np.empty_like(x)
    for i in range(len(short)):
        sel = np.flatnonzero(where[:, 0] == i)
        if sel.size == 0:
            continue
        s_norm, l_norm = norm.forward(short[i]), norm.forward(long[i])
        for j in sel:
            r, c = where[j, 1], where[j, 2]
            x[j, :, :, 0] = s_norm[r : r + patch_size, c : c + patch_size]
            y[j, :, :, 0] = l_norm[r : r + patch_size, c : c + patch_size]
    n_val = math.ceil(validation_fraction * n) if validation_fraction > 0 else 0
    if n - n_val < 1 or (validation_fraction > 0 and n_val < 1):
        raise ValueError(
            f"{n} patches of {patch_size}x{patch_size} (stride {stride}) are too few for a validation "
            f"split of {validation_fraction}: add pairs, lower the stride or the patch size"
        )
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    keras.utils.set_random_seed(seed)
    network = start_network(
        initial, lambda: build_network(model, patch_size=patch_size, base_filters=base_filters), policy
    )
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=InversePSNRLoss())
    data = _PatchPairs(x[train_idx], y[train_idx], batch_size, augment, seed + 1)
    guard = _Guard()
    best = _BestWeights("val_loss" if n_val else "loss", patience)
    callbacks: list[keras.callbacks.Callback] = [guard, best, _TqdmProgress(epochs, progress)]
    if on_epoch is not None:
        callbacks.append(_EpochHook(on_epoch))
    history = fit_and_release(
        network,
        data,
        epochs=epochs,
        validation_data=(x[val_idx], y[val_idx]) if n_val else None,
        validation_batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    if guard.failure is not None:
        raise TrainingError(
            f"training diverged: {guard.failure}; try a lower learning_rate (now {learning_rate}) "
            "or check the reference frames"
        )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    trained = trained_copy(network)
    provenance: dict[str, Any] = {
        "architecture": model,
        "paper": "Yang et al., Sci. Rep. 8:2575 (2018), doi:10.1038/s41598-018-19426-7",
        "hyperparameters": {
            "patch_size": patch_size,
            "stride": stride,
            "inference_stride": max(patch_size // 2, 1),
            # trained on every flip/rotation: the mean of the 8 outputs is less noisy
            # (benchmarks/bench_tta.py, under-blur at 1/10 dose: +0.17-0.28 dB at 128³, +0.55 dB at 64³)
            "inference_tta": bool(augment),
            "epochs": epochs,
            "batch_size": batch_size,
            "validation_fraction": float(validation_fraction),
            "patience": patience,
            "augment": bool(augment),
            "learning_rate": float(learning_rate),
            "base_filters": base_filters,
            "max_patches": max_patches,
            "optimizer": "adam",
            "loss": "1/PSNR (InversePSNRLoss, epsilon 1e-10, peak 1)",
            "output_activation": "linear",
            "precision": policy,
        },
        "n_parameters": int(trained.count_params()),
        "training_data": {
            "n_pairs": len(short),
            "frame_shape": [int(h), int(w)],
            "short_refs": _describe(short),
            "long_refs": _describe(long),
            "n_available_patches": int(n_available),
            "n_train_patches": int(n - n_val),
            "n_validation_patches": int(n_val),
        },
        "normalization": norm.to_dict(),
        "history": hist,
        "epochs_run": len(hist.get("loss", [])),
        "best_epoch": best.best_epoch + 1,
        "monitor": best.monitor,
        "best_loss": float(best.best),
        "best_val_loss": float(best.best) if n_val else None,
        "final_val_loss": hist["val_loss"][-1] if "val_loss" in hist else None,
        "stopped_early": best.stopped_early,
        "seed": seed,
        "fine_tuned_from": None if initial is None else initial.model_hash,
    }
    return finish_enhancer(trained, norm, provenance, started)


def initial_hyperparameters(initial: Any, architectures: tuple[str, ...]) -> dict[str, Any]:
    """The hyper-parameters of a model to fine-tune, checked to be one of ``architectures``.

    Parameters
    ----------
    initial : Enhancer
        The model to start from.
    architectures : tuple of str
        Architectures (for slice models: ``provenance["method"]``) the trainer can continue.

    Returns
    -------
    dict
        ``provenance["hyperparameters"]`` of ``initial``.

    Raises
    ------
    TypeError
        ``initial`` is not an :class:`Enhancer`.
    ValueError
        A model of another kind (e.g. a slice denoiser given to the projection trainer).
    """
    if not isinstance(initial, Enhancer):
        raise TypeError(f"initial must be an Enhancer, got {type(initial).__name__}")
    prov = initial.provenance
    kind = prov.get("method", prov.get("architecture"))
    if kind not in architectures:
        raise ValueError(f"cannot fine-tune a {kind!r} model here (expected one of {architectures})")
    return dict(prov.get("hyperparameters") or {})


def start_network(
    initial: Enhancer | None, build: Callable[[], keras.Model], policy: str = "float32"
) -> keras.Model:
    """The network training starts from: ``build()``, or a trainable copy of ``initial``'s.

    Parameters
    ----------
    initial : Enhancer or None
        A trained enhancer to fine-tune (its network is not modified).
    build : callable
        Builds a freshly initialised (float32) network.
    policy : str
        The Keras dtype policy to train under (:func:`~bluesky_lowdose.model.precision.training_policy`).

    Returns
    -------
    keras.Model
        An uncompiled network.
    """
    if initial is None:
        network = build()
        return network if policy == "float32" else with_policy(network, policy)
    return with_policy(initial.network, policy)


def trained_copy(network: keras.Model) -> keras.Model:
    """An uncompiled float32 copy of a trained network.

    The saved file then holds no optimizer state (half the size, and it loads under any backend
    with ``compile=False``), and enhancement computes in float32 whatever the training used.

    Parameters
    ----------
    network : keras.Model
        The network after training.

    Returns
    -------
    keras.Model
        The copy, same weights.
    """
    return with_policy(network, "float32")


def finish_enhancer(
    network: keras.Model, norm: Normalization, provenance: dict[str, Any], started: float
) -> Enhancer:
    """Stamp versions, creation time, weights hash and wall time into ``provenance``; wrap the network.

    Parameters
    ----------
    network : keras.Model
        The trained (uncompiled) network.
    norm : Normalization
        Its input normalisation.
    provenance : dict
        The training record so far.
    started : float
        ``time.perf_counter()`` when training started.

    Returns
    -------
    Enhancer
        The enhancer.
    """
    provenance["versions"] = _versions()
    provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    provenance["model_hash"] = weights_sha256(network)
    provenance["wall_time_s"] = round(time.perf_counter() - started, 3)
    return Enhancer(network, norm, provenance)
