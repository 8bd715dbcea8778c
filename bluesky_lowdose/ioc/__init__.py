"""A Channel Access IOC of the simulated transmission X-ray microscope (caproto).

Real EPICS for the simulator: motor records, a shutter, an areaDetector-shaped camera and
an HDF5 file plugin, served by caproto and driven by stock ophyd classes
(:func:`bluesky_lowdose.devices.make_epics_devices`). Start it with
``lowdose-tomo ioc --prefix TXM: --data-dir DIR`` or ``python -m bluesky_lowdose.ioc``.

Importing this package starts nothing and loads no caproto or h5py: the PV groups
(:class:`TXMIOC` in ``server``; its parts in ``motor``, ``camera``, ``hdf5``, with the shared
PV helpers in ``pvs``, one PV group per module as in caproto's ``ioc_examples``) are imported
on first use. Build a :class:`TXMIOC` and serve it with :func:`run_ioc`.
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from .cli import LOOPBACK_ENV, configure_parser, loopback_environment, run, run_ioc

__all__ = [
    "IMAGE_DATASET",
    "LOOPBACK_ENV",
    "TXMIOC",
    "AreaDetectorCam",
    "HDF5FilePlugin",
    "SimMotorRecord",
    "configure_parser",
    "loopback_environment",
    "run",
    "run_ioc",
]

_LAZY = {"IMAGE_DATASET": "pvs", "TXMIOC": "server", "AreaDetectorCam": "camera", "HDF5FilePlugin": "hdf5",
         "SimMotorRecord": "motor"}  # fmt: skip

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
