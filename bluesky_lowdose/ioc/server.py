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

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from caproto.server import PVGroup, SubGroup

from .camera import AreaDetectorCam
from .hdf5 import HDF5FilePlugin
from .motor import SimMotorRecord
from .pvs import (
    IMAGE_DATASET,
    SHUTTER,
    _choice,
    _enum,
    _text_ro,
)

__all__ = ["IMAGE_DATASET", "TXMIOC", "AreaDetectorCam", "HDF5FilePlugin", "SimMotorRecord"]

logger = logging.getLogger("bluesky_lowdose.ioc.server")  # one logger for the IOC


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
