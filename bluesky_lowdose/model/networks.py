"""The two encoder-decoder networks, the 1/PSNR loss and the metadata layer (Keras 3, any backend).

Loaded on first use: importing :mod:`bluesky_lowdose.model` does not import this module.
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras
from keras import layers, ops

__all__ = [
    "DOWNSAMPLING",
    "METADATA_LAYER",
    "EnhancerMetadata",
    "InversePSNRLoss",
    "build_network",
    "decoder_spec",
    "encoder_spec",
]

#: Total downsampling of the encoder (three stride-2 convolutions): frames are padded to a multiple.
DOWNSAMPLING = 8
#: Name of the metadata layer inside saved networks.
METADATA_LAYER = "lowdose_metadata"
_PACKAGE = "bluesky_lowdose"


def encoder_spec(base_filters: int) -> list[tuple[int, int]]:
    """``(filters, stride)`` of the 8 encoder convolutions (3x3, ReLU).

    Parameters
    ----------
    base_filters : int
        Filters of the first layer (the paper: 16); counts grow to ``4 * base_filters``.

    Returns
    -------
    list of tuple of int
        One ``(filters, stride)`` per layer, input to output.
    """
    f = base_filters
    return [(f, 1), (f, 2), (2 * f, 1), (2 * f, 2), (4 * f, 1), (4 * f, 2), (4 * f, 1), (4 * f, 1)]


def decoder_spec(base_filters: int) -> list[tuple[int, int]]:
    """``(filters, stride)`` of the 9 decoder transposed convolutions (3x3).

    Parameters
    ----------
    base_filters : int
        Filters of the first encoder layer; counts decrease from ``4 * base_filters`` to 1.

    Returns
    -------
    list of tuple of int
        One ``(filters, stride)`` per layer, input to output.
    """
    f = base_filters
    return [(4 * f, 1), (4 * f, 1), (4 * f, 2), (2 * f, 1), (2 * f, 2), (f, 1), (f, 2), (f, 1), (1, 1)]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EnhancerMetadata(layers.Layer):
    """Identity layer whose config carries the enhancer's metadata as a JSON string.

    It lets one ``.keras`` file hold the network, the normalisation statistics and the provenance
    without pickles or side files.

    Parameters
    ----------
    payload : str
        JSON text (an object).
    **kwargs
        Passed to :class:`keras.layers.Layer`.
    """

    def __init__(self, payload: str = "{}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        json.loads(payload)  # fail early on anything that is not JSON
        self.payload = payload

    def call(self, inputs: Any) -> Any:
        """Return the inputs unchanged.

        Parameters
        ----------
        inputs : tensor
            Any tensor.

        Returns
        -------
        tensor
            ``inputs``.
        """
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        """Same as the input shape.

        Parameters
        ----------
        input_shape : tuple
            Shape of the input.

        Returns
        -------
        tuple
            ``input_shape``.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Layer config including the payload.

        Returns
        -------
        dict
            Base layer config plus ``payload``.
        """
        config = super().get_config()
        config["payload"] = self.payload
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InversePSNRLoss(keras.losses.Loss):
    """The paper's objective, ``1 / PSNR``, per sample, for data scaled to ``[0, 1]``.

    ``PSNR = -10 log10(MSE + epsilon)`` (peak 1).  Below 1 dB (a badly diverged network, MSE
    near or above 1) ``1/PSNR`` would change sign and reward larger errors, so the loss continues
    there as ``2 - PSNR``, which matches ``1/PSNR`` in value and slope at 1 dB and keeps it
    decreasing in PSNR everywhere.

    Parameters
    ----------
    epsilon : float
        Added to the MSE: caps the PSNR at ``-10 log10(epsilon)`` dB (100 dB by default).
    name : str
        Name of the loss.
    **kwargs
        Passed to :class:`keras.losses.Loss`.
    """

    def __init__(self, epsilon: float = 1e-10, name: str = "inverse_psnr", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.epsilon = float(epsilon)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample loss.

        Parameters
        ----------
        y_true, y_pred : tensor
            ``(batch, ...)`` targets and predictions.

        Returns
        -------
        tensor
            ``(batch,)`` loss values.
        """
        y_true = ops.cast(y_true, y_pred.dtype)
        axes = list(range(1, len(y_pred.shape)))
        mse = ops.mean(ops.square(y_pred - y_true), axis=axes)
        psnr = (-10.0 / math.log(10.0)) * ops.log(mse + self.epsilon)
        return ops.where(psnr >= 1.0, 1.0 / ops.maximum(psnr, 1.0), 2.0 - psnr)

    def get_config(self) -> dict[str, Any]:
        """Loss config.

        Returns
        -------
        dict
            Base loss config plus ``epsilon``.
        """
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


def build_network(
    architecture: str, *, patch_size: int | None = None, base_filters: int = 16, in_channels: int = 1
) -> keras.Model:
    """Build the encoder-decoder network.

    Encoder: 8 convolutions 3x3 with ReLU, three of them stride 2.  Decoder: 9 transposed
    convolutions 3x3, three of them stride 2, each of the first eight followed by concatenation
    with the encoder map of the same scale; ReLU everywhere except the last layer, which is linear
    (see ``docs/model.md``).

    Parameters
    ----------
    architecture : {"unet", "paper"}
        ``"paper"`` adds the fully connected bottleneck of Yang et al. and so needs a fixed
        ``patch_size``; ``"unet"`` is fully convolutional (any size that is a multiple of 8).
    patch_size : int, optional
        Input edge for ``"paper"`` (a multiple of 8); ignored by ``"unet"``.
    base_filters : int
        Filters of the first layer.
    in_channels : int
        Input channels (1: a frame; 3: a slice with its two neighbours, for the slice denoiser).

    Returns
    -------
    keras.Model
        Input ``(batch, H, W, in_channels)``, output ``(batch, H, W, 1)``, float32.

    Raises
    ------
    ValueError
        Unknown architecture, or a bad patch size or filter count.
    """
    if architecture not in ("unet", "paper"):
        raise ValueError(f"unknown architecture {architecture!r}; choose 'unet' or 'paper'")
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if architecture == "paper":
        if patch_size is None or patch_size < DOWNSAMPLING or patch_size % DOWNSAMPLING:
            raise ValueError(f"the paper network needs a patch_size multiple of 8, got {patch_size}")
        shape: tuple[int | None, ...] = (patch_size, patch_size, in_channels)
    else:
        shape = (None, None, in_channels)
    inputs = keras.Input(shape=shape, name="frames")
    x = EnhancerMetadata(name=METADATA_LAYER)(inputs)
    skips = []
    for i, (filters, stride) in enumerate(encoder_spec(base_filters)):
        conv = layers.Conv2D(
            filters, 3, strides=stride, padding="same", activation="relu", name=f"enc{i + 1}"
        )
        x = conv(x)
        skips.append(x)
    if architecture == "paper":
        assert patch_size is not None
        side = patch_size // DOWNSAMPLING
        x = layers.Flatten(name="fc_flatten")(x)
        x = layers.Dense(side * side, activation="relu", name="fc")(x)
        x = layers.Reshape((side, side, 1), name="fc_reshape")(x)
    # Encoder maps to concatenate after each decoder layer, matched by scale (the last encoder map
    # feeds the decoder directly in the unet, so it is not concatenated again there).
    concat_with = [skips[6], skips[5], skips[4], skips[3], skips[2], skips[1], skips[0], inputs]
    if architecture == "paper":
        concat_with[0] = skips[7]
    spec = decoder_spec(base_filters)
    for i, (filters, stride) in enumerate(spec):
        last = i == len(spec) - 1
        x = layers.Conv2DTranspose(
            filters,
            3,
            strides=stride,
            padding="same",
            activation=None if last else "relu",
            name=f"dec{i + 1}",
        )(x)
        if not last:
            x = layers.Concatenate(name=f"skip{i + 1}")([x, concat_with[i]])
    return keras.Model(inputs, x, name=f"lowdose_{architecture}")
