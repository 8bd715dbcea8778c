"""Stream names of a low-dose run (re-exported from :mod:`bluesky_lowdose.streams`)."""

from ..streams import (
    EXPOSURES,
    PRIMARY,
    STREAM_ORDER,
    Exposure,
    dark_stream,
    flat_stream,
    reference_stream,
)

__all__ = [
    "EXPOSURES",
    "PRIMARY",
    "STREAM_ORDER",
    "Exposure",
    "dark_stream",
    "flat_stream",
    "reference_stream",
]
