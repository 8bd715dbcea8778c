"""Trained networks as task inputs: the learned steps on Dask workers (or any ``mapper``).

A :class:`ModelRef` is an :class:`~bluesky_lowdose.model.Enhancer`'s bytes (``to_bytes``: the
network, its normalisation and provenance) and its hash. It travels inside each task, so a task
whose worker died can be rerun anywhere; each process deserialises a model once and keeps it
(:data:`CACHE_SIZE` models, least recently used dropped), so a scan's thousands of frames or
slabs cost one load per worker.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["CACHE_SIZE", "LocalRef", "ModelRef", "enhance_frames", "model_ref"]

#: Models kept per process.
CACHE_SIZE = 4

_cache: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


class ModelRef:
    """A trained :class:`~bluesky_lowdose.model.Enhancer` as picklable bytes, loaded once per process.

    Parameters
    ----------
    enhancer : Enhancer
        The model (its ``to_bytes`` and ``model_hash`` are used).
    """

    def __init__(self, enhancer: Any) -> None:
        self.model_hash: str = enhancer.model_hash
        self.blob: bytes = enhancer.to_bytes()
        with _lock:  # the sender has it already: no reload in this process
            _remember(self.model_hash, enhancer)

    def load(self) -> Any:
        """The enhancer (deserialised at the first call in this process).

        Returns
        -------
        Enhancer
            The model.
        """
        with _lock:
            model = _cache.get(self.model_hash)
            if model is not None:
                _cache.move_to_end(self.model_hash)
                return model
        from .enhancer import from_bytes

        model = from_bytes(self.blob)
        if model.model_hash != self.model_hash:
            raise ValueError(f"model bytes hash to {model.model_hash}, not {self.model_hash}")
        with _lock:
            _remember(self.model_hash, model)
        return model


class LocalRef:
    """A model passed as itself (any object with ``enhance``, e.g. a tuned baseline): used in
    this process, or pickled whole to a worker when it has no ``to_bytes``.

    Parameters
    ----------
    model : object
        The model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def load(self) -> Any:
        """The model itself.

        Returns
        -------
        object
            The model.
        """
        return self.model


def model_ref(model: Any, remote: bool) -> ModelRef | LocalRef:
    """How tasks get ``model``: as bytes (``remote``, for Keras enhancers) or as the object.

    Parameters
    ----------
    model : object
        An :class:`~bluesky_lowdose.model.Enhancer` or a baseline.
    remote : bool
        The tasks may run in other processes.

    Returns
    -------
    ModelRef or LocalRef
        A reference with ``load()``.
    """
    return ModelRef(model) if remote and hasattr(model, "to_bytes") else LocalRef(model)


def _remember(key: str, model: Any) -> None:
    _cache[key] = model
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)


def enhance_frames(task: tuple[ModelRef | LocalRef, np.ndarray]) -> np.ndarray:
    """The projection step of one block of frames, frame by frame (a task).

    Parameters
    ----------
    task : tuple
        ``(model reference, frames (n, rows, width))``.

    Returns
    -------
    numpy.ndarray
        ``(n, rows, width)`` float32.
    """
    ref, block = task
    model = ref.load()
    if getattr(model, "batch_invariant", False):  # a filter: every frame on its own in any batch
        return np.asarray(model.enhance(block), np.float32)
    # frame by frame: a network's output must not depend on how frames were batched
    return np.stack([np.asarray(model.enhance(f), np.float32) for f in block])
