"""Turn the documents of a run into frames, whether images are inline or in external HDF5.

Three ways a camera can deliver its images are read:

- inline in the events (``[H, W]`` or ``[1, H, W]`` arrays);
- StreamResource/StreamDatum (ophyd-async, and the simulated TXM): a StreamDatum maps a range of
  event sequence numbers to a range of rows of an HDF5 dataset, any number of rows per event;
- Resource/Datum (ophyd v1 areaDetector HDF5 plugins, specs ``AD_HDF5``/``AD_HDF5_SWMR``): the
  event holds a datum id; ``frame_per_point`` rows per datum from ``point_number``.

Images are ``[H, W]`` or ``[k, H, W]`` (``k`` frames in one event; a leading 1 is dropped).
Whatever does not fit raises :class:`FrameResolverError` with the reason: nothing is cut silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from event_model import unpack_datum_page, unpack_event_page

__all__ = ["AD_HDF5_SPECS", "IMAGE_DATASET", "Frame", "FrameResolver", "FrameResolverError"]

logger = logging.getLogger(__name__)

#: Resource specs of areaDetector HDF5 files that are read (ophyd v1 Resource/Datum).
AD_HDF5_SPECS = frozenset({"AD_HDF5", "AD_HDF5_SWMR", "AD_HDF5_SWMR_STREAM"})
#: Where areaDetector's HDF5 plugin puts the frames.
IMAGE_DATASET = "/entry/data/data"


class FrameResolverError(RuntimeError):
    """A frame announced by the documents could not be read."""


@dataclass
class Frame:
    """One image of one event, with its event's data."""

    stream: str
    seq_num: int
    event_uid: str
    image: np.ndarray  # [H, W], or [k, H, W] when one event holds k frames
    data: dict[str, Any]


class FrameResolver:
    """Follow descriptors, StreamResource/StreamDatum and events; yield :class:`Frame` objects.

    Supports images inline in events, in HDF5 files announced with StreamResource/StreamDatum
    (``application/x-hdf5``) and in areaDetector HDF5 files announced with Resource/Datum (see
    the module), i.e. any detector that writes one of these ways, not only the simulated one.
    Files are opened for SWMR reading when the writer allows it, so frames can be read while
    the detector is still writing.

    Parameters
    ----------
    image_key : str, optional
        Data key of the image; by default the first data key of each descriptor whose shape is
        ``[H, W]`` or ``[k, H, W]``.
    read_timeout : float
        Seconds an announced frame may take to appear in its file: a detector that flushes
        after reporting its frame done (areaDetector's HDF5 plugin can) is read again, the file
        reopened, until then. The announcement is dropped only once the frame is read or the
        time is up.
    """

    def __init__(self, image_key: str | None = None, *, read_timeout: float = 10.0) -> None:
        self.image_key = image_key
        self.read_timeout = read_timeout
        self._descriptors: dict[str, dict[str, Any]] = {}
        self._image_keys: dict[str, str | None] = {}
        self._resources: dict[str, dict[str, Any]] = {}
        self._datums: dict[tuple[str, str, int], tuple[str, int, int] | str] = {}
        self._v1_resources: dict[str, dict[str, Any]] = {}
        self._v1_datums: dict[str, dict[str, Any]] = {}
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
            key = next((k for k, v in keys.items() if len(v.get("shape") or []) in (2, 3)), None)
        self._image_keys[doc["uid"]] = key

    def stream_resource(self, doc: dict[str, Any]) -> None:
        """Register a StreamResource."""
        if doc.get("mimetype") != "application/x-hdf5":
            logger.warning(
                "stream resource %s has mimetype %r; only HDF5 is read", doc["uid"], doc.get("mimetype")
            )
        self._resources[doc["uid"]] = doc

    def stream_datum(self, doc: dict[str, Any]) -> None:
        """Map the event sequence numbers of a StreamDatum to rows of its file.

        Each event gets ``len(indices) / len(seq_nums)`` consecutive rows; a StreamDatum whose
        rows do not divide evenly among its events marks them unreadable, with the reason.
        """
        seq = range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"])
        rows = range(doc["indices"]["start"], doc["indices"]["stop"])
        resource = self._resources.get(doc["stream_resource"])
        if len(seq) == 0 or resource is None:
            return
        data_key = resource.get("data_key")
        per_event, rest = divmod(len(rows), len(seq))
        for i, s in enumerate(seq):
            if rest or per_event == 0:
                self._datums[(doc["descriptor"], data_key, s)] = (
                    f"StreamDatum {doc['uid']} maps {len(rows)} rows onto {len(seq)} events"
                )
            else:
                start = rows.start + i * per_event
                self._datums[(doc["descriptor"], data_key, s)] = (
                    doc["stream_resource"],
                    start,
                    start + per_event,
                )

    def resource(self, doc: dict[str, Any]) -> None:
        """Register an ophyd v1 Resource (areaDetector HDF5 files)."""
        if doc.get("spec") not in AD_HDF5_SPECS:
            logger.warning("resource %s has spec %r; only %s are read", doc["uid"], doc.get("spec"),
                           sorted(AD_HDF5_SPECS))  # fmt: skip
        self._v1_resources[doc["uid"]] = doc

    def datum(self, doc: dict[str, Any]) -> None:
        """Register an ophyd v1 Datum."""
        self._v1_datums[doc["datum_id"]] = doc

    def datum_page(self, doc: dict[str, Any]) -> None:
        """Register every Datum of a DatumPage."""
        for datum in unpack_datum_page(doc):
            self.datum(datum)

    def events(self, name: str, doc: dict[str, Any]) -> Iterator[Frame]:
        """Frames of an ``event`` or ``event_page`` document (nothing for non-image streams)."""
        docs = unpack_event_page(doc) if name == "event_page" else [doc]
        for ev in docs:
            desc = ev["descriptor"]
            key = self._image_keys.get(desc)
            if key is None:
                continue
            value = ev["data"].get(key)
            if isinstance(value, str) and value in self._v1_datums:
                image = self._read_datum(value)
            elif value is not None and np.ndim(value) in (2, 3):
                image = np.asarray(value)
            else:
                image = self._read_external(desc, ev["seq_num"], key)
            if image.ndim == 3 and image.shape[0] == 1:
                image = image[0]
            if image.ndim not in (2, 3):
                raise FrameResolverError(
                    f"{key} of event {ev['seq_num']} has shape {image.shape}, not [H, W]"
                )
            data = {k: v for k, v in ev["data"].items() if k != key}
            yield Frame(self.stream_name(desc), int(ev["seq_num"]), ev["uid"], image, data)

    def _open(self, uid: str, path: str, label: str) -> Any:
        f = self._files.get(uid)
        if f is not None:
            return f
        import h5py

        errors = []
        for kwargs in ({"swmr": True}, {}, {"locking": False}):  # SWMR first; a non-SWMR writer last
            try:
                f = h5py.File(path, "r", **kwargs)
                break
            except (OSError, ValueError) as exc:
                errors.append(f"{kwargs or 'plain'}: {exc}")
        else:
            raise FrameResolverError(f"cannot open {label} {path}: " + "; ".join(errors))
        self._files[uid] = f
        return f

    def _rows(self, uid: str, path: str, label: str, dataset: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``dataset``, waiting up to ``read_timeout`` for them to be flushed."""
        import time

        deadline = time.monotonic() + self.read_timeout
        delay = 0.0  # the first look again is at once: a newly opened handle may already see them
        while True:
            f = self._open(uid, path, label)
            try:
                ds = f[dataset]
            except KeyError:
                ds = None
            # no Dataset.refresh(): where the writer is in this process (the simulated detector)
            # it races with the writes and now and then gave another row's frame
            # (tests/test_frames.py); a handle opened after the rows were flushed sees them
            if ds is not None:
                if stop <= ds.shape[0]:
                    return np.asarray(ds[start:stop])
                have = f"has {ds.shape[0]}"
            else:
                have = f"no dataset {dataset}"
            if time.monotonic() >= deadline:
                raise FrameResolverError(
                    f"rows {start}:{stop} not in {path} within {self.read_timeout:g} s ({have})"
                )
            # a handle sees what was flushed before it was opened (another process's writes): reopen
            self._close_file(uid)
            time.sleep(delay)
            delay = min(max(2 * delay, 0.02), 0.5)

    def _close_file(self, uid: str) -> None:
        f = self._files.pop(uid, None)
        if f is not None:
            try:
                f.close()
            except Exception:  # pragma: no cover - closing is best effort
                logger.debug("closing an HDF5 file failed", exc_info=True)

    def _read_external(self, descriptor: str, seq_num: int, key: str) -> np.ndarray:
        try:
            target = self._datums[(descriptor, key, seq_num)]
        except KeyError:
            raise FrameResolverError(
                f"no StreamDatum announced event {seq_num} of stream {self.stream_name(descriptor)!r} ({key})"
            ) from None
        if isinstance(target, str):
            del self._datums[(descriptor, key, seq_num)]
            raise FrameResolverError(target)
        resource_uid, start, stop = target
        res = self._resources[resource_uid]
        path = _path_from_uri(res["uri"])
        try:
            return self._rows(
                resource_uid, path, "stream resource", res["parameters"]["dataset"], start, stop
            )
        finally:  # read, or given up after read_timeout: either way this announcement is done
            del self._datums[(descriptor, key, seq_num)]

    def _read_datum(self, datum_id: str) -> np.ndarray:
        datum = self._v1_datums[datum_id]
        try:
            return self._read_v1(datum_id, datum)
        finally:
            del self._v1_datums[datum_id]

    def _read_v1(self, datum_id: str, datum: dict[str, Any]) -> np.ndarray:
        res = self._v1_resources.get(datum["resource"])
        if res is None:
            raise FrameResolverError(f"datum {datum_id} names an unknown resource {datum['resource']}")
        if res.get("spec") not in AD_HDF5_SPECS:
            raise FrameResolverError(
                f"resource spec {res.get('spec')!r} is not read (only {sorted(AD_HDF5_SPECS)})"
            )
        import os

        path = os.path.join(res.get("root") or "", res["resource_path"])
        per_point = int(res.get("resource_kwargs", {}).get("frame_per_point", 1))
        point = int(datum.get("datum_kwargs", {}).get("point_number", 0))
        return self._rows(res["uid"], path, "areaDetector file", IMAGE_DATASET, point * per_point,
                          (point + 1) * per_point)  # fmt: skip

    def close(self) -> None:
        """Close every file opened for reading."""
        for uid in list(self._files):
            self._close_file(uid)


def _path_from_uri(uri: str) -> str:
    for prefix in ("file://localhost", "file://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri
