"""The IOC's areaDetector-shaped camera."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from .pvs import (
    _PATH_LENGTH,
    ACQUIRE,
    COLOR_MODE,
    DATA_TYPE,
    DETECTOR_STATE,
    ENABLE,
    IMAGE_MODE,
    TRIGGER_MODE,
    _choice,
    _enum,
    _enum_ro,
    _text_ro,
    pvproperty_with_rbv,
)

__all__ = ["AreaDetectorCam"]

logger = logging.getLogger("bluesky_lowdose.ioc.server")  # one logger for the IOC


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
        ioc = self.parent  # the TXMIOC (server.py), which composes this camera
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
