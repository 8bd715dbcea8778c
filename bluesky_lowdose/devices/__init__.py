"""ophyd devices of the simulated TXM and the factory that builds them.

Nothing is created at import time: call :func:`make_devices` (the simulator in this process)
or :func:`make_epics_devices` (stock ophyd EPICS classes, e.g. against ``lowdose-tomo ioc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TXMDevices", "make_devices", "make_epics_devices"]


@dataclass
class TXMDevices:
    """The named devices of one microscope.

    Attributes
    ----------
    detector, rotation, shutter, sample_stage : ophyd.Device
        The camera, the rotation stage (deg), the shutter and the sample translation
        stage (mm).
    physics : bluesky_lowdose.physics.TXMPhysics or None
        The simulator behind the devices (None on real hardware).
    shutter_open, shutter_close : object
        The values the shutter takes to open and to close (``"open"``/``"close"`` on the
        simulator, e.g. ``1``/``0`` or ``"Open"``/``"Close"`` on an EPICS shutter): pass them
        to the plan with :meth:`plan_kwargs`.
    """

    detector: Any
    rotation: Any
    shutter: Any
    sample_stage: Any
    physics: Any = None
    shutter_open: Any = "open"
    shutter_close: Any = "close"

    def plan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~bluesky_lowdose.plans.lowdose_tomo_scan` these devices need."""
        return {"shutter_open": self.shutter_open, "shutter_close": self.shutter_close}

    def as_dict(self) -> dict[str, Any]:
        """The devices by their ophyd names, e.g. for a queueserver namespace."""
        return {d.name: d for d in (self.detector, self.rotation, self.shutter, self.sample_stage)}


def make_devices(
    data_dir: str | Path,
    *,
    size: int = 128,
    seed: int = 0,
    flux: float = 300.0,
    max_attenuation: float = 2.5,
    motion_delay: float = 0.0,
    time_scale: float = 0.0,
    prefix: str = "",
) -> TXMDevices:
    """Build the simulated transmission X-ray microscope.

    Parameters
    ----------
    data_dir : str or Path
        Directory for the detector's HDF5 files (give the Tiled server read access to it).
    size : int
        Phantom edge in voxels = detector width/height in pixels.
    seed : int
        Seed of the phantom and of the noise.
    flux : float
        Detected photons per pixel per second in the open beam.
    max_attenuation : float
        Attenuation (mu * path) at the most absorbing pixel.
    motion_delay : float
        Seconds per move of each stage (0: instant).
    time_scale : float
        Fraction of the exposure time the detector really waits (0: instant).
    prefix : str
        Prefix of the device names.

    Returns
    -------
    TXMDevices
        ``detector``, ``rotation``, ``shutter``, ``sample_stage`` (and ``physics``).
    """
    from ..physics import DetectorModel, TXMPhysics, make_phantom
    from .txm import SimRotationStage, SimSampleStage, SimShutter, SimTXMDetector

    phantom = make_phantom(size, seed=seed)
    physics = TXMPhysics(
        phantom,
        DetectorModel((size, size), flux=flux, seed=seed + 1),
        max_attenuation=max_attenuation,
        seed=seed + 2,
    )
    rotation = SimRotationStage(name=f"{prefix}rotation", delay=motion_delay)
    sample_stage = SimSampleStage(name=f"{prefix}sample_x", delay=motion_delay)
    shutter = SimShutter(name=f"{prefix}shutter")
    detector = SimTXMDetector(
        physics,
        rotation,
        shutter,
        sample_stage,
        root=Path(data_dir),
        name=f"{prefix}txm_cam",
        time_scale=time_scale,
    )
    return TXMDevices(
        detector=detector, rotation=rotation, shutter=shutter, sample_stage=sample_stage, physics=physics
    )


def make_epics_devices(
    prefix: str,
    *,
    write_path: str | None = None,
    read_path: str | None = None,
    connection_timeout: float = 5.0,
) -> TXMDevices:
    """Connect to the microscope's EPICS PVs under ``prefix`` (see :func:`.epics.make_epics_devices`).

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"TXM:"``.
    write_path : str, optional
        Directory the camera writes to, as the IOC sees it (default: the IOC's ``{P}data_dir``).
    read_path : str, optional
        The same directory as this machine sees it (default: ``write_path``).
    connection_timeout : float
        Seconds to wait for all PVs.

    Returns
    -------
    TXMDevices
        ``EpicsMotor`` rotation and sample stage, ``EpicsSignal`` shutter, ``TXMCamera``.
    """
    from .epics import make_epics_devices as _make

    return _make(prefix, write_path=write_path, read_path=read_path, connection_timeout=connection_timeout)
