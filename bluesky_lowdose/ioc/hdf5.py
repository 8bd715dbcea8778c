"""The IOC's HDF5 file plugin (areaDetector's NDFileHDF5 PVs, SWMR files)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from .pvs import (
    _PATH_LENGTH,
    CAPTURE,
    COLOR_MODE,
    COMPRESSION,
    DATA_TYPE,
    ENABLE,
    FILE_WRITE_MODE,
    IMAGE_DATASET,
    NO_YES,
    WRITE,
    _choice,
    _enum,
    _enum_ro,
    _text,
    _text_ro,
    pvproperty_with_rbv,
)

__all__ = ["HDF5FilePlugin"]

logger = logging.getLogger("bluesky_lowdose.ioc.server")  # one logger for the IOC


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
