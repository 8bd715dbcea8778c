"""caproto PV groups of the simulated transmission X-ray microscope.

One :class:`TXMIOC` owns a :class:`~bluesky_lowdose.physics.TXMPhysics` and serves, under
its prefix ``P``:

- ``{P}rot`` and ``{P}samx``: motor records (rotation in deg, sample stage in mm) that
  stock ``ophyd.EpicsMotor`` drives; a move runs at ``.VELO`` (EGU/s) and ``.STOP`` stops it;
- ``{P}shutter`` / ``{P}shutter_RBV``: the beam shutter, an enum ``["Close", "Open"]``;
- ``{P}cam1:``: an areaDetector-shaped camera (the PVs ophyd's ``AreaDetectorCam`` and
  ``SingleTrigger`` use). ``Acquire = 1`` takes ``NumImages`` frames (1 in ``Single``
  image mode) from the physics at the IOC's own rotation and sample readbacks and shutter
  state, waits ``AcquireTime * time_scale`` (exposure) and ``readout_time`` (readout) per
  frame, hands each frame to the file plugin and sets ``Acquire_RBV`` back to 0;
- ``{P}HDF1:``: an HDF5 file plugin (the PVs of ophyd's ``HDF5Plugin`` with the
  ``FileStoreHDF5IterativeWrite`` mixin). ``Capture = 1`` in ``Stream`` (or ``Capture``)
  mode opens ``FileTemplate % (FilePath, FileName, FileNumber)`` and appends every frame
  to ``/entry/data/data`` (SWMR, flushed per frame, so readers see frames while the file is
  open and after the IOC dies); ``Capture = 0`` closes it;
- ``{P}data_dir``: the IOC's data directory (read-only), the default root of the file path.

Directories named in ``FilePath`` are created when they lie inside the data directory (as
areaDetector does with ``CreateDirectory``); elsewhere they must exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, get_pv_pair_wrapper, pvproperty

__all__ = ["IMAGE_DATASET", "TXMIOC", "AreaDetectorCam", "HDF5FilePlugin", "SimMotorRecord"]

logger = logging.getLogger(__name__)

#: Path of the frame stack in each HDF5 file (areaDetector's default layout, and the
#: dataset the ``AD_HDF5`` handler reads).
IMAGE_DATASET = "/entry/data/data"

#: areaDetector-style setpoint ``NAME`` with readback ``NAME_RBV``.
pvproperty_with_rbv = get_pv_pair_wrapper(setpoint_suffix="", readback_suffix="_RBV")

NO_YES = ("No", "Yes")
ENABLE = ("Disable", "Enable")
ACQUIRE = ("Done", "Acquire")
CAPTURE = ("Done", "Capture")
WRITE = ("Done", "Write")
IMAGE_MODE = ("Single", "Multiple", "Continuous")
TRIGGER_MODE = ("Internal", "External")
FILE_WRITE_MODE = ("Single", "Capture", "Stream")
SHUTTER = ("Close", "Open")
DETECTOR_STATE = (
    "Idle",
    "Acquire",
    "Readout",
    "Correct",
    "Saving",
    "Aborting",
    "Error",
    "Waiting",
    "Initializing",
    "Disconnected",
    "Aborted",
)
DATA_TYPE = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float32", "Float64")
COLOR_MODE = ("Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421")
COMPRESSION = ("None", "N-bit", "szip", "zlib", "blosc", "bslz4", "lz4", "jpeg")

_PATH_LENGTH = 1024


def _enum(name: str, value: str, strings: tuple[str, ...], doc: str, **kwargs: Any) -> Any:
    return pvproperty_with_rbv(
        name=name, value=value, dtype=ChannelType.ENUM, enum_strings=strings, doc=doc, **kwargs
    )


def _text(name: str, value: str, doc: str, **kwargs: Any) -> Any:
    return pvproperty_with_rbv(
        name=name,
        value=value,
        dtype=ChannelType.CHAR,
        max_length=_PATH_LENGTH,
        doc=doc,
        **kwargs,
    )


def _text_ro(name: str, value: str, doc: str) -> Any:
    return pvproperty(
        name=name,
        value=value,
        dtype=ChannelType.CHAR,
        max_length=_PATH_LENGTH,
        read_only=True,
        doc=doc,
    )


def _enum_ro(name: str, value: str, strings: tuple[str, ...], doc: str) -> Any:
    return pvproperty(
        name=name, value=value, dtype=ChannelType.ENUM, enum_strings=strings, read_only=True, doc=doc
    )


def _choice(channel: Any, value: Any = None) -> str:
    """The string of an enum PV's value, or of ``value`` written to it.

    A put from a client may leave the index, not the string, as the stored value.

    Parameters
    ----------
    channel : caproto.ChannelEnum
        The enum PV.
    value : str or int, optional
        A value for it (default: its current value).

    Returns
    -------
    str
        One of the PV's enum strings.
    """
    value = channel.value if value is None else value
    if isinstance(value, str):
        return value
    return channel.enum_strings[int(value)]


# -- motors ---------------------------------------------------------------------------------
class SimMotorRecord(PVGroup):
    """A motor record that moves its readback towards ``.VAL`` at ``.VELO`` EGU/s.

    The same pattern as caproto's ``ioc_examples/fake_motor_record.py`` (a ``record="motor"``
    pvproperty and a simulation task), written for this IOC: a put to ``.VAL`` wakes the
    task at once, ``.DMOV`` drops to 0 and comes back to 1 for every put (also a put to the
    current position, which ``ophyd.EpicsMotor`` waits for), ``.VELO`` is read on every tick
    (a change applies to the move in progress; ``VELO <= 0`` holds the motor still), ``.STOP``
    or ``.SPMG = Stop/Pause`` ends the move where it is, and a put outside ``.LLM``/``.HLM``
    is refused (``.LVIO = 1``, no move).

    Parameters
    ----------
    *args
        ``prefix`` (the record name), passed to :class:`caproto.server.PVGroup`.
    velocity : float
        Initial ``.VELO`` (EGU/s).
    limits : tuple of float
        ``(.LLM, .HLM)``; also the control limits of ``.VAL`` that ophyd checks.
    egu : str
        Engineering units.
    precision : int
        Display precision.
    tick : float
        Seconds between readback updates during a move.
    **kwargs
        Passed to :class:`caproto.server.PVGroup` (``parent``, ``name``, ...).
    """

    motor = pvproperty(value=0.0, name="", record="motor", precision=3, doc="motor record")

    def __init__(
        self,
        *args: Any,
        velocity: float = 1.0,
        limits: tuple[float, float] = (-100.0, 100.0),
        egu: str = "",
        precision: int = 3,
        tick: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.velocity = float(velocity)
        self.limits = (float(limits[0]), float(limits[1]))
        self.egu = egu
        self.precision = int(precision)
        self.tick = float(tick)
        self._requests = 0
        self._wake: asyncio.Event | None = None

    @property
    def position(self) -> float:
        """The user readback ``.RBV``."""
        return float(self.motor.field_inst.user_readback_value.value)

    @motor.putter
    async def motor(self, instance: Any, value: float) -> float:
        fields = instance.field_inst
        low, high = fields.user_low_limit.value, fields.user_high_limit.value
        if low < high and not low <= value <= high:
            await fields.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {value} outside the soft limits [{low}, {high}]")
        await fields.limit_violation.write(0)
        self._requests += 1
        if self._wake is not None:
            self._wake.set()
        return value

    @motor.startup
    async def motor(self, instance: Any, async_lib: Any) -> None:
        fields = instance.field_inst
        low, high = self.limits
        await instance.write_metadata(
            precision=self.precision, units=self.egu, lower_ctrl_limit=low, upper_ctrl_limit=high
        )
        for prop in fields.pvdb.values():
            if hasattr(prop, "precision"):
                await prop.write_metadata(precision=self.precision)
        await fields.engineering_units.write(self.egu)
        await fields.velocity.write(self.velocity)
        await fields.max_velocity.write(0.0)
        await fields.user_low_limit.write(low)
        await fields.user_high_limit.write(high)
        await fields.dial_low_limit.write(low)
        await fields.dial_high_limit.write(high)
        await fields.motor_step_size.write(1e-6)
        await fields.done_moving_to_value.write(1)
        self._wake = asyncio.Event()
        await self._simulate(instance)

    async def _simulate(self, instance: Any) -> None:
        fields = instance.field_inst
        while True:
            if self._requests == 0:
                await self._wake.wait()
                self._wake.clear()
                continue
            self._requests = 0
            if fields.stop.value != 0:
                await fields.stop.write(0)
            start = self.position
            t0 = time.monotonic()
            await fields.direction_of_travel.write(1 if instance.value >= start else 0)
            await fields.done_moving_to_value.write(0)
            await fields.motor_is_moving.write(1)
            while True:
                if self._requests:  # a new target during the move: go on from here
                    self._requests = 0
                    start, t0 = self.position, time.monotonic()
                    await fields.direction_of_travel.write(1 if instance.value >= start else 0)
                target = float(instance.value)
                if fields.stop.value != 0 or _choice(fields.stop_pause_move_go) in ("Stop", "Pause"):
                    await fields.stop.write(0)
                    await instance.write(self.position, verify_value=False)
                    break
                distance = target - start
                travelled = max(float(fields.velocity.value), 0.0) * (time.monotonic() - t0)
                if travelled >= abs(distance):
                    await self._set_position(fields, target)
                    break
                await self._set_position(fields, start + np.copysign(travelled, distance))
                await asyncio.sleep(self.tick)
            await fields.motor_is_moving.write(0)
            await fields.done_moving_to_value.write(1)

    @staticmethod
    async def _set_position(fields: Any, position: float) -> None:
        await fields.user_readback_value.write(position)
        await fields.dial_readback_value.write(position)
        await fields.raw_readback_value.write(round(position / 1e-6))


# -- camera ---------------------------------------------------------------------------------
async def _put_acquire(obj: Any, instance: Any, value: str) -> None:
    cam: AreaDetectorCam = obj.parent
    if _choice(instance, value) == "Acquire":
        await cam.start_acquisition()
    else:
        await cam.stop_acquisition()


class AreaDetectorCam(PVGroup):
    """The camera: the driver PVs of an areaDetector ``cam1:`` that ophyd uses.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`caproto.server.PVGroup` (prefix ``{P}cam1:``); the parent must be a
        :class:`TXMIOC`.
    """

    acquire = _enum("Acquire", "Done", ACQUIRE, "start (1) / stop (0) an acquisition", put=_put_acquire)
    acquire_time = pvproperty_with_rbv(name="AcquireTime", value=1.0, dtype=float, doc="exposure (s)")
    acquire_period = pvproperty_with_rbv(name="AcquirePeriod", value=1.0, dtype=float, doc="period (s)")
    image_mode = _enum("ImageMode", "Single", IMAGE_MODE, "Single: 1 frame; Multiple: NumImages frames")
    num_images = pvproperty_with_rbv(name="NumImages", value=1, dtype=int, doc="frames per acquisition")
    num_exposures = pvproperty_with_rbv(name="NumExposures", value=1, dtype=int, doc="exposures per frame")
    trigger_mode = _enum("TriggerMode", "Internal", TRIGGER_MODE, "trigger source")
    array_counter = pvproperty_with_rbv(name="ArrayCounter", value=0, dtype=int, doc="frames produced")
    array_callbacks = _enum("ArrayCallbacks", "Enable", ENABLE, "pass frames to the plugins")
    data_type = _enum(
        "DataType", "UInt16", DATA_TYPE, "pixel type (frames are UInt16)", readback_kw={"record": "mbbi"}
    )
    color_mode = _enum("ColorMode", "Mono", COLOR_MODE, "colour mode")
    bin_x = pvproperty_with_rbv(name="BinX", value=1, dtype=int, doc="binning x")
    bin_y = pvproperty_with_rbv(name="BinY", value=1, dtype=int, doc="binning y")
    min_x = pvproperty_with_rbv(name="MinX", value=0, dtype=int, doc="region start x")
    min_y = pvproperty_with_rbv(name="MinY", value=0, dtype=int, doc="region start y")
    size_x = pvproperty_with_rbv(name="SizeX", value=0, dtype=int, doc="region size x")
    size_y = pvproperty_with_rbv(name="SizeY", value=0, dtype=int, doc="region size y")
    gain = pvproperty_with_rbv(name="Gain", value=1.0, dtype=float, doc="gain")
    array_size_x = pvproperty(name="ArraySizeX_RBV", value=0, dtype=int, read_only=True, doc="frame width")
    array_size_y = pvproperty(name="ArraySizeY_RBV", value=0, dtype=int, read_only=True, doc="frame height")
    array_size_z = pvproperty(name="ArraySizeZ_RBV", value=0, dtype=int, read_only=True, doc="frame depth")
    array_size_bytes = pvproperty(name="ArraySize_RBV", value=0, dtype=int, read_only=True, doc="bytes")
    max_size_x = pvproperty(name="MaxSizeX_RBV", value=0, dtype=int, read_only=True, doc="sensor width")
    max_size_y = pvproperty(name="MaxSizeY_RBV", value=0, dtype=int, read_only=True, doc="sensor height")
    array_rate = pvproperty(name="ArrayRate_RBV", value=0.0, dtype=float, read_only=True, doc="frames/s")
    num_images_counter = pvproperty(
        name="NumImagesCounter_RBV", value=0, dtype=int, read_only=True, doc="frames of this acquisition"
    )
    num_exposures_counter = pvproperty(
        name="NumExposuresCounter_RBV", value=0, dtype=int, read_only=True, doc="exposures of this frame"
    )
    time_remaining = pvproperty(
        name="TimeRemaining_RBV", value=0.0, dtype=float, read_only=True, doc="s left in the exposure"
    )
    detector_state = _enum_ro("DetectorState_RBV", "Idle", DETECTOR_STATE, "detector state")
    status_message = _text_ro("StatusMessage_RBV", "", "last status message")
    manufacturer = pvproperty(
        name="Manufacturer_RBV",
        value="bluesky-lowdose",
        dtype=ChannelType.STRING,
        read_only=True,
        doc="maker",
    )
    model = pvproperty(
        name="Model_RBV", value="simulated TXM camera", dtype=ChannelType.STRING, read_only=True, doc="model"
    )
    port_name = pvproperty(
        name="PortName_RBV", value="CAM1", dtype=ChannelType.STRING, read_only=True, doc="asyn port"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        """True while an acquisition runs."""
        return self._task is not None and not self._task.done()

    async def start_acquisition(self) -> None:
        """Start an acquisition (no-op when one runs)."""
        if self.busy:
            return
        await self.acquire.readback.write("Acquire")
        await self.detector_state.write("Acquire")
        self._task = asyncio.get_running_loop().create_task(self._acquire())

    async def stop_acquisition(self) -> None:
        """Abort the running acquisition, if any."""
        if self.busy:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            await self.detector_state.write("Aborted")
        await self.acquire.readback.write("Done")

    async def _acquire(self) -> None:
        ioc: TXMIOC = self.parent
        mode = _choice(self.image_mode.setpoint)
        count = 1 if mode == "Single" else max(int(self.num_images.setpoint.value), 1)
        try:
            i = 0
            while mode == "Continuous" or i < count:
                await self.num_images_counter.write(i)
                exposure = float(self.acquire_time.setpoint.value)
                frame = await asyncio.to_thread(ioc.expose, exposure)
                wait = exposure * ioc.time_scale
                if wait > 0:
                    await self.time_remaining.write(wait)
                    await asyncio.sleep(wait)
                    await self.time_remaining.write(0.0)
                if ioc.readout_time > 0:
                    await self.detector_state.write("Readout")
                    await asyncio.sleep(ioc.readout_time)
                    await self.detector_state.write("Acquire")
                await self._publish(frame)
                i += 1
            await self.num_images_counter.write(i)
            await self.detector_state.write("Idle")
            await self.status_message.write("Acquisition completed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the IOC keeps serving; the clients see the state
            logger.exception("acquisition failed")
            await self.detector_state.write("Error")
            await self.status_message.write(f"acquisition failed: {exc}"[:_PATH_LENGTH])
        finally:
            await self.acquire.setpoint.write("Done", verify_value=False)
            await self.acquire.readback.write("Done")

    async def _publish(self, frame: np.ndarray) -> None:
        """Count the frame, give it to the plugins, then announce it (ArrayCounter_RBV)."""
        ny, nx = frame.shape
        await self.array_size_x.write(nx)
        await self.array_size_y.write(ny)
        await self.array_size_bytes.write(int(frame.nbytes))
        if _choice(self.array_callbacks.setpoint) == "Enable":
            await self.parent.hdf1.process(frame, self.port_name.value)
        counter = int(self.array_counter.readback.value) + 1
        await self.array_counter.setpoint.write(counter, verify_value=False)
        await self.array_counter.readback.write(counter)


# -- HDF5 file plugin -----------------------------------------------------------------------
async def _put_capture(obj: Any, instance: Any, value: str) -> None:
    plugin: HDF5FilePlugin = obj.parent
    if _choice(instance, value) == "Capture":
        await plugin.start_capture()
    else:
        await plugin.stop_capture()


async def _put_file_path(obj: Any, instance: Any, value: str) -> None:
    plugin: HDF5FilePlugin = obj.parent
    path = value if value.endswith("/") or not value else value + "/"
    await obj.readback.write(path)
    await plugin.check_path(path)


async def _put_array_counter(obj: Any, instance: Any, value: int) -> None:
    await obj.readback.write(value)


class HDF5FilePlugin(PVGroup):
    """The HDF5 file plugin ``HDF1:`` (NDFileHDF5) in ``Stream``/``Capture`` mode.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`caproto.server.PVGroup` (prefix ``{P}HDF1:``); the parent must be a
        :class:`TXMIOC`.
    """

    # NDPluginBase
    enable = _enum("EnableCallbacks", "Enable", ENABLE, "process frames")
    blocking_callbacks = _enum("BlockingCallbacks", "Yes", NO_YES, "process in the driver's thread")
    nd_array_port = pvproperty_with_rbv(
        name="NDArrayPort", value="CAM1", dtype=ChannelType.STRING, doc="source port"
    )
    nd_array_address = pvproperty_with_rbv(name="NDArrayAddress", value=0, dtype=int, doc="source address")
    array_counter = pvproperty_with_rbv(
        name="ArrayCounter", value=0, dtype=int, doc="frames received", put=_put_array_counter
    )
    dropped_arrays = pvproperty_with_rbv(name="DroppedArrays", value=0, dtype=int, doc="frames dropped")
    min_callback_time = pvproperty_with_rbv(name="MinCallbackTime", value=0.0, dtype=float, doc="s")
    plugin_type = pvproperty(
        name="PluginType_RBV", value="NDFileHDF5", dtype=ChannelType.STRING, read_only=True, doc="type"
    )
    port_name = pvproperty(
        name="PortName_RBV", value="HDF1", dtype=ChannelType.STRING, read_only=True, doc="asyn port"
    )
    array_size0 = pvproperty(name="ArraySize0_RBV", value=0, dtype=int, read_only=True, doc="width")
    array_size1 = pvproperty(name="ArraySize1_RBV", value=0, dtype=int, read_only=True, doc="height")
    array_size2 = pvproperty(name="ArraySize2_RBV", value=0, dtype=int, read_only=True, doc="depth")
    ndimensions = pvproperty(name="NDimensions_RBV", value=2, dtype=int, read_only=True, doc="dimensions")
    data_type = _enum_ro("DataType_RBV", "UInt16", DATA_TYPE, "pixel type")
    color_mode = _enum_ro("ColorMode_RBV", "Mono", COLOR_MODE, "colour mode")
    unique_id = pvproperty(name="UniqueId_RBV", value=0, dtype=int, read_only=True, doc="last frame id")
    time_stamp = pvproperty(name="TimeStamp_RBV", value=0.0, dtype=float, read_only=True, doc="last frame")
    # NDPluginFile
    file_path = _text("FilePath", "", "directory of the next file", put=_put_file_path)
    file_path_exists = _enum_ro("FilePathExists_RBV", "No", NO_YES, "FilePath exists")
    file_name = _text("FileName", "", "file name stem")
    file_number = pvproperty_with_rbv(name="FileNumber", value=0, dtype=int, doc="next file number")
    file_template = _text("FileTemplate", "%s%s_%6.6d.h5", "printf template (path, name, number)")
    full_file_name = _text_ro("FullFileName_RBV", "", "last file opened")
    auto_increment = _enum("AutoIncrement", "Yes", NO_YES, "FileNumber += 1 after each file")
    auto_save = _enum("AutoSave", "Yes", NO_YES, "save automatically")
    file_write_mode = _enum("FileWriteMode", "Stream", FILE_WRITE_MODE, "Single, Capture or Stream")
    num_capture = pvproperty_with_rbv(name="NumCapture", value=0, dtype=int, doc="frames per file (0: any)")
    num_captured = pvproperty(
        name="NumCaptured_RBV", value=0, dtype=int, read_only=True, doc="frames in the open file"
    )
    capture = _enum("Capture", "Done", CAPTURE, "open (1) / close (0) a file", put=_put_capture)
    write_file = _enum("WriteFile", "Done", WRITE, "write (unused: Stream mode writes each frame)")
    read_file = _enum("ReadFile", "Done", ("Done", "Read"), "read (not supported)")
    file_format = _enum("FileFormat", "HDF5", ("HDF5",), "file format")
    delete_driver_file = _enum("DeleteDriverFile", "No", NO_YES, "delete driver file")
    write_status = _enum_ro("WriteStatus", "Write OK", ("Write OK", "Write error"), "last write status")
    write_message = _text_ro("WriteMessage", "", "last write error")
    # NDFileHDF5
    compression = _enum("Compression", "None", COMPRESSION, "compression (frames are stored uncompressed)")
    zlevel = pvproperty_with_rbv(name="ZLevel", value=6, dtype=int, doc="zlib level")
    num_row_chunks = pvproperty_with_rbv(name="NumRowChunks", value=0, dtype=int, doc="rows per chunk")
    num_col_chunks = pvproperty_with_rbv(name="NumColChunks", value=0, dtype=int, doc="columns per chunk")
    num_frames_chunks = pvproperty_with_rbv(name="NumFramesChunks", value=1, dtype=int, doc="frames/chunk")
    num_frames_flush = pvproperty_with_rbv(name="NumFramesFlush", value=1, dtype=int, doc="frames/flush")
    boundary_align = pvproperty_with_rbv(name="BoundaryAlign", value=0, dtype=int, doc="alignment")
    boundary_threshold = pvproperty_with_rbv(name="BoundaryThreshold", value=0, dtype=int, doc="threshold")
    num_extra_dims = pvproperty_with_rbv(name="NumExtraDims", value=0, dtype=int, doc="extra dimensions")
    extra_dim_size_x = pvproperty_with_rbv(name="ExtraDimSizeX", value=1, dtype=int, doc="extra size x")
    extra_dim_size_y = pvproperty_with_rbv(name="ExtraDimSizeY", value=1, dtype=int, doc="extra size y")
    extra_dim_size_n = pvproperty_with_rbv(name="ExtraDimSizeN", value=1, dtype=int, doc="extra size n")
    extra_dim_name_x = pvproperty(
        name="ExtraDimNameX_RBV", value="X", dtype=ChannelType.STRING, read_only=True, doc="x"
    )
    extra_dim_name_y = pvproperty(
        name="ExtraDimNameY_RBV", value="Y", dtype=ChannelType.STRING, read_only=True, doc="y"
    )
    extra_dim_name_n = pvproperty(
        name="ExtraDimNameN_RBV", value="n", dtype=ChannelType.STRING, read_only=True, doc="n"
    )
    num_data_bits = pvproperty_with_rbv(name="NumDataBits", value=0, dtype=int, doc="n-bit data bits")
    data_bits_offset = pvproperty_with_rbv(name="DataBitsOffset", value=0, dtype=int, doc="n-bit offset")
    szip_num_pixels = pvproperty_with_rbv(name="SZipNumPixels", value=16, dtype=int, doc="szip pixels")
    store_attr = _enum("StoreAttr", "No", NO_YES, "store NDAttributes")
    store_perform = _enum("StorePerform", "No", NO_YES, "store performance data")
    swmr_mode = _enum("SWMRMode", "On", ("Off", "On"), "single writer / multiple readers (always on)")
    io_speed = pvproperty(name="IOSpeed", value=0.0, dtype=float, read_only=True, doc="MB/s")
    run_time = pvproperty(name="RunTime", value=0.0, dtype=float, read_only=True, doc="s of the last write")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._file: h5py.File | None = None

    @property
    def capturing(self) -> bool:
        """True while a file is open."""
        return self._file is not None

    async def check_path(self, path: str) -> bool:
        """Update ``FilePathExists_RBV``, creating the directory inside the data directory.

        Parameters
        ----------
        path : str
            Directory of the next file.

        Returns
        -------
        bool
            Whether it exists now.
        """
        exists = False
        if path:
            directory = Path(path)
            if not directory.is_dir() and self.parent.may_create(directory):
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    await self._error(f"cannot create {directory}: {exc}")
            exists = directory.is_dir()
        await self.file_path_exists.write("Yes" if exists else "No")
        return exists

    async def _error(self, message: str) -> None:
        logger.error("%s%s", self.prefix, message)
        await self.write_status.write("Write error")
        await self.write_message.write(message[:_PATH_LENGTH])

    async def start_capture(self) -> None:
        """Open the next file (``FileTemplate % (FilePath, FileName, FileNumber)``)."""
        if self.capturing:
            return
        mode = _choice(self.file_write_mode.setpoint)
        if mode == "Single":
            await self._error("Single file write mode is not supported: use Stream or Capture")
            raise ValueError("FileWriteMode Single is not supported")
        directory = str(self.file_path.readback.value)
        if not await self.check_path(directory):
            await self._error(f"file path {directory!r} does not exist")
            raise ValueError(f"file path {directory!r} does not exist")
        number = int(self.file_number.setpoint.value)
        try:
            name = str(self.file_template.setpoint.value) % (directory, self.file_name.setpoint.value, number)
        except (TypeError, ValueError) as exc:
            await self._error(f"bad FileTemplate: {exc}")
            raise
        ny, nx = self.parent.physics.shape
        try:
            f = h5py.File(name, "w", libver="latest")
            f.create_dataset(
                IMAGE_DATASET, shape=(0, ny, nx), maxshape=(None, ny, nx), chunks=(1, ny, nx), dtype=np.uint16
            )
            f.swmr_mode = True
        except OSError as exc:
            await self._error(f"cannot open {name}: {exc}")
            raise
        self._file = f
        await self.full_file_name.write(name)
        await self.num_captured.write(0)
        await self.write_status.write("Write OK")
        await self.write_message.write("")
        if _choice(self.auto_increment.setpoint) == "Yes":
            # the next number, published before Capture_RBV (ophyd reads it once capture is on)
            await self.file_number.setpoint.write(number + 1, verify_value=False)
            await self.file_number.readback.write(number + 1)
        await self.capture.readback.write("Capture")

    def close_file(self) -> None:
        """Close the open file, if any (synchronous: also usable after the server stopped)."""
        if self._file is not None:
            f, self._file = self._file, None
            f.close()

    async def stop_capture(self) -> None:
        """Close the open file, if any."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:
                await self._error(f"closing the file failed: {exc}")
            self._file = None
        await self.capture.setpoint.write("Done", verify_value=False)
        await self.capture.readback.write("Done")

    async def process(self, frame: np.ndarray, source_port: str) -> None:
        """Receive a frame; append it to the open file.

        Parameters
        ----------
        frame : numpy.ndarray
            The frame (uint16, rows x columns).
        source_port : str
            The asyn port of the sender: only frames from ``NDArrayPort`` are taken.
        """
        if _choice(self.enable.setpoint) != "Enable" or self.nd_array_port.setpoint.value != source_port:
            return
        ny, nx = frame.shape
        await self.array_size0.write(nx)
        await self.array_size1.write(ny)
        counter = int(self.array_counter.readback.value) + 1
        await self.array_counter.setpoint.write(counter, verify_value=False)
        await self.array_counter.readback.write(counter)
        await self.unique_id.write(int(self.parent.cam.array_counter.readback.value) + 1)
        await self.time_stamp.write(time.time())
        if self._file is None:
            return
        t0 = time.perf_counter()
        try:
            ds = self._file[IMAGE_DATASET]
            row = ds.shape[0]
            ds.resize(row + 1, axis=0)
            ds[row] = frame
            ds.flush()
        except Exception as exc:
            await self._error(f"writing frame to {self.full_file_name.value} failed: {exc}")
            return
        await self.run_time.write(time.perf_counter() - t0)
        await self.num_captured.write(row + 1)
        target = int(self.num_capture.setpoint.value)
        if target > 0 and row + 1 >= target:
            await self.stop_capture()


# -- the microscope -------------------------------------------------------------------------
async def _put_shutter(obj: Any, instance: Any, value: str) -> None:
    await obj.readback.write(_choice(instance, value))


class TXMIOC(PVGroup):
    """The simulated transmission X-ray microscope as a Channel Access IOC.

    Parameters
    ----------
    prefix : str
        PV prefix (e.g. ``"TXM:"``).
    data_dir : str or Path
        Directory of the HDF5 files; it must exist.
    size : int
        Phantom edge in voxels = detector width/height in pixels.
    seed : int
        Seed of the phantom and of the noise (the same physics as
        :func:`bluesky_lowdose.devices.make_devices` with this seed).
    flux : float
        Detected photons per pixel per second in the open beam.
    max_attenuation : float
        Attenuation (mu * path) at the most absorbing pixel.
    time_scale : float
        Fraction of the exposure time the camera really waits (0: instant).
    readout_time : float
        Seconds each frame takes to read out after its exposure (a real camera's few ms).
    rotation_velocity : float
        Initial ``{P}rot.VELO`` (deg/s).
    sample_velocity : float
        Initial ``{P}samx.VELO`` (mm/s).
    in_position : float
        Sample-stage position (mm) at which the sample is centred in the beam.
    **kwargs
        Passed to :class:`caproto.server.PVGroup`.
    """

    rot = SubGroup(
        SimMotorRecord, prefix="rot", velocity=180.0, limits=(-720.0, 720.0), egu="deg", doc="rotation"
    )
    samx = SubGroup(
        SimMotorRecord, prefix="samx", velocity=25.0, limits=(-100.0, 100.0), egu="mm", doc="sample stage"
    )
    shutter = _enum("shutter", "Close", SHUTTER, "beam shutter", put=_put_shutter)
    cam = SubGroup(AreaDetectorCam, prefix="cam1:", doc="camera")
    hdf1 = SubGroup(HDF5FilePlugin, prefix="HDF1:", doc="HDF5 file plugin")
    data_dir = _text_ro("data_dir", "", "data directory of the IOC (root of the file path)")

    def __init__(
        self,
        prefix: str,
        *,
        data_dir: str | Path,
        size: int = 128,
        seed: int = 0,
        flux: float = 300.0,
        max_attenuation: float = 2.5,
        time_scale: float = 0.0,
        readout_time: float = 0.005,
        rotation_velocity: float | None = None,
        sample_velocity: float | None = None,
        in_position: float = 0.0,
        **kwargs: Any,
    ) -> None:
        from ..physics import DetectorModel, TXMPhysics, make_phantom

        directory = Path(data_dir).expanduser().resolve()
        if not directory.is_dir():
            raise ValueError(f"data directory {str(directory)!r} does not exist")
        if int(size) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        if time_scale < 0 or readout_time < 0:
            raise ValueError(f"time_scale and readout_time must be >= 0, got {time_scale}, {readout_time}")
        super().__init__(prefix, **kwargs)
        self.data_directory = directory
        self.time_scale = float(time_scale)
        self.readout_time = float(readout_time)
        self.in_position = float(in_position)
        self.physics = TXMPhysics(
            make_phantom(int(size), seed=seed),
            DetectorModel((int(size), int(size)), flux=flux, seed=seed + 1),
            max_attenuation=max_attenuation,
            seed=seed + 2,
        )
        if rotation_velocity is not None:
            self.rot.velocity = float(rotation_velocity)
        if sample_velocity is not None:
            self.samx.velocity = float(sample_velocity)

    @data_dir.startup
    async def data_dir(self, instance: Any, async_lib: Any) -> None:
        """Startup hook: publish the data directory and frame size, point ``FilePath`` at the directory.

        Parameters
        ----------
        instance : caproto.server.PvpropertyData
            The ``data_dir`` PV.
        async_lib : caproto.server.AsyncLibraryLayer
            The server's async library.
        """
        ny, nx = self.physics.shape
        root = str(self.data_directory) + os.sep
        await instance.write(root)
        for prop, value in (
            (self.cam.max_size_x, nx),
            (self.cam.max_size_y, ny),
            (self.cam.array_size_x, nx),
            (self.cam.array_size_y, ny),
            (self.cam.size_x.setpoint, nx),
            (self.cam.size_y.setpoint, ny),
            # a primed plugin (ophyd's HDF5Plugin refuses to stage with an empty ArraySize)
            (self.hdf1.array_size0, nx),
            (self.hdf1.array_size1, ny),
            (self.hdf1.file_path.setpoint, root),
        ):
            await prop.write(value)

    @property
    def pv_names(self) -> list[str]:
        """Every PV this IOC serves (record fields excluded)."""
        return list(self.pvdb)

    def may_create(self, directory: Path) -> bool:
        """Whether the IOC may create ``directory`` (it lies inside the data directory).

        Parameters
        ----------
        directory : Path
            A directory.

        Returns
        -------
        bool
            True inside the data directory.
        """
        try:
            directory.resolve().relative_to(self.data_directory)
        except ValueError:
            return False
        return True

    def expose(self, exposure: float) -> np.ndarray:
        """One frame of the physics at the current rotation, sample position and shutter state.

        Parameters
        ----------
        exposure : float
            Exposure time (s).

        Returns
        -------
        numpy.ndarray
            The noisy uint16 frame.
        """
        angle = self.rot.position
        offset = self.samx.position - self.in_position
        is_open = _choice(self.shutter.readback) == "Open"
        return self.physics.frame(angle, exposure, shutter_open=is_open, sample_offset_mm=offset)

    def close_files(self) -> None:
        """Close the file plugin's open file (at shutdown, outside the event loop)."""
        self.hdf1.close_file()
