"""Bluesky plans for low-dose tomography.

Plans take protocol-typed devices (``bluesky.protocols``) and import no device classes and
no CNN, so they run unchanged on the simulated TXM and on real ophyd devices.
"""

from ..streams import PRIMARY, STREAM_ORDER, dark_stream, flat_stream, reference_stream
from .patterns import dose_accounting, rotation_angles, validate_scan_parameters
from .tomo import lowdose_tomo_scan, rotation_scan, take_darks, take_flats, take_reference_frames

__all__ = [
    "PRIMARY",
    "STREAM_ORDER",
    "dark_stream",
    "dose_accounting",
    "flat_stream",
    "lowdose_tomo_scan",
    "reference_stream",
    "rotation_angles",
    "rotation_scan",
    "take_darks",
    "take_flats",
    "take_reference_frames",
    "validate_scan_parameters",
]
