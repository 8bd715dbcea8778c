"""A model registry in Tiled: the trained networks, keyed on the instrument that took their data.

Every model lives in the ``models`` container of the same Tiled server as the runs, as a uint8
array (its ``.keras`` archive) whose metadata say what it is (``kind``: ``"projection"`` for the
pair-trained projection CNN, ``"slices"`` for the Noise2Inverse denoiser; ``method``), where it
came from (``raw_uid``, ``processed_uid``, ``model_hash``, versions), how well it did (its run's
long-exposure score against the raw reconstruction) and on which instrument: the **instrument
key**, taken from the raw run's start document and frames, never guessed
(:func:`instrument_key`), hashed into ``instrument_id``. Lookups are Tiled searches on that
metadata, so any Tiled client can browse and fetch models; a model is only ever offered for the
``instrument_id`` it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import numpy as np

__all__ = ["DECLARED_FIELDS", "MODELS", "REGISTRY_MODES", "ModelRegistry", "instrument_id", "instrument_key"]

#: The container of the registry at the server's root.
MODELS = "models"
#: Instrument facts a beamline declares in the start document's ``instrument`` block (they are
#: part of the key as given, ``None`` where not declared).
DECLARED_FIELDS = (
    "beamline", "energy_kev", "scintillator", "objective", "pixel_size_um", "binning", "camera",
)  # fmt: skip
KINDS = ("projection", "slices")
#: How the enhancer uses the registry: ``auto`` fine-tunes the best registered model (first
#: result from it as it is), ``record`` trains from scratch, ``only`` applies it without
#: training (all three register what they trained), ``off`` does neither.
REGISTRY_MODES = ("auto", "record", "only", "off")


def instrument_key(start: dict[str, Any], frame_shape: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """The key of the instrument that took a raw run: what must match for a model to be reused.

    Parameters
    ----------
    start : dict
        The raw run's start document: its ``lowdose`` block (detector name, short exposure) and
        optional ``instrument`` block (:data:`DECLARED_FIELDS`).
    frame_shape : tuple of int
        ``(rows, columns)`` of a projection.

    Returns
    -------
    dict
        JSON-ready: ``detector``, ``frame_shape``, ``short_exposure_s`` and the declared fields.
    """
    ld = start.get("lowdose") or {}
    declared = start.get("instrument") or {}
    if not isinstance(declared, dict):
        declared = {}
    key: dict[str, Any] = {
        "detector": ld.get("detector"),
        "frame_shape": [int(v) for v in frame_shape],
        "short_exposure_s": None if ld.get("short_exposure") is None else float(ld["short_exposure"]),
    }
    for field in DECLARED_FIELDS:
        value = declared.get(field)
        key[field] = value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
    return key


def instrument_id(key: dict[str, Any]) -> str:
    """A short stable hash of an instrument key (what registry searches match on).

    Parameters
    ----------
    key : dict
        From :func:`instrument_key`.

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class ModelRegistry:
    """The ``models`` container of a Tiled server.

    Parameters
    ----------
    client : tiled.client.container.Container
        The server's root.

    Examples
    --------
    >>> registry = ModelRegistry(client)  # doctest: +SKIP
    >>> [m["uid"] for m in registry.search(kind="slices")]  # doctest: +SKIP
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def _node(self, *, create: bool) -> Any:
        if MODELS not in self.client:
            if not create:
                return None
            try:
                self.client.create_container(MODELS, metadata={"description": "bluesky-lowdose models"})
            except Exception:  # another process made it meanwhile
                if MODELS not in self.client:
                    raise
        return self.client[MODELS]

    def register(
        self,
        blob: bytes,
        *,
        kind: str,
        method: str,
        instrument: dict[str, Any],
        model_hash: str,
        raw_uid: str | None = None,
        processed_uid: str | None = None,
        score: dict[str, Any] | None = None,
        started_from: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Store one model; a model with the same hash on the same instrument is stored once.

        Parameters
        ----------
        blob : bytes
            The ``.keras`` archive (:meth:`bluesky_lowdose.model.Enhancer.to_bytes`).
        kind : {"projection", "slices"}
            Which step it does.
        method : str
            The pipeline method that trained it.
        instrument : dict
            Its instrument key (:func:`instrument_key`).
        model_hash : str
            The model's hash.
        raw_uid, processed_uid : str, optional
            Its training data and the processed run it made.
        score : dict, optional
            How its run scored (long-exposure PSNR/SSIM of the result and of the raw reconstruction).
        started_from : str, optional
            The registry uid of the model it was fine-tuned from.
        extra : dict, optional
            More metadata (training length, versions).

        Returns
        -------
        str
            The model's registry uid (the existing one for a duplicate).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not blob:
            raise ValueError("empty model archive")
        node = self._node(create=True)
        iid = instrument_id(instrument)
        from tiled.queries import Key

        same = node.search(Key("instrument_id") == iid).search(Key("model_hash") == model_hash)
        existing = next(iter(same), None)
        if existing is not None:
            return str(existing)
        uid = str(uuid.uuid4())
        metadata = {
            "uid": uid, "kind": kind, "method": method, "instrument": instrument, "instrument_id": iid,
            "model_hash": model_hash, "raw_uid": raw_uid, "processed_uid": processed_uid,
            "score": score or {}, "started_from": started_from, "created": time.time(), **(extra or {}),
        }  # fmt: skip
        node.write_array(np.frombuffer(blob, dtype=np.uint8), key=uid, metadata=metadata)
        return uid

    def search(
        self, *, instrument: dict[str, Any] | None = None, kind: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        """Models' metadata, newest first, optionally of one instrument, kind and method.

        Parameters
        ----------
        instrument : dict, optional
            An instrument key: only models trained on exactly that instrument.
        kind, method : str, optional
            Filters.

        Returns
        -------
        list of dict
            The metadata of each model (``uid``, ``kind``, ``method``, ``instrument``, ...).
        """
        from tiled.queries import Key

        node = self._node(create=False)
        if node is None:
            return []
        if instrument is not None:
            node = node.search(Key("instrument_id") == instrument_id(instrument))
        if kind is not None:
            node = node.search(Key("kind") == kind)
        if method is not None:
            node = node.search(Key("method") == method)
        found = [dict(item.metadata) for item in node.values()]
        return sorted(found, key=lambda m: m.get("created") or 0.0, reverse=True)

    def best(self, instrument: dict[str, Any], kind: str) -> dict[str, Any] | None:
        """The model of this instrument and kind whose run gained most over its raw reconstruction.

        Only models whose run scored above its raw reconstruction are offered.

        Parameters
        ----------
        instrument : dict
            The instrument key.
        kind : str
            ``"projection"`` or ``"slices"``.

        Returns
        -------
        dict or None
            Its metadata, or None when no model qualifies.
        """

        def gain(m: dict[str, Any]) -> float:
            s = m.get("score") or {}
            try:
                return float(s["psnr_db"]) - float(s["raw_psnr_db"])
            except (KeyError, TypeError, ValueError):
                return float("-inf")

        ranked = [m for m in self.search(instrument=instrument, kind=kind) if gain(m) > 0]
        return max(ranked, key=gain, default=None)

    def blob(self, uid: str) -> bytes:
        """The ``.keras`` archive of one model.

        Parameters
        ----------
        uid : str
            Registry uid.

        Returns
        -------
        bytes
            Load it with :func:`bluesky_lowdose.model.from_bytes` (Keras safe mode).

        Raises
        ------
        KeyError
            No such model.
        """
        return np.asarray(self._model(uid).read(), dtype=np.uint8).tobytes()

    def metadata(self, uid: str) -> dict[str, Any]:
        """The metadata of one model.

        Parameters
        ----------
        uid : str
            Registry uid.

        Returns
        -------
        dict
            As stored.

        Raises
        ------
        KeyError
            No such model.
        """
        return dict(self._model(uid).metadata)

    def _model(self, uid: str) -> Any:
        node = self._node(create=False)
        if node is None or uid not in node:
            raise KeyError(f"no model {uid!r} in the registry")
        return node[uid]
