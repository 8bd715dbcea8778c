"""PV helpers and enum strings shared by the IOC's PV groups (areaDetector conventions)."""

from __future__ import annotations

from typing import Any

from caproto import ChannelType
from caproto.server import get_pv_pair_wrapper, pvproperty

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
