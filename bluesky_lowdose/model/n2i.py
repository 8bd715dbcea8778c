"""Noise2Inverse: a slice denoiser learned from the scan itself (Hendriksen et al., IEEE TCI 6, 2020).

The rotation is split into ``K`` disjoint angle subsets and each is reconstructed on its own.
The noise of the subsets' reconstructions is independent (the projections are), their signal
is the same object; a network that maps the reconstruction of one subset onto that of another
therefore learns to predict the signal, i.e. to denoise (Noise2Noise in the reconstruction
domain).  Here ``K = 2`` by default (even and odd projections): the network is trained in both
directions on random crops of the reconstructed slices, with the mean squared error and Adam at
a cosine-decaying rate, and the denoised volume is the mean of its predictions for each subset.

The network is the package's fully convolutional U-Net; the result is an ordinary
:class:`~bluesky_lowdose.model.Enhancer` (saved, loaded and hashed like the projection enhancer),
applied to reconstructed slices instead of projections.  No long exposures are needed, and every
frame of the scan is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from ._checks import TrainingError, check_positive_int
from .enhancer import Enhancer
from .networks import DOWNSAMPLING, build_network
from .normalization import Normalization
from .patches import dihedral
from .training import _EpochHook, _Guard, finish_enhancer

__all__ = ["N2I_DEFAULTS", "denoise_splits", "train_noise2inverse"]

#: Pixels (times channels) per network call when denoising slices.
_PIXELS_PER_CALL = 1 << 22

#: Default hyper-parameters of :func:`train_noise2inverse` (measured on 128^3 and 256^3 scans).
N2I_DEFAULTS: dict[str, Any] = {
    "steps": 2400,
    "crop": 64,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "final_learning_rate_fraction": 0.05,
    "base_filters": 16,
    "context": 1,
}


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
        context: int,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.splits = splits
        self.norm = norm
        self.crop = crop
        self.batch_size = batch_size
        self.steps = steps
        self.rng = np.random.default_rng(seed)
        self.weights = weights
        self.context = context

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        k, z, h, w = self.splits.shape
        c, ctx = self.crop, self.context
        x = np.empty((self.batch_size, c, c, 2 * ctx + 1), np.float32)
        y = np.empty((self.batch_size, c, c, 1), np.float32)
        zs = self.rng.choice(z, self.batch_size, p=self.weights)
        for i, zi in enumerate(zs):
            dst = int(self.rng.integers(k))
            r0 = int(self.rng.integers(0, h - c + 1))
            c0 = int(self.rng.integers(0, w - c + 1))
            near = np.clip(np.arange(zi - ctx, zi + ctx + 1), 0, z - 1)
            # input: the mean of every subset but the target (the N2I "X:1" strategy; K = 2: the other)
            others = [j for j in range(k) if j != dst]
            block = self.splits[others][:, near, r0 : r0 + c, c0 : c0 + c].mean(axis=0)
            x[i] = np.moveaxis(block, 0, -1)
            y[i, :, :, 0] = self.splits[dst, zi, r0 : r0 + c, c0 : c0 + c]
        ops = self.rng.integers(0, 8, self.batch_size)
        return dihedral(self.norm.forward(x), ops), dihedral(self.norm.forward(y), ops)


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
    arr = _check_splits(splits)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    base_filters = check_positive_int(base_filters, "base_filters")
    seed = check_positive_int(seed, "seed", minimum=0)
    crop = check_positive_int(crop, "crop", minimum=DOWNSAMPLING)
    context = check_positive_int(context, "context", minimum=0)
    if not (isinstance(learning_rate, (int, float)) and np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if not 0 < final_learning_rate_fraction <= 1:
        raise ValueError(
            f"final_learning_rate_fraction must lie in (0, 1], got {final_learning_rate_fraction}"
        )
    k, z, h, w = arr.shape
    side = min(h, w) // DOWNSAMPLING * DOWNSAMPLING
    if side < DOWNSAMPLING:
        raise ValueError(f"slices of {h}x{w} are smaller than {DOWNSAMPLING} pixels")
    crop = min(crop // DOWNSAMPLING * DOWNSAMPLING, side)
    norm = Normalization.fit(arr)
    # slices with structure are drawn more often than empty ones (air above/below the object)
    spread = arr.mean(axis=0).reshape(z, -1).std(axis=1).astype(np.float64)
    weights = spread + 0.05 * (spread.max() if spread.max() > 0 else 1.0)
    weights /= weights.sum()

    keras.utils.set_random_seed(seed)
    network = build_network("unet", base_filters=base_filters, in_channels=2 * context + 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        float(learning_rate), decay_steps=steps, alpha=float(final_learning_rate_fraction)
    )
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    block = min(100, steps)
    epochs = math.ceil(steps / block)
    data = _SplitCrops(arr, norm, crop, batch_size, block, seed + 1, weights, context)
    guard = _Guard()
    callbacks: list[keras.callbacks.Callback] = [guard, _StepProgress(epochs * block, progress)]
    if on_epoch is not None:
        callbacks.append(_EpochHook(on_epoch))
    history = network.fit(data, epochs=epochs, callbacks=callbacks, verbose=0)
    if guard.failure is not None:
        raise TrainingError(f"Noise2Inverse training diverged: {guard.failure}; try a lower learning_rate")
    hist = {key: [float(v) for v in vals] for key, vals in history.history.items()}
    trained = keras.models.clone_model(network)
    trained.set_weights(network.get_weights())
    provenance: dict[str, Any] = {
        "architecture": "unet",
        "method": "noise2inverse",
        "paper": "Hendriksen, Pelt, Batenburg, IEEE Trans. Comput. Imaging 6:1320 (2020), "
        "doi:10.1109/TCI.2020.3019647",
        "domain": "reconstructed slices",
        "hyperparameters": {
            "patch_size": crop,
            "inference_stride": crop // 2,
            "steps": epochs * block,
            "batch_size": batch_size,
            "learning_rate": float(learning_rate),
            "schedule": f"cosine decay to {final_learning_rate_fraction:g} of the initial rate",
            "optimizer": "adam",
            "loss": "mean squared error against the other subset's reconstruction",
            "augment": True,
            "base_filters": base_filters,
            "context_slices": context,
            "output_activation": "linear",
        },
        "n_parameters": int(trained.count_params()),
        "training_data": {"n_subsets": int(k), "volume_shape": [int(z), int(h), int(w)]},
        "normalization": norm.to_dict(),
        "history": hist,
        "epochs_run": len(hist.get("loss", [])),
        "seed": seed,
    }
    return finish_enhancer(trained, norm, provenance, started)


def denoise_splits(
    denoiser: Enhancer, splits: Sequence[np.ndarray] | np.ndarray, *, tta: bool = True, progress: bool = False
) -> np.ndarray:
    """Apply a Noise2Inverse denoiser: the mean of its predictions from each subset's input.

    Parameters
    ----------
    denoiser : Enhancer
        From :func:`train_noise2inverse`.
    splits : sequence of numpy.ndarray
        The ``K`` subsets' reconstructions it was trained on (or of a new scan split the same way).
    tta : bool
        Also average the predictions for the 8 flips/rotations of each slice (the network was
        trained on all of them; the mean of their predictions is less noisy).
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        The denoised volume ``(Z, Y, X)`` float32.
    """
    arr = _check_splits(splits)
    k = arr.shape[0]
    ops = range(8) if tta and arr.shape[-1] == arr.shape[-2] else range(1)
    out = np.zeros(arr.shape[1:], np.float64)
    for j in tqdm(range(k), desc="denoise subsets", disable=not progress, leave=False):
        inp = np.delete(arr, j, axis=0).mean(axis=0)  # K = 2: the other subset
        for op in ops:
            out += _predict_volume(denoiser, inp, op)
    return (out / (k * len(ops))).astype(np.float32)


def _predict_volume(denoiser: Enhancer, volume: np.ndarray, op: int) -> np.ndarray:
    """The network's prediction for every slice of ``volume`` (with its neighbours), under one
    flip/rotation ``op`` of the slices (undone on the output)."""
    net, norm = denoiser.network, denoiser.normalization
    channels = denoiser.in_channels
    ctx = channels // 2
    z, h, w = volume.shape
    rows, cols = -(-h // DOWNSAMPLING) * DOWNSAMPLING, -(-w // DOWNSAMPLING) * DOWNSAMPLING
    near = np.clip(np.arange(z)[:, None] + np.arange(-ctx, ctx + 1)[None, :], 0, z - 1)
    per_call = max(1, _PIXELS_PER_CALL // (rows * cols * channels))
    out = np.empty(volume.shape, np.float32)
    for s0 in range(0, z, per_call):
        x = np.moveaxis(norm.forward(volume[near[s0 : s0 + per_call]]), 1, -1)  # (b, h, w, channels)
        codes = np.full(len(x), op)
        x = dihedral(x.astype(np.float32), codes)
        hh, ww = x.shape[1:3]
        rr, cc = (rows, cols) if (hh, ww) == (h, w) else (cols, rows)
        x = np.pad(
            x, ((0, 0), (0, rr - hh), (0, cc - ww), (0, 0)), mode="reflect" if min(hh, ww) > 1 else "edge"
        )
        pred = np.asarray(keras.ops.convert_to_numpy(net.predict_on_batch(x)))[:, :hh, :ww, 0]
        out[s0 : s0 + per_call] = norm.inverse(dihedral(pred, codes, inverse=True))
    return out
