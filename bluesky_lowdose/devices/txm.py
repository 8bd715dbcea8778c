"""ophyd (v1) devices of the simulated transmission X-ray microscope.

The physics lives in :mod:`bluesky_lowdose.physics`; these classes only hold state
(angle, shutter, sample position, exposure time) and ask the physics for a frame.

The detector writes its frames to HDF5 (one file per ``stage``) and announces them with
StreamResource/StreamDatum documents, the shape ophyd-async detectors use: Tiled then
registers the files in place instead of copying every pixel through HTTP.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from event_model import ComposeStreamResource, StreamRange
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import DeviceStatus, StatusBase

from .._disk import check_free_space
from ..physics import TXMPhysics

__all__ = [
    "IMAGE_DATASET",
    "SimRotationStage",
    "SimSampleStage",
    "SimShutter",
    "SimTXMDetector",
]

logger = logging.getLogger(__name__)

#: Path of the frame stack inside each HDF5 file the detector writes.
IMAGE_DATASET = "/entry/data/data"


class SimRotationStage(SynAxis):
    """Simulated rotation stage, in degrees.

    Parameters
    ----------
    name : str
        Device name.
    delay : float
        Seconds each move takes (0: instant).
    """

    def __init__(self, *, name: str, delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(name=name, delay=delay, egu="deg", **kwargs)


class SimSampleStage(SynAxis):
    """Simulated sample translation stage (perpendicular to the beam), in mm.

    Moving it by more than the field of view takes the sample out of the beam, which is
    how flat fields are taken.
    """

    def __init__(self, *, name: str, delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(name=name, delay=delay, egu="mm", **kwargs)


class SimShutter(Device):
    """Simulated beam shutter: ``set("open")`` / ``set("close")`` (also 1/0).

    The readback ``<name>_state`` is 1 when open, 0 when closed.
    """

    state = Cpt(Signal, value=0, kind="hinted")

    OPEN = "open"
    CLOSE = "close"

    def set(self, value: str | int) -> StatusBase:
        """Open or close the shutter.

        Parameters
        ----------
        value : {"open", "close", 1, 0}
            Requested state.

        Returns
        -------
        StatusBase
            Already finished (the simulated shutter is instant).
        """
        if isinstance(value, str):
            key = value.strip().lower()
            if key not in (self.OPEN, self.CLOSE):
                raise ValueError(f"shutter accepts 'open' or 'close', got {value!r}")
            target = 1 if key == self.OPEN else 0
        elif value in (0, 1):
            target = int(value)
        else:
            raise ValueError(f"shutter accepts 'open'/'close' or 1/0, got {value!r}")
        self.state.put(target)
        status = StatusBase()
        status.set_finished()
        return status

    @property
    def is_open(self) -> bool:
        """True when the beam reaches the sample."""
        return bool(self.state.get())


class SimTXMDetector(Device):
    """Simulated TXM camera whose frames are the physics of the microscope's state.

    Parameters
    ----------
    physics : TXMPhysics
        Phantom, attenuation and noise model.
    rotation, shutter, sample_stage : Device
        The devices whose state the frame depends on.
    root : str or Path
        Directory where HDF5 files are written (must be readable by the Tiled server).
    name : str
        Device name; the image key is ``<name>_image``.
    in_position : float
        Sample-stage position (mm) at which the sample is centred on the rotation axis.
    time_scale : float
        Fraction of the exposure time actually waited in ``trigger`` (0: instant, 1: real
        time).
    """

    exposure_time = Cpt(Signal, value=1.0, kind="config")
    photon_flux = Cpt(Signal, value=0.0, kind="config")
    mean_counts = Cpt(Signal, value=0.0, kind="hinted")

    def __init__(
        self,
        physics: TXMPhysics,
        rotation: Device,
        shutter: SimShutter,
        sample_stage: Device,
        *,
        root: str | Path,
        name: str,
        in_position: float = 0.0,
        time_scale: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.physics = physics
        self._rotation = rotation
        self._shutter = shutter
        self._sample_stage = sample_stage
        self.write_root = Path(root).resolve()
        self.in_position = float(in_position)
        self.time_scale = float(time_scale)
        self.photon_flux.put(float(physics.detector.flux))
        self._lock = threading.Lock()
        self._file: h5py.File | None = None
        self._path: Path | None = None
        self._compose_datum: Any = None
        self._pending: deque[tuple[str, dict]] = deque()
        self._handed_out: list[tuple[str, dict]] = []
        self._rows_announced = 0
        self._row_written: int | None = None
        self._frame_counter = itertools.count()

    # -- helpers -------------------------------------------------------------------------
    @property
    def image_key(self) -> str:
        """Data key of the image in descriptors and events."""
        return f"{self.name}_image"

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, columns)."""
        return self.physics.shape

    def _state(self) -> tuple[float, float, bool, float]:
        angle = float(self._rotation.position)
        offset = float(self._sample_stage.position) - self.in_position
        return angle, float(self.exposure_time.get()), self._shutter.is_open, offset

    def current_frame(self) -> np.ndarray:
        """Acquire one noisy frame for the current state without writing it anywhere."""
        angle, exposure, is_open, offset = self._state()
        return self.physics.frame(angle, exposure, shutter_open=is_open, sample_offset_mm=offset)

    def ideal_frame(self) -> np.ndarray:
        """The noise-free frame for the current state (the simulator's perfect reference)."""
        angle, exposure, is_open, offset = self._state()
        return self.physics.ideal_frame(angle, exposure, shutter_open=is_open, sample_offset_mm=offset)

    # -- staging: one HDF5 file and one StreamResource per stage --------------------------
    def stage(self) -> list[object]:
        """Open a new HDF5 file for this acquisition segment."""
        ny, nx = self.shape
        day = time.strftime("%Y/%m/%d")
        directory = self.write_root / day
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"{self.name}_{uuid.uuid4().hex}.h5"
        f = h5py.File(self._path, "w", libver="latest")
        f.create_dataset(
            IMAGE_DATASET, shape=(0, ny, nx), maxshape=(None, ny, nx), chunks=(1, ny, nx), dtype=np.uint16
        )
        f.swmr_mode = True
        self._file = f
        bundle = ComposeStreamResource()(
            mimetype="application/x-hdf5",
            uri=self._path.as_uri().replace("file:///", "file://localhost/", 1),
            data_key=self.image_key,
            parameters={"dataset": IMAGE_DATASET, "chunk_shape": (1, ny, nx), "swmr": True},
        )
        self._compose_datum = bundle.compose_stream_datum
        self._pending = deque([("stream_resource", bundle.stream_resource_doc)])
        self._handed_out = []
        self._rows_announced = 0
        self._row_written = None
        return super().stage()

    def unstage(self) -> list[object]:
        """Close the HDF5 file."""
        with self._lock:
            f, self._file = self._file, None
            if f is not None:
                f.close()
        return super().unstage()

    # -- acquisition -------------------------------------------------------------------
    def trigger(self) -> StatusBase:
        """Expose one frame and append it to the open HDF5 file.

        A frame is written at the first row not yet announced by a StreamDatum, so a frame
        re-taken after a pause/rewind replaces the one whose event was never emitted and the
        file stays in step with the events.
        """
        if self._file is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        self._reclaim_unemitted()
        status = DeviceStatus(self)
        exposure = float(self.exposure_time.get())
        frame = self.current_frame()
        with self._lock:
            ds = self._file[IMAGE_DATASET]
            row = self._rows_announced
            # HDF5 does not survive a full disk (a failed write can crash the process when the
            # file is closed): refuse the frame while there is room left for the stop documents
            check_free_space(self._path, frame.size * ds.dtype.itemsize, f"frame {row} of {self.name}")
            if ds.shape[0] <= row:
                ds.resize(row + 1, axis=0)
            ds[row] = frame
            ds.flush()
            self._row_written = row
        self.mean_counts.put(float(frame.mean()))
        wait = exposure * self.time_scale
        if wait > 0:
            threading.Timer(wait, status.set_finished).start()
        else:
            status.set_finished()
        return status

    def describe(self) -> dict[str, dict[str, Any]]:
        """Describe the readings, including the external image key."""
        desc = super().describe()
        ny, nx = self.shape
        desc[self.image_key] = {
            "source": f"sim:{self.name}:image",
            "shape": [ny, nx],
            "dtype": "array",
            "dtype_numpy": np.dtype(np.uint16).str,
            "external": "STREAM:",
            "dims": ["dim_0", "dim_1"],
        }
        return desc

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        """Yield the pending StreamResource and a StreamDatum for the last triggered frame."""
        while self._pending:
            name, doc = self._pending.popleft()
            self._handed_out.append((name, doc))
            yield name, doc
        if self._row_written is not None and self._row_written >= self._rows_announced:
            start = self._rows_announced
            stop = self._row_written + 1
            self._rows_announced = stop
            datum = self._compose_datum(StreamRange(start=start, stop=stop))
            self._handed_out.append(("stream_datum", datum))
            yield "stream_datum", datum

    def _reclaim_unemitted(self) -> None:
        """Take back documents that were collected at ``read`` but never emitted.

        The RunEngine collects asset documents at ``read`` and emits them at ``save``; an
        immediate pause in between drops them and rewinds. The RunEngine fills in
        ``run_start`` (StreamResource) and ``descriptor`` (StreamDatum) only when it emits, so
        a document without them was dropped: its StreamResource goes back to the queue and
        its rows are written again, keeping the file in step with the events.
        """
        dropped = [
            (n, d)
            for n, d in self._handed_out
            if (n == "stream_resource" and not d.get("run_start"))
            or (n == "stream_datum" and not d["descriptor"])
        ]
        self._handed_out.clear()
        for n, d in dropped:
            if n == "stream_resource":
                self._pending.appendleft((n, d))
            else:
                self._rows_announced = min(self._rows_announced, d["indices"]["start"])

    def get_index(self) -> int:
        """Number of frames announced in the current file."""
        return self._rows_announced
