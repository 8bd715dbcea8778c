"""Turn the documents of a run into frames, whether images are inline or in external HDF5."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from event_model import unpack_event_page

__all__ = ["Frame", "FrameResolver", "FrameResolverError"]

logger = logging.getLogger(__name__)


class FrameResolverError(RuntimeError):
    """A frame announced by the documents could not be read."""


@dataclass
class Frame:
    """One image of one event, with its event's data."""

    stream: str
    seq_num: int
    event_uid: str
    image: np.ndarray
    data: dict[str, Any]


class FrameResolver:
    """Follow descriptors, StreamResource/StreamDatum and events; yield :class:`Frame` objects.

    Supports images inline in events and images in HDF5 files announced with
    StreamResource/StreamDatum (``application/x-hdf5``), i.e. any detector that writes
    either way, not only the simulated one. Files are read with SWMR, so frames can be read
    while the detector is still writing.

    Parameters
    ----------
    image_key : str, optional
        Data key of the image; by default the first 2-D data key of each descriptor.
    """

    def __init__(self, image_key: str | None = None) -> None:
        self.image_key = image_key
        self._descriptors: dict[str, dict[str, Any]] = {}
        self._image_keys: dict[str, str | None] = {}
        self._resources: dict[str, dict[str, Any]] = {}
        self._datums: dict[tuple[str, int], tuple[str, int]] = {}
        self._files: dict[str, Any] = {}

    def stream_name(self, descriptor_uid: str) -> str:
        """Name of the stream of a descriptor."""
        return str(self._descriptors[descriptor_uid].get("name", ""))

    def descriptor(self, doc: dict[str, Any]) -> None:
        """Register a descriptor and find its image key."""
        self._descriptors[doc["uid"]] = doc
        keys = doc["data_keys"]
        key = self.image_key
        if key is None or key not in keys:
            key = next((k for k, v in keys.items() if len(v.get("shape") or []) == 2), None)
        self._image_keys[doc["uid"]] = key

    def stream_resource(self, doc: dict[str, Any]) -> None:
        """Register a StreamResource."""
        if doc.get("mimetype") != "application/x-hdf5":
            logger.warning(
                "stream resource %s has mimetype %r; only HDF5 is read", doc["uid"], doc.get("mimetype")
            )
        self._resources[doc["uid"]] = doc

    def stream_datum(self, doc: dict[str, Any]) -> None:
        """Map the event sequence numbers of a StreamDatum to rows of its file."""
        seq = range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"])
        rows = range(doc["indices"]["start"], doc["indices"]["stop"])
        for s, r in zip(seq, rows, strict=False):
            self._datums[(doc["descriptor"], s)] = (doc["stream_resource"], r)

    def events(self, name: str, doc: dict[str, Any]) -> Iterator[Frame]:
        """Frames of an ``event`` or ``event_page`` document (nothing for non-image streams)."""
        docs = unpack_event_page(doc) if name == "event_page" else [doc]
        for ev in docs:
            desc = ev["descriptor"]
            key = self._image_keys.get(desc)
            if key is None:
                continue
            if key in ev["data"] and ev["data"][key] is not None and np.ndim(ev["data"][key]) == 2:
                image = np.asarray(ev["data"][key])
            else:
                image = self._read_external(desc, ev["seq_num"], key)
            data = {k: v for k, v in ev["data"].items() if k != key}
            yield Frame(self.stream_name(desc), int(ev["seq_num"]), ev["uid"], image, data)

    def _read_external(self, descriptor: str, seq_num: int, key: str) -> np.ndarray:
        try:
            resource_uid, row = self._datums.pop((descriptor, seq_num))
        except KeyError:
            raise FrameResolverError(
                f"no StreamDatum announced event {seq_num} of stream {self.stream_name(descriptor)!r} ({key})"
            ) from None
        res = self._resources[resource_uid]
        import h5py

        f = self._files.get(resource_uid)
        if f is None:
            path = _path_from_uri(res["uri"])
            try:
                f = h5py.File(path, "r", swmr=True)
            except OSError as exc:
                raise FrameResolverError(f"cannot open {path}: {exc}") from exc
            self._files[resource_uid] = f
        ds = f[res["parameters"]["dataset"]]
        ds.refresh()
        if row >= ds.shape[0]:
            raise FrameResolverError(f"row {row} not yet in {res['uri']} (has {ds.shape[0]})")
        return np.asarray(ds[row])

    def close(self) -> None:
        """Close every file opened for reading."""
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # pragma: no cover - closing is best effort
                logger.debug("closing an HDF5 file failed", exc_info=True)
        self._files.clear()


def _path_from_uri(uri: str) -> str:
    for prefix in ("file://localhost", "file://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri
