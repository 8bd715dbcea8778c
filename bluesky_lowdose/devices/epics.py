"""The microscope over EPICS, built from stock ophyd classes as a beamline profile builds it.

Nothing here knows about the simulator: the same classes drive the IOC of
:mod:`bluesky_lowdose.ioc` and a real microscope whose PVs follow the usual conventions (motor
records, an enum shutter with a readback, an areaDetector camera with an HDF5 file plugin).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ophyd import EpicsMotor, EpicsSignal, EpicsSignalRO, Staged
from ophyd.areadetector import ADComponent, DetectorBase, SingleTrigger
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin
from ophyd.device import do_not_wait_for_lazy_connection
from ophyd.status import DeviceStatus

from . import TXMDevices

__all__ = ["DATE_SUBDIRECTORIES", "HDF5PluginWithFileStore", "TXMCamera", "make_epics_devices"]

#: strftime template of the per-day folders the camera writes into, below the data directory.
DATE_SUBDIRECTORIES = "%Y/%m/%d/"


class HDF5PluginWithFileStore(HDF5Plugin, FileStoreHDF5IterativeWrite):
    """The HDF5 file plugin announcing its files with Resource/Datum documents (spec ``AD_HDF5``).

    Lazy signals do not wait for their PV when first touched (ophyd's default waits 1 s and
    raises, which a busy machine missed): :func:`make_epics_devices` waits for the ones it uses
    with its own ``connection_timeout``, and every ``get``/``put`` waits for its PV anyway.
    """

    lazy_wait_for_connection = False


class _Camera(AreaDetectorCam):
    """The areaDetector camera driver, with lazy signals that do not wait (as the HDF5 plugin)."""

    lazy_wait_for_connection = False


class TXMCamera(SingleTrigger, DetectorBase):
    """The TXM camera: one frame per trigger, written by the HDF5 plugin.

    ``hdf1``'s write path is a placeholder until :func:`make_epics_devices` sets it from the
    data directory (a profile with a fixed directory would give it here).
    """

    lazy_wait_for_connection = False
    cam = ADComponent(_Camera, "cam1:")
    hdf1 = ADComponent(HDF5PluginWithFileStore, "HDF1:", write_path_template=DATE_SUBDIRECTORIES)

    def trigger(self) -> DeviceStatus:
        """Take one frame; the status finishes when ``Acquire_RBV`` falls back to 0.

        ``SingleTrigger.trigger`` ends with ``return self._status``, which its ``Acquire_RBV``
        callback sets to None when the acquisition ends before ``trigger`` returns (a fast
        camera, or a descheduled caller): the RunEngine then gets None. This is the same
        method holding its own reference to the status.

        Returns
        -------
        DeviceStatus
            Finished when the frame has been taken and written.
        """
        if self._staged != Staged.yes:
            raise RuntimeError(f"{self.name} is not staged: stage it before triggering")
        status = self._status = self._status_type(self)
        self._acquisition_signal.put(1, wait=False)
        self.generate_datum(self._image_name, time.time(), {})
        return status


#: PVs that stand for the camera while waiting for the IOC (before the camera is built).
_CAMERA_PROBES = ("cam1:Acquire_RBV", "cam1:ArrayCounter_RBV", "HDF1:PluginType_RBV", "HDF1:Capture_RBV")

#: Camera signals that staging, triggering and describing the camera use (the rest are lazy).
_CAMERA_SIGNALS = (
    "cam.acquire",
    "cam.acquire_time",
    "cam.acquire_period",
    "cam.image_mode",
    "cam.num_images",
    "cam.array_counter",
    "cam.array_callbacks",
    "cam.array_size.array_size_x",
    "cam.array_size.array_size_y",
    "cam.data_type",
    "cam.port_name",
    "hdf1.enable",
    # the plugin's stage reads these; they belong to a generated sub-device whose lazy signals
    # wait only ophyd's default 1 s when first touched (a loaded machine missed it mid-scan)
    "hdf1.array_size.height",
    "hdf1.array_size.width",
    "hdf1.array_size.depth",
    "hdf1.file_path",
    "hdf1.file_path_exists",
    "hdf1.file_name",
    "hdf1.file_number",
    "hdf1.file_template",
    "hdf1.file_write_mode",
    "hdf1.capture",
    "hdf1.nd_array_port",
    "hdf1.port_name",
)


def _wait_for_connections(signals: list[Any], timeout: float, prefix: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(sig.connected for sig in signals):
            return
        time.sleep(0.05)
    missing = sorted({pv for sig in signals if not sig.connected for pv in _pv_names(sig)})
    if missing:
        addr = os.environ.get("EPICS_CA_ADDR_LIST", "<unset>")
        raise TimeoutError(
            f"the TXM at EPICS prefix {prefix!r} did not answer within {timeout:g} s: "
            f"{len(missing)} PVs not connected: {', '.join(missing)}. Is the IOC running "
            f"(`lowdose-tomo ioc --prefix {prefix} --data-dir DIR`) and reachable "
            f"(EPICS_CA_ADDR_LIST={addr})?"
        )


def _pv_names(sig: Any) -> list[str]:
    names = [getattr(sig, "pvname", None), getattr(sig, "setpoint_pvname", None)]
    return [n for n in names if n]


def make_epics_devices(
    prefix: str,
    *,
    write_path: str | None = None,
    read_path: str | None = None,
    connection_timeout: float = 5.0,
) -> TXMDevices:
    """Connect to the microscope's PVs under ``prefix``.

    The devices are stock ophyd: :class:`ophyd.EpicsMotor` ``rotation`` (``{P}rot``, deg) and
    ``sample_x`` (``{P}samx``, mm), an :class:`ophyd.EpicsSignal` ``shutter``
    (``{P}shutter``, read back from ``{P}shutter_RBV``; ``"Open"``/``"Close"``) and
    :class:`TXMCamera` ``txm_cam`` (``{P}cam1:`` and ``{P}HDF1:``; image key
    ``txm_cam_image``, frames in HDF5 files announced as ``AD_HDF5`` Resource/Datum).

    Parameters
    ----------
    prefix : str
        PV prefix of the microscope, e.g. ``"TXM:"``.
    write_path : str, optional
        Directory the camera writes to, as the IOC sees it; files go to its
        ``YYYY/MM/DD/`` subfolders. Default: the IOC's data directory (``{P}data_dir``).
    read_path : str, optional
        The same directory as this machine sees it (default: ``write_path``); it is the
        ``root`` of the Resource documents.
    connection_timeout : float
        Seconds to wait for all PVs.

    Returns
    -------
    TXMDevices
        ``detector``, ``rotation``, ``shutter``, ``sample_stage``; ``physics`` is None and
        :meth:`~TXMDevices.plan_kwargs` gives the shutter's ``"Open"``/``"Close"``.

    Raises
    ------
    TimeoutError
        When PVs do not connect in time; the message names them.
    """
    rotation = EpicsMotor(f"{prefix}rot", name="rotation")
    sample_stage = EpicsMotor(f"{prefix}samx", name="sample_x")
    shutter = EpicsSignal(f"{prefix}shutter_RBV", write_pv=f"{prefix}shutter", name="shutter", string=True)
    # The camera's components connect as they are created (and fail one by one after ophyd's
    # default timeout): first wait for all devices in parallel, with probes for the camera.
    probes = [
        EpicsSignalRO(f"{prefix}{suffix}", name=f"probe_{i}") for i, suffix in enumerate(_CAMERA_PROBES)
    ]
    data_dir = EpicsSignalRO(f"{prefix}data_dir", name="txm_data_dir", string=True)
    signals: list[Any] = [shutter, *probes]
    for device in (rotation, sample_stage):
        signals += [walk.item for walk in device.walk_signals()]
    if write_path is None:
        signals.append(data_dir)
    try:
        _wait_for_connections(signals, connection_timeout, prefix)
        detector = TXMCamera(prefix, name="txm_cam", read_attrs=["hdf1"])
        camera_signals = [walk.item for walk in detector.walk_signals()]
        _wait_for_connections(camera_signals + [_component(detector, n) for n in _CAMERA_SIGNALS],
                              connection_timeout, prefix)  # fmt: skip
        for device in (rotation, sample_stage, detector):  # also runs ophyd's connection callbacks
            device.wait_for_connection(timeout=connection_timeout)
        if write_path is None:
            write_path = str(data_dir.get())
    except BaseException:
        for device in (rotation, sample_stage, shutter):  # stop their searches
            device.destroy()
        raise
    finally:
        for probe in (*probes, data_dir):
            probe.destroy()
    if not write_path:
        raise ValueError(f"{prefix}data_dir is empty: give write_path")
    read_root = read_path or write_path
    hdf = detector.hdf1
    hdf.reg_root = read_root
    hdf.write_path_template = os.path.join(write_path, DATE_SUBDIRECTORIES)
    hdf.read_path_template = None if read_path is None else os.path.join(read_path, DATE_SUBDIRECTORIES)
    return TXMDevices(
        detector=detector,
        rotation=rotation,
        shutter=shutter,
        sample_stage=sample_stage,
        shutter_open="Open",
        shutter_close="Close",
    )


def _component(device: Any, dotted: str) -> Any:
    """The signal at ``dotted``, created without ophyd's 1-s wait (waited for by the caller)."""
    for part in dotted.split("."):
        with do_not_wait_for_lazy_connection(device):
            device = getattr(device, part)
    return device
