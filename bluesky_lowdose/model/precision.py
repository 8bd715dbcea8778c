"""The arithmetic a network trains in: float32, or bfloat16 where the processor computes it natively.

Training is most of what the learned methods cost on a beamline's CPU. Processors with native
bfloat16 dot products (x86 ``avx512_bf16`` or ``amx_bf16``: AMD Zen 4, Intel Sapphire Rapids and
later) run Keras' ``mixed_bfloat16`` policy through oneDNN faster than float32: Noise2Inverse
trains 1.5-1.7x faster, the projection CNN 1.2-1.3x, with scores within the spread of training
seeds (``benchmarks/bench_precision.py``, ``docs/model.md``). Under that policy the weights stay float32;
only the layers' arithmetic is bfloat16. Training ends with a float32 copy of the network, so a
saved model, the registry and every enhancement are float32 whatever the training used.

Processors without it would emulate bfloat16 (slower than float32), so ``"auto"`` takes it only
where it is native, and only under the TensorFlow backend (the one measured).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import keras

__all__ = ["PRECISIONS", "cpu_flags", "native_bfloat16", "training_policy", "with_policy"]

#: Accepted ``precision`` arguments of the trainers.
PRECISIONS = ("auto", "float32", "bfloat16")

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 dot products.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The processor's feature flags (empty where ``cpuinfo`` cannot be read, e.g. not Linux).

    Parameters
    ----------
    cpuinfo : str or Path
        The file to read.

    Returns
    -------
    frozenset of str
        Flags of the first processor listed.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether ``"auto"`` trains in bfloat16 here: TensorFlow backend and a CPU with native bfloat16.

    Parameters
    ----------
    cpuinfo : str or Path
        Where the processor's flags are read (:func:`cpu_flags`).

    Returns
    -------
    bool
        True on such processors under ``KERAS_BACKEND=tensorflow``.
    """
    return keras.backend.backend() == "tensorflow" and bool(cpu_flags(cpuinfo) & BF16_FLAGS)


def training_policy(precision: str) -> str:
    """The Keras dtype policy a trainer uses for ``precision``.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16"}
        ``"auto"``: bfloat16 where :func:`native_bfloat16`, else float32.

    Returns
    -------
    str
        ``"float32"`` or ``"mixed_bfloat16"``.

    Raises
    ------
    ValueError
        Any other ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16()):
        return "mixed_bfloat16"
    return "float32"


def with_policy(network: keras.Model, policy: str) -> keras.Model:
    """A copy of ``network`` (same weights) whose layers compute under ``policy``.

    The output layer stays float32, so the loss sees float32 predictions. Variables are float32
    under either policy, so weights move between the copies unchanged.

    Parameters
    ----------
    network : keras.Model
        A functional network (not modified).
    policy : str
        A Keras dtype policy name, e.g. ``"mixed_bfloat16"`` or ``"float32"``.

    Returns
    -------
    keras.Model
        The copy, uncompiled.
    """
    output_layer = network.layers[-1].name

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name == output_layer else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=clone)
    copy.set_weights(network.get_weights())
    return copy
