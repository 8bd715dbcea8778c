"""Names of the event streams of a low-dose tomography run (defined once, used everywhere).

==================  ===========================================================
stream              content
==================  ===========================================================
``dark_long``       shutter closed, long exposure
``flat_long``       sample out of the beam, long exposure
``reference_long``  sample in, long exposure at each reference angle
``dark_short``      shutter closed, short exposure
``flat_short``      sample out of the beam, short exposure
``reference_short`` sample in, short exposure at each reference angle
``primary``         the full short-exposure rotation
==================  ===========================================================
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "EXPOSURES",
    "PRIMARY",
    "STREAM_ORDER",
    "Exposure",
    "dark_stream",
    "flat_stream",
    "reference_stream",
]

Exposure = Literal["short", "long"]

#: The two exposure kinds, in acquisition order.
EXPOSURES: tuple[Exposure, Exposure] = ("long", "short")

#: The full short-exposure rotation.
PRIMARY = "primary"


def dark_stream(exposure: Exposure) -> str:
    """Stream name of the dark fields of one exposure kind ("short" or "long")."""
    return f"dark_{_check(exposure)}"


def flat_stream(exposure: Exposure) -> str:
    """Stream name of the flat fields of one exposure kind."""
    return f"flat_{_check(exposure)}"


def reference_stream(exposure: Exposure) -> str:
    """Stream name of the reference (training-pair) frames of one exposure kind."""
    return f"reference_{_check(exposure)}"


def _check(exposure: str) -> str:
    if exposure not in EXPOSURES:
        raise ValueError(f"exposure kind must be 'short' or 'long', got {exposure!r}")
    return exposure


#: Every stream in the order the plan acquires them.
STREAM_ORDER: tuple[str, ...] = (
    *(name for e in EXPOSURES for name in (dark_stream(e), flat_stream(e), reference_stream(e))),
    PRIMARY,
)
