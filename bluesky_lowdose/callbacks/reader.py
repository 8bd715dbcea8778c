"""Reading one low-dose run's documents: calibration frames, reference pairs, the rotation.

A :class:`RunReader` is made per run by the enhancer's ``RunRouter`` and runs on the
enhancer's document thread (never on the RunEngine's).  It resolves images (inline or from the
detector's HDF5 files), corrects every exposure under the pipeline's flat/dark policy
(:func:`bluesky_lowdose.pipeline.flat_field`), pairs the reference frames by their planned angle
and hands work to the shared compute worker: one ``setup`` (pairs, photon statistics) as soon
as the pairs are complete, then every new rotation frame, then ``stop``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from event_model import DocumentRouter

from ..streams import PRIMARY, dark_stream, flat_stream, reference_stream
from .frames import Frame, FrameResolver

__all__ = ["RunReader", "Setup"]

logger = logging.getLogger(__name__)


class Setup(dict):
    """What the compute worker needs before the first frame (a plain dict with these keys).

    ``pairs``: dict with ``short``, ``long``, ``angles``, ``short_uids``, ``long_uids`` or None;
    ``pairs_error``: why there are none; ``flat_field``: the short exposure's policy record;
    ``photon``: :class:`~bluesky_lowdose.pipeline.PhotonStatistics` or None; ``frame_shape``:
    ``(rows, columns)`` of the detector's frames (from the darks, flats or pairs) or None.
    """


class RunReader(DocumentRouter):
    """Per-run document state (see the module).

    Parameters
    ----------
    start : dict
        The run's start document (with its ``lowdose`` block).
    submit : callable
        ``submit(kind, payload)`` hands work to the compute worker (may block this thread).
    fail : callable
        ``fail(reason)`` records why the result will be partial.
    angle_tolerance : float
        Degrees within which a reference frame's readback matches a planned reference angle.
    min_pairs : int
        Fewest pairs to train on.
    progress : dict
        The run's progress record (updated here: frames received).
    """

    def __init__(
        self,
        start: dict[str, Any],
        submit: Callable[[str, Any], None],
        fail: Callable[[str], None],
        *,
        angle_tolerance: float,
        min_pairs: int,
        progress: dict[str, Any],
    ) -> None:
        super().__init__()
        self.ld: dict[str, Any] = dict(start.get("lowdose", {}))
        self.submit = submit
        self.fail = fail
        self.angle_tolerance = angle_tolerance
        self.min_pairs = min_pairs
        self.progress = progress
        self.resolver = FrameResolver(
            image_key=f"{self.ld['detector']}_image" if self.ld.get("detector") else None
        )
        self.angle_key: str = self.ld.get("rotation") or "rotation"
        self.calib: dict[str, list[np.ndarray]] = {}
        self.refs: dict[str, dict[float, tuple[np.ndarray, str]]] = {"short": {}, "long": {}}
        self._calib_seen: set[tuple[str, int]] = set()
        self._primary_seen: set[int] = set()
        self._fields: dict[str, Any] = {}
        self.setup_sent = False
        self.n_primary = 0

    # ---------------------------------------------------------------- documents
    def descriptor(self, doc: dict) -> None:
        self.resolver.descriptor(doc)

    def stream_resource(self, doc: dict) -> None:
        self.resolver.stream_resource(doc)

    def stream_datum(self, doc: dict) -> None:
        self.resolver.stream_datum(doc)

    def resource(self, doc: dict) -> None:
        self.resolver.resource(doc)

    def datum(self, doc: dict) -> None:
        self.resolver.datum(doc)

    def datum_page(self, doc: dict) -> None:
        self.resolver.datum_page(doc)

    def event(self, doc: dict) -> None:
        self._frames("event", doc)

    def event_page(self, doc: dict) -> None:
        self._frames("event_page", doc)

    def stop(self, doc: dict) -> None:
        self.resolver.close()
        if not self.setup_sent:
            self._send_setup()
        self.submit("stop", doc)

    def _frames(self, name: str, doc: dict) -> None:
        for frame in self.resolver.events(name, doc):
            if frame.image.ndim == 3 and not frame.stream.startswith(("dark_", "flat_")):
                # k exposures at one angle are not one projection of the planned dose
                self.fail(f"event {frame.seq_num} of {frame.stream!r} holds {frame.image.shape[0]} frames; "
                          "one frame per projection is expected")  # fmt: skip
                continue
            if frame.stream == PRIMARY:
                self._primary(frame)
            elif frame.stream.startswith(("dark_", "flat_")):
                if (frame.stream, frame.seq_num) not in self._calib_seen:  # a rewind may repeat one
                    self._calib_seen.add((frame.stream, frame.seq_num))
                    images = frame.image if frame.image.ndim == 3 else frame.image[None]
                    self.calib.setdefault(frame.stream, []).extend(images)
            elif frame.stream.startswith("reference_"):
                self._reference(frame)

    def _reference(self, frame: Frame) -> None:
        from ..pipeline import nominal_angle

        kind = frame.stream.removeprefix("reference_")
        readback = float(frame.data.get(self.angle_key, np.nan))
        angle = nominal_angle(readback, self.ld.get("reference_angles", ()), self.angle_tolerance)
        self.refs.setdefault(kind, {})[angle] = (frame.image, frame.event_uid)
        expected = len(self.ld.get("reference_angles", ()))
        complete = all(len(self.refs.get(k, {})) >= expected for k in ("short", "long"))
        if expected and complete and not self.setup_sent:
            self._send_setup()  # the pairs are in: train while the rotation runs

    def _primary(self, frame: Frame) -> None:
        if not self.setup_sent:
            self._send_setup()
        if frame.seq_num in self._primary_seen:
            logger.warning("primary event %d seen twice (pause/rewind); keeping the first", frame.seq_num)
            return
        self._primary_seen.add(frame.seq_num)
        self.progress["frames_received"] += 1
        angle = float(frame.data.get(self.angle_key, np.nan))
        image = np.asarray(frame.image)
        corrected = self.flat("short").correct(image)
        self.submit(
            "frame", (self.n_primary, frame.seq_num, angle, corrected, frame.event_uid, time.perf_counter())
        )
        self.n_primary += 1

    # ---------------------------------------------------------------- correction
    def _exposure(self, kind: str) -> float | None:
        value = self.ld.get(f"{kind}_exposure")
        return float(value) if value else None

    def flat(self, kind: str) -> Any:
        """The flat field of one exposure (``"short"`` or ``"long"``) under the pipeline's policy.

        Parameters
        ----------
        kind : {"short", "long"}
            The exposure.

        Returns
        -------
        bluesky_lowdose.pipeline.FlatField
            Built once from the run's dark and flat streams.

        Raises
        ------
        LookupError
            A dark or flat stream is missing.
        """
        from ..pipeline import flat_field

        if kind not in self._fields:
            darks = self.calib.get(dark_stream(kind))
            flats = self.calib.get(flat_stream(kind))
            long_flats = self.calib.get(flat_stream("long")) if kind == "short" else None
            long_darks = self.calib.get(dark_stream("long")) if kind == "short" else None
            if not darks or not (flats or (long_flats and long_darks)):
                missing = [s for s, v in ((dark_stream(kind), darks), (flat_stream(kind), flats)) if not v]
                raise LookupError(f"missing stream(s) {missing}: cannot flat/dark-correct {kind} exposures")
            self._fields[kind] = flat_field(
                flats, darks, exposure=self._exposure(kind), long_flats=long_flats, long_darks=long_darks,
                long_exposure=self._exposure("long"),
            )  # fmt: skip
        return self._fields[kind]

    def _photon_statistics(self) -> Any:
        from ..pipeline import photon_statistics

        short, long_ = self._exposure("short"), self._exposure("long")
        for kind, ratio in (("long", (short / long_) if short and long_ else None), ("short", 1.0)):
            flats, darks = self.calib.get(flat_stream(kind)), self.calib.get(dark_stream(kind))
            if ratio and flats and darks and len(flats) >= 2 and len(darks) >= 2:
                short_darks = self.calib.get(dark_stream("short"))
                try:
                    noise_darks = np.stack(short_darks) if short_darks else None
                    return photon_statistics(np.stack(flats), np.stack(darks), exposure_ratio=ratio,
                                             read_noise_darks=noise_darks)  # fmt: skip
                except ValueError as exc:
                    logger.info("no photon statistics from the %s flats: %s", kind, exc)
        return None

    def _pairs(self) -> dict[str, Any]:
        angles = sorted(set(self.refs["short"]) & set(self.refs["long"]))
        if not angles:
            raise LookupError(
                f"no reference pairs (streams {reference_stream('short')}/{reference_stream('long')}) "
                "before the rotation"
            )
        if len(angles) < self.min_pairs:
            raise LookupError(f"{len(angles)} reference pair(s), {self.min_pairs} needed")
        short = np.stack([self.refs["short"][a][0] for a in angles])
        long_ = np.stack([self.refs["long"][a][0] for a in angles])
        if short.shape != long_.shape:
            raise ValueError(f"short references {short.shape} and long references {long_.shape} differ")
        return {
            "short": self.flat("short").correct(short),
            "long": self.flat("long").correct(long_),
            "angles": angles,
            "short_uids": [self.refs["short"][a][1] for a in angles],
            "long_uids": [self.refs["long"][a][1] for a in angles],
        }

    def _send_setup(self) -> None:
        self.setup_sent = True
        setup = Setup(pairs=None, pairs_error=None, flat_field=None, photon=None)
        try:
            setup["flat_field"] = self.flat("short").describe()
        except Exception as exc:
            self.fail(f"no flat field: {exc}")
        try:
            setup["pairs"] = self._pairs()
        except Exception as exc:
            setup["pairs_error"] = str(exc)
        setup["photon"] = self._photon_statistics()
        seen = [frames[0] for frames in self.calib.values() if frames]
        if setup["pairs"] is not None:
            seen.append(setup["pairs"]["short"][0])
        setup["frame_shape"] = tuple(int(v) for v in seen[0].shape[-2:]) if seen else None
        short, long_ = self._exposure("short"), self._exposure("long")
        if setup["photon"] is not None and short and long_:  # the long frames' counts: the judge's noise
            setup["long_open_beam_counts"] = setup["photon"].open_beam_counts * np.float32(long_ / short)
        self.submit("setup", setup)
