"""Building the ``processed`` run of one raw run: documents composed with event-model.

The start document says what will be done (the method, the pairs, the flat policy, software);
the outcome -- status, reasons, metrics, the full provenance of the models -- goes into the
``metrics`` and ``provenance`` streams and the stop document, written once at the end.  Nothing
is patched afterwards, so a run replayed from a backup reads exactly like a live one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from event_model import StreamRange, compose_run

from ..storage.catalog import STORAGE_REASON

__all__ = ["PROCESSED_STREAMS", "STORAGE_REASON", "ProcessedRun"]

logger = logging.getLogger(__name__)

#: Streams a processed run may hold.
PROCESSED_STREAMS = (
    "training",
    "training_n2i",
    "model",
    "model_n2i",
    "enhanced",
    "preview",
    "first_result",
    "recon_first",
    "recon_raw",
    "recon_enhanced",
    "metrics",
    "provenance",
)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a real number (not a bool).

    Parameters
    ----------
    v : object
        Anything.

    Returns
    -------
    bool
        True for ints and floats, numpy's included.
    """
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _data_key(v: Any) -> dict[str, Any]:
    if isinstance(v, str):
        return {"source": "lowdose", "dtype": "string", "shape": []}
    arr = np.asarray(v)
    return {"source": "lowdose", "dtype": "array" if arr.ndim else "number", "shape": list(arr.shape),
            "dtype_numpy": arr.dtype.str}  # fmt: skip


class ProcessedRun:
    """One processed run: a start document, streams of events, one stop document.

    Parameters
    ----------
    metadata : dict
        Start-document metadata.
    write : callable
        ``write(name, doc)`` for every document (Tiled writer, sink).
    """

    def __init__(self, metadata: dict[str, Any], write: Callable[[str, dict], None]) -> None:
        self._bundle = compose_run(metadata=json.loads(json.dumps(metadata, default=str)))
        self._write = write
        self._streams: dict[str, Any] = {}
        self._stacks: dict[str, tuple[Any, Any]] = {}  # stream -> (StackWriter, its StreamResource bundle)
        #: streams whose data Tiled serves from files in place: stream -> data key
        self.in_place: dict[str, str] = {}
        self.closed = False
        self.uid: str = self._bundle.start_doc["uid"]
        write("start", self._bundle.start_doc)

    def emit(self, stream: str, data: dict[str, Any]) -> None:
        """Emit one event into ``stream`` (its descriptor is made from the first event).

        Parameters
        ----------
        stream : str
            Stream name.
        data : dict
            Values: numbers, strings or arrays.
        """
        if self.closed:
            raise RuntimeError(f"processed run {self.uid} is closed")
        if stream not in self._streams:
            keys = {k: _data_key(v) for k, v in data.items()}
            desc = self._bundle.compose_descriptor(name=stream, data_keys=keys)
            self._streams[stream] = desc
            self._write("descriptor", desc.descriptor_doc)
        now = time.time()
        ev = self._streams[stream].compose_event(data=data, timestamps=dict.fromkeys(data, now))
        self._write("event", ev)

    def emit_frames(
        self, stream: str, key: str, frames: np.ndarray, rows: list[dict[str, Any]], path: str | Path
    ) -> None:
        """Append frames to an HDF5 stack (SWMR: readable while it grows) and announce them with a
        StreamDatum, as detectors do; ``rows`` are the frames' other values, one event each.

        The first call creates the file at ``path``, the stream's descriptor and its
        StreamResource; :meth:`close` closes the file.

        Parameters
        ----------
        stream : str
            Stream name (``"enhanced"``).
        key : str
            Data key of one frame.
        frames : numpy.ndarray
            ``(n, rows, width)``.
        rows : list of dict
            ``n`` dicts of numbers and strings (angle, raw sequence number, ...).
        path : str or Path
            The stack's file.
        """
        if self.closed:
            raise RuntimeError(f"processed run {self.uid} is closed")
        frames = np.asarray(frames)
        if len(rows) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(rows)} rows of values")
        if stream not in self._stacks:
            from ..recon.stored import StackWriter

            shape = [int(v) for v in frames.shape[1:]]
            writer = StackWriter(
                path, "data", tuple(shape), chunk_rows=shape[0], dtype=frames.dtype, swmr=True
            )
            keys = {
                key: self._external_key(shape, frames.dtype),
                **{k: _data_key(v) for k, v in rows[0].items()},
            }
            desc = self._bundle.compose_descriptor(name=stream, data_keys=keys)
            self._streams[stream] = desc
            self._write("descriptor", desc.descriptor_doc)
            resource = self._resource(key, writer.path, "data", shape, swmr=True)
            self._stacks[stream] = (writer, resource)
            self.in_place[stream] = key
        writer, resource = self._stacks[stream]
        desc = self._streams[stream]
        start = writer.n
        writer.append(frames)
        # as the RunEngine orders them: the StreamDatum, then the events it belongs to
        indices = StreamRange(start=start, stop=writer.n)
        seq = StreamRange(start=start + 1, stop=writer.n + 1)
        self._write("stream_datum", resource.compose_stream_datum(indices, seq, desc.descriptor_doc))
        for row in rows:
            ev = desc.compose_event(data=row, timestamps=dict.fromkeys(row, time.time()))
            self._write("event", ev)

    @staticmethod
    def _external_key(shape: list[int], dtype: Any) -> dict[str, Any]:
        return {"source": "lowdose", "dtype": "array", "shape": shape, "dtype_numpy": np.dtype(dtype).str,
                "external": "STREAM:", "dims": [f"dim_{i}" for i in range(len(shape))]}  # fmt: skip

    def _resource(
        self, key: str, path: str | Path, dataset: str, shape: list[int], *, swmr: bool = False
    ) -> Any:
        uri = Path(path).resolve().as_uri().replace("file:///", "file://localhost/", 1)
        parameters: dict[str, Any] = {"dataset": dataset, "chunk_shape": [1, *shape]}
        if swmr:
            parameters["swmr"] = True
        resource = self._bundle.compose_stream_resource(mimetype="application/x-hdf5", uri=uri, data_key=key,
                                                        parameters=parameters)  # fmt: skip
        self._write("stream_resource", resource.stream_resource_doc)
        return resource

    def register_volume(self, stream: str, key: str, volume: Any) -> None:
        """Announce a volume in an HDF5 file as stream ``stream``: one StreamResource and one
        StreamDatum, as detectors announce their frames, so Tiled serves the file in place (its
        folder must be in the server's readable storage) and no byte of it goes over HTTP.

        Parameters
        ----------
        stream : str
            Stream name (``"recon_raw"``, ``"recon_enhanced"``).
        key : str
            Data key of one slice (``"slice"``): the stream has one row per slice.
        volume : bluesky_lowdose.recon.stored.StoredArray
            The file and dataset, ``(slices, rows, width)``.
        """
        if self.closed:
            raise RuntimeError(f"processed run {self.uid} is closed")
        if stream in self._streams:
            raise ValueError(f"stream {stream!r} of processed run {self.uid} exists already")
        n, *frame = (int(v) for v in volume.shape)
        desc = self._bundle.compose_descriptor(
            name=stream, data_keys={key: self._external_key(frame, volume.dtype)}
        )
        self._streams[stream] = desc
        self._write("descriptor", desc.descriptor_doc)
        resource = self._resource(key, volume.path, volume.dataset, frame)
        self.in_place[stream] = key
        rows = StreamRange(start=0, stop=n)
        self._write("stream_datum", resource.compose_stream_datum(rows, rows, desc.descriptor_doc))

    def emit_history(self, stream: str, history: dict[str, list[float]]) -> None:
        """Emit a Keras history (``{name: [value per epoch]}``) as one event per epoch.

        Parameters
        ----------
        stream : str
            Stream name.
        history : dict
            Loss curves.
        """
        n = max((len(v) for v in history.values()), default=0)
        for i in range(n):
            row = {k: float(v[i]) for k, v in history.items() if i < len(v) and is_number(v[i])}
            self.emit(stream, {"epoch": i + 1, **row})

    def emit_model(self, stream: str, key: str, enhancer: Any) -> None:
        """Emit a trained network (its ``.keras`` bytes) and its hash.

        Parameters
        ----------
        stream : str
            Stream name.
        key : str
            Data key of the bytes.
        enhancer : bluesky_lowdose.model.Enhancer
            The model.
        """
        blob = np.frombuffer(enhancer.to_bytes(), dtype=np.uint8)
        self.emit(stream, {key: blob, "model_hash": enhancer.model_hash})

    def close_files(self) -> None:
        """Close the stacks written by :meth:`emit_frames` (their rows stay announced)."""
        for writer, _ in self._stacks.values():
            writer.close()

    def close(self, status: str, reasons: list[str], *, summary: str = "") -> None:
        """Write the stop document: ``success`` when complete, ``fail`` with the reasons otherwise.

        Parameters
        ----------
        status : {"complete", "partial"}
            The outcome.
        reasons : list of str
            Why it is partial.
        summary : str
            The result's quality in one line, appended to the stop document's ``reason`` (the
            stop schema allows no other field).
        """
        if self.closed:
            return
        self.closed = True
        self.close_files()
        complete = status == "complete"
        reason = "" if complete else "partial: " + "; ".join(reasons)
        if summary:
            reason = f"{reason} | {summary}" if reason else summary
        stop = self._bundle.compose_stop(exit_status="success" if complete else "fail", reason=reason)
        self._write("stop", stop)
