"""The trained enhancer: network + normalisation + provenance, saved as one ``.keras`` file."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from ._checks import as_frames, check_positive_int
from .networks import DOWNSAMPLING, METADATA_LAYER, EnhancerMetadata
from .normalization import Normalization
from .patches import extract_patches, reassemble_patches

__all__ = ["FORMAT_VERSION", "Enhancer", "from_bytes", "load", "weights_sha256"]

#: Version of the metadata stored in saved enhancers.
FORMAT_VERSION = 1
#: Pixels per network call when enhancing whole frames with the unet (bounds memory).
_PIXELS_PER_CALL = 1 << 22
#: Frames larger than this (either axis) are enhanced by the unet in overlapping tiles.
_TILE = 1024
_TILE_OVERLAP = 64
#: Patches per network call for the paper network.
_PATCHES_PER_CALL = 1024


def weights_sha256(network: keras.Model) -> str:
    """SHA-256 of a network's weights (shapes, dtypes and values, in layer order).

    Parameters
    ----------
    network : keras.Model
        The network.

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for weight in network.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value))
        digest.update(f"{weight.path}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _pad_to(frames: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Reflect-pad ``(N, H, W)`` frames at the bottom/right to ``(N, rows, cols)``."""
    pad_r, pad_c = rows - frames.shape[1], cols - frames.shape[2]
    if pad_r == 0 and pad_c == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_r), (0, pad_c)), mode="reflect")


def _view(frames: np.ndarray, op: int, undo: bool = False) -> np.ndarray:
    """Flip/rotation ``op`` (0-7: ``op % 4`` quarter turns after a left-right flip when ``op >= 4``)
    of a frame or a stack of frames (the last two axes), or its inverse with ``undo``."""
    if undo:
        frames = np.rot90(frames, -(op % 4), axes=(-2, -1))
        return frames[..., ::-1] if op >= 4 else frames
    return np.rot90(frames[..., ::-1] if op >= 4 else frames, op % 4, axes=(-2, -1))


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class Enhancer:
    """A trained CNN enhancer: call :meth:`enhance` on low-dose frames.

    Made by :func:`bluesky_lowdose.model.train` or restored by :func:`load` / :func:`from_bytes`;
    not meant to be constructed directly.

    Parameters
    ----------
    network : keras.Model
        The network built by :func:`bluesky_lowdose.model.networks.build_network`.
    normalization : Normalization
        Statistics of the training pairs.
    provenance : dict
        JSON-serialisable record of how the network was made.

    Raises
    ------
    ValueError
        The network lacks the metadata layer or the provenance lacks the architecture.
    """

    def __init__(
        self, network: keras.Model, normalization: Normalization, provenance: dict[str, Any]
    ) -> None:
        try:
            self._meta_layer = network.get_layer(METADATA_LAYER)
        except ValueError as err:
            raise ValueError("the network was not built by bluesky_lowdose (no metadata layer)") from err
        if provenance.get("architecture") not in ("unet", "paper"):
            raise ValueError(f"unknown architecture in provenance: {provenance.get('architecture')!r}")
        json.dumps(provenance)  # must be JSON-serialisable
        self.network = network
        self.normalization = normalization
        self._provenance = copy.deepcopy(provenance)
        self._lock = threading.Lock()

    # -- description -------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        """``"unet"`` or ``"paper"``.

        Returns
        -------
        str
            The architecture name.
        """
        return str(self._provenance["architecture"])

    @property
    def in_channels(self) -> int:
        """Input channels of the network (1 for frames; more for slice models with neighbours).

        Returns
        -------
        int
            The channel count.
        """
        return int(self.network.input_shape[-1])

    @property
    def patch_size(self) -> int:
        """Training patch edge (the fixed input size of the paper network).

        Returns
        -------
        int
            Patch edge in pixels.
        """
        return int(self._provenance["hyperparameters"]["patch_size"])

    @property
    def provenance(self) -> dict[str, Any]:
        """A copy of the JSON-serialisable provenance record.

        Returns
        -------
        dict
            See ``docs/model.md`` for the keys.
        """
        return copy.deepcopy(self._provenance)

    @property
    def model_hash(self) -> str:
        """SHA-256 of the network weights.

        Returns
        -------
        str
            Hex digest.
        """
        return str(self._provenance["model_hash"])

    def __repr__(self) -> str:
        return (
            f"<Enhancer {self.architecture} patch={self.patch_size} "
            f"params={self.network.count_params()} hash={self.model_hash[:12]}>"
        )

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # pickled as its .keras bytes (the network and a lock do not pickle): e.g. the model a
        # training in a child process fine-tunes; from_bytes checks the hash on the way back
        return from_bytes, (self.to_bytes(),)

    # -- inference ---------------------------------------------------------------------------
    def enhance(
        self,
        frames: Any,
        *,
        batch_size: int | None = None,
        stride: int | None = None,
        progress: bool = False,
        tta: bool | None = None,
    ) -> np.ndarray:
        """Enhance one frame or a stack of frames.

        Frames are normalised with the training statistics, passed through the network a few at a
        time (into a preallocated float32 output, so memory stays bounded for long stacks) and
        mapped back to the input's units.  Safe to call from any thread.

        Parameters
        ----------
        frames : array_like
            ``(H, W)`` or ``(N, H, W)``, any real dtype, in the units used for training (the
            recommended input is flat/dark-corrected transmission).
        batch_size : int, optional
            For the unet, frames (or 1024-pixel tiles) per network call, by default so that a call
            sees about 4 MPix; for the paper network, patches per call, by default 1024.
        stride : int, optional
            Patch step of the paper network (default: its ``inference_stride``, half a patch);
            ignored by the unet.
        progress : bool
            Show a tqdm progress bar over the frames.
        tta : bool, optional
            Average the network's outputs for the 8 flips/rotations by 90° of each frame (each
            undone on its output; the network was trained on all of them), at 8× the cost.
            Default: the model's ``inference_tta`` hyper-parameter (True for the projection
            models trained with augmentation since 2026-12-05, False for older ones).

        Returns
        -------
        numpy.ndarray
            A float32 array of the input's shape.

        Raises
        ------
        TypeError
            Non-numeric data.
        ValueError
            Wrong ndim, empty, NaN or infinite values, or a bad batch size/stride.
        """
        if self.in_channels != 1:
            raise ValueError(
                f"this network takes {self.in_channels} input channels (a Noise2Inverse slice model with "
                "neighbouring slices): apply it with bluesky_lowdose.model.n2i.denoise_splits"
            )
        stack, single = as_frames(frames, "frames")
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        if self.architecture != "unet":
            if stride is None:
                stride = int(self._provenance["hyperparameters"]["inference_stride"])
            stride = check_positive_int(stride, "stride")
            if stride > self.patch_size:
                raise ValueError(f"stride {stride} leaves gaps between patches of {self.patch_size}")
        if tta is None:
            tta = self.tta
        ops = range(8) if tta else range(1)
        bar = tqdm(total=len(stack) * len(ops), desc="enhance", unit="frame", disable=not progress,
                   leave=False)  # fmt: skip
        try:
            if not tta:
                out = self._enhance_view(stack, batch_size, stride, bar)
            elif self.architecture != "unet":  # patches: a frame's views share the network's calls
                assert stride is not None
                out = np.empty(stack.shape, dtype=np.float32)
                for i, frame in enumerate(stack):
                    views = self._enhance_patches([_view(frame, op) for op in ops], stride,
                                                  batch_size or _PATCHES_PER_CALL)  # fmt: skip
                    acc = np.zeros(frame.shape, np.float64)
                    for op, pred in zip(ops, views, strict=True):
                        acc += _view(pred, op, undo=True)
                    out[i] = acc / len(ops)
                    bar.update(len(ops))
            else:  # a few frames at a time (bounded memory), each flip/rotation undone on its output
                out = np.empty(stack.shape, dtype=np.float32)
                step = max(1, _PIXELS_PER_CALL // (stack.shape[1] * stack.shape[2]))
                for start in range(0, len(stack), step):
                    part = stack[start : start + step]
                    acc = np.zeros(part.shape, np.float64)
                    for op in ops:  # rows and columns swap in between for odd quarter turns
                        pred = self._enhance_view(_view(part, op), batch_size, stride, bar)
                        acc += _view(pred, op, undo=True)
                    out[start : start + step] = acc / len(ops)
        finally:
            bar.close()
        return out[0] if single else out

    @property
    def tta(self) -> bool:
        """Whether :meth:`enhance` averages the 8 flips/rotations unless told otherwise.

        Returns
        -------
        bool
            The model's ``inference_tta`` hyper-parameter (False when it has none).
        """
        return bool(self._provenance["hyperparameters"].get("inference_tta", False))

    def _enhance_view(
        self, stack: np.ndarray, batch_size: int | None, stride: int | None, bar: Any
    ) -> np.ndarray:
        """The network's output for every frame of ``stack`` as it is (float32)."""
        stack = np.ascontiguousarray(stack)
        out = np.empty(stack.shape, dtype=np.float32)
        if self.architecture == "unet":
            self._enhance_unet(stack, out, batch_size, bar)
        else:
            assert stride is not None
            for i, frame in enumerate(stack):
                out[i] = self._enhance_patches([frame], stride, batch_size or _PATCHES_PER_CALL)[0]
                bar.update(1)
        return out

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            result = self.network.predict_on_batch(batch[..., None])
        return np.asarray(keras.ops.convert_to_numpy(result))[..., 0]

    def _enhance_unet(self, stack: np.ndarray, out: np.ndarray, batch_size: int | None, bar: Any) -> None:
        n, h, w = stack.shape
        rows, cols = _ceil_to(h, DOWNSAMPLING), _ceil_to(w, DOWNSAMPLING)
        if rows <= _TILE and cols <= _TILE:
            per_call = batch_size or max(1, _PIXELS_PER_CALL // (rows * cols))
            for start in range(0, n, per_call):
                chunk = self.normalization.forward(stack[start : start + per_call])
                pred = self._predict(_pad_to(chunk, rows, cols))[:, :h, :w]
                out[start : start + per_call] = self.normalization.inverse(pred)
                bar.update(len(chunk))
            return
        # Large frames: overlapping square tiles (multiples of 8), averaged where they overlap.
        tile = min(_TILE, rows, cols)
        step = max(tile - _TILE_OVERLAP, DOWNSAMPLING)
        per_call = batch_size or max(1, _PIXELS_PER_CALL // (tile * tile))
        for i in range(n):
            frame = _pad_to(self.normalization.forward(stack[i : i + 1]), rows, cols)[0]
            tiles, corners = extract_patches(frame, tile, step)
            pred = np.empty_like(tiles)
            for start in range(0, len(tiles), per_call):
                pred[start : start + per_call] = self._predict(tiles[start : start + per_call])
            merged = reassemble_patches(pred, corners, (rows, cols))[:h, :w]
            out[i] = self.normalization.inverse(merged)
            bar.update(1)

    def _enhance_patches(self, frames: list[np.ndarray], stride: int, per_call: int) -> list[np.ndarray]:
        """The patch network's output for each 2-D frame; the frames' patches go through the network
        together, ``per_call`` at a time (on a thin slab, one call per frame and view added half as
        much again as the arithmetic: Keras' per-call overhead)."""
        p = self.patch_size
        cuts = []
        for frame in frames:
            h, w = frame.shape
            norm = _pad_to(self.normalization.forward(frame[None]), max(h, p), max(w, p))[0]
            cuts.append((*extract_patches(norm, p, stride), norm.shape, h, w))
        patches = np.concatenate([cut[0] for cut in cuts])
        pred = np.empty_like(patches)
        for start in range(0, len(patches), per_call):
            pred[start : start + per_call] = self._predict(patches[start : start + per_call])
        out, at = [], 0
        for _, corners, shape, h, w in cuts:
            merged = reassemble_patches(pred[at : at + len(corners)], corners, shape)[:h, :w]
            out.append(self.normalization.inverse(merged))
            at += len(corners)
        return out

    # -- persistence -------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        norm = self.normalization.to_dict()
        return {
            "format_version": FORMAT_VERSION,
            "normalization": norm,
            # the weights are checked against provenance's model_hash; the numbers that scale
            # every frame in and out of the network get their own digest
            "normalization_sha256": _digest(norm),
            "provenance": self._provenance,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the enhancer to one ``.keras`` file (network, normalisation, provenance).

        Parameters
        ----------
        path : str or os.PathLike
            Destination; must end with ``.keras``.  Overwritten if it exists.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        ValueError
            The path does not end with ``.keras``.
        """
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"enhancer files must end with .keras, got {path.name!r}")
        with self._lock:
            self._meta_layer.payload = json.dumps(self._metadata(), sort_keys=True)
            keras.saving.save_model(self.network, path)
        return path

    def to_bytes(self) -> bytes:
        """The content of the ``.keras`` file that :meth:`save` writes.

        Returns
        -------
        bytes
            Zip archive; :func:`from_bytes` restores it.
        """
        with tempfile.TemporaryDirectory(prefix="lowdose-enhancer-") as tmp:
            path = self.save(Path(tmp) / "enhancer.keras")
            return path.read_bytes()


def load(path: str | os.PathLike[str]) -> Enhancer:
    """Restore an enhancer written by :meth:`Enhancer.save`.

    Loaded with ``compile=False, safe_mode=True``: only this package's registered layers are
    deserialised, no code is run from the file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file.

    Returns
    -------
    Enhancer
        The restored enhancer, with the provenance it was saved with.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an enhancer file, an unknown format version, or weights that do not match the
        recorded ``model_hash``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no enhancer file at {path}")
    if path.suffix != ".keras":
        raise ValueError(f"enhancer files end with .keras, got {path.name!r}")
    try:
        network = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for a corrupt archive
        raise ValueError(f"{path} is not a readable .keras file: {err}") from err
    try:
        layer = network.get_layer(METADATA_LAYER)
    except ValueError as err:
        raise ValueError(f"{path} was not written by bluesky_lowdose (no metadata layer)") from err
    if not isinstance(layer, EnhancerMetadata):
        raise ValueError(f"{path}: unexpected metadata layer type {type(layer).__name__}")
    meta = json.loads(layer.payload)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported enhancer format {meta.get('format_version')!r}")
    provenance = meta["provenance"]
    digest = weights_sha256(network)
    if digest != provenance.get("model_hash"):
        raise ValueError(f"{path}: weights do not match the recorded model_hash (file damaged or edited)")
    recorded = meta.get("normalization_sha256")  # absent in archives written before it was recorded
    if recorded is not None and recorded != _digest(meta["normalization"]):
        raise ValueError(
            f"{path}: the normalisation does not match its recorded digest (file damaged or edited): "
            "the network would scale every frame wrongly"
        )
    return Enhancer(network, Normalization.from_dict(meta["normalization"]), provenance)


def _digest(obj: Any) -> str:
    """SHA-256 of a JSON-able value, independent of key order."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def from_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> Enhancer:
    """Restore an enhancer from :meth:`Enhancer.to_bytes` output.

    Parameters
    ----------
    data : bytes, bytearray, memoryview or numpy.ndarray
        The ``.keras`` archive; a uint8 array holding one archive is accepted: 1-D, or
        ``(1, N)`` as a one-event stream reads back from Tiled
        (``stream_array(run, "model_n2i", "model_keras").read()``).

    Returns
    -------
    Enhancer
        The restored enhancer, with the provenance it was saved with.

    Raises
    ------
    TypeError
        Not bytes or a uint8 array.
    ValueError
        Empty or not an enhancer archive.
    """
    if isinstance(data, np.ndarray):
        if data.ndim == 2 and data.shape[0] == 1:  # the one event of a model stream
            data = data[0]
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(
                "an enhancer array must be uint8, 1-D or (1, N) (one model), "
                f"got {data.dtype} shape {data.shape}"
            )
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"from_bytes needs bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise ValueError("from_bytes got no data")
    with tempfile.TemporaryDirectory(prefix="lowdose-enhancer-") as tmp:
        path = Path(tmp) / "enhancer.keras"
        path.write_bytes(raw)
        return load(path)
