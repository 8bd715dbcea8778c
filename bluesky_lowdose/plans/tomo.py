"""The low-dose tomography plan and the sub-plans it is made of.

The plans take any devices that follow the bluesky protocols, so they run unchanged on
the simulated TXM and on real ophyd devices: a ``Triggerable``/``Readable`` detector with
an ``exposure_time`` signal, ``Movable`` rotation and sample stages, and a ``Movable``
shutter that accepts ``"open"`` / ``"close"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import MsgGenerator

from .patterns import ScanParameters, dose_accounting, rotation_angles, validate_scan_parameters
from .streams import EXPOSURES, PRIMARY, STREAM_ORDER, Exposure, dark_stream, flat_stream, reference_stream

__all__ = [
    "lowdose_tomo_scan",
    "rotation_scan",
    "take_darks",
    "take_flats",
    "take_reference_frames",
]

SHUTTER_OPEN = "open"
SHUTTER_CLOSE = "close"


def _exposure_signal(detector: Any) -> Any:
    sig = getattr(detector, "exposure_time", None)
    if sig is None or not hasattr(sig, "set"):
        raise TypeError(
            f"detector {getattr(detector, 'name', detector)!r} has no settable 'exposure_time' signal"
        )
    return sig


def _check_devices(detector: Any, rotation: Any, shutter: Any, sample_stage: Any) -> None:
    if not isinstance(detector, Triggerable) or not isinstance(detector, Readable):
        raise TypeError(f"detector must be Triggerable and Readable, got {type(detector).__name__}")
    _exposure_signal(detector)
    for role, dev in (("rotation", rotation), ("shutter", shutter), ("sample_stage", sample_stage)):
        if not isinstance(dev, Movable):
            raise TypeError(f"{role} must be Movable (have a set() method), got {type(dev).__name__}")
    for role, dev in (("rotation", rotation), ("sample_stage", sample_stage)):
        if not isinstance(dev, Readable):
            raise TypeError(f"{role} must be Readable, got {type(dev).__name__}")


def take_darks(detector: Triggerable, shutter: Movable, num: int, *, stream: str) -> MsgGenerator[None]:
    """Close the shutter and take ``num`` frames into ``stream``.

    Parameters
    ----------
    detector : Triggerable
        The camera.
    shutter : Movable
        Closed before the first frame (left closed).
    num : int
        Number of dark frames (0: nothing happens).
    stream : str
        Event stream name.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if num <= 0:
        return
    yield from bps.mv(shutter, SHUTTER_CLOSE)
    yield from bps.stage(detector)
    for _ in range(num):
        yield from bps.checkpoint()
        yield from bps.trigger_and_read([detector], name=stream)
    yield from bps.unstage(detector)


def take_flats(
    detector: Triggerable,
    shutter: Movable,
    sample_stage: Movable,
    num: int,
    *,
    flat_position: float,
    sample_position: float,
    stream: str,
) -> MsgGenerator[None]:
    """Move the sample out of the beam, open the shutter and take ``num`` flat fields.

    The sample stage returns to ``sample_position`` afterwards.

    Parameters
    ----------
    detector : Triggerable
        The camera.
    shutter : Movable
        Opened for the flats.
    sample_stage : Movable
        The stage that moves the sample out of the beam.
    num : int
        Number of flat fields (0: nothing happens).
    flat_position : float
        Sample-stage position with the sample out of the field of view.
    sample_position : float
        Sample-stage position with the sample in the beam.
    stream : str
        Event stream name.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if num <= 0:
        return
    yield from bps.mv(sample_stage, flat_position)
    yield from bps.mv(shutter, SHUTTER_OPEN)
    yield from bps.stage(detector)
    for _ in range(num):
        yield from bps.checkpoint()
        yield from bps.trigger_and_read([detector], name=stream)
    yield from bps.unstage(detector)
    yield from bps.mv(sample_stage, sample_position)


def rotation_scan(
    detector: Triggerable, rotation: Movable, angles: Sequence[float], *, stream: str = PRIMARY
) -> MsgGenerator[None]:
    """Step the rotation through ``angles``, reading detector and rotation at each.

    A checkpoint precedes every angle, so a pause/resume re-takes at most the current
    frame and never duplicates an event.

    Parameters
    ----------
    detector : Triggerable
        The camera (shutter open, sample in the beam).
    rotation : Movable
        The rotation stage; its readback goes into each event as the projection angle.
    angles : sequence of float
        Angles in degrees.
    stream : str
        Event stream name.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    yield from bps.stage(detector)
    for angle in angles:
        yield from bps.checkpoint()
        yield from bps.mv(rotation, float(angle))
        yield from bps.trigger_and_read([detector, rotation], name=stream)
    yield from bps.unstage(detector)


def take_reference_frames(
    detector: Triggerable, rotation: Movable, angles: Sequence[float], *, stream: str
) -> MsgGenerator[None]:
    """Take frames at the reference angles (the training pairs), one stream per exposure.

    Parameters
    ----------
    detector : Triggerable
        The camera, already set to the exposure of this stream.
    rotation : Movable
        The rotation stage.
    angles : sequence of float
        Reference angles in degrees.
    stream : str
        Event stream name.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if len(angles) == 0:
        return
    yield from rotation_scan(detector, rotation, angles, stream=stream)


def lowdose_tomo_scan(
    detector: Triggerable,
    rotation: Movable,
    shutter: Movable,
    sample_stage: Movable,
    *,
    start: float = 0.0,
    stop: float = 180.0,
    num_angles: int = 361,
    short_exposure: float = 2.0,
    long_exposure: float = 30.0,
    reference_angles: Sequence[float] = (30.0, 120.0),
    num_darks: int = 10,
    num_flats: int = 10,
    flat_position: float = 5.0,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Low-dose tomography: long/short reference pairs, then a short-exposure rotation.

    One run with these streams, in order (names in :mod:`bluesky_lowdose.plans.streams`):
    for the long and then the short exposure, darks (shutter closed), flats (sample moved
    to ``flat_position``) and one frame at each reference angle; then ``primary``, the full
    rotation at the short exposure. The reference pairs come before the rotation so that a
    streaming enhancer can train while the rotation runs. The shutter closes and both stages
    return to where they started even when the plan fails or is aborted.

    All parameters are validated before anything moves.

    Parameters
    ----------
    detector : Triggerable
        Camera with a settable ``exposure_time`` (seconds).
    rotation : Movable
        Rotation stage in degrees.
    shutter : Movable
        Beam shutter accepting ``"open"`` and ``"close"``.
    sample_stage : Movable
        Translation stage that takes the sample out of the beam for flat fields.
    start : float
        First rotation angle in degrees.
    stop : float
        Last rotation angle in degrees (included).
    num_angles : int
        Number of short-exposure projections (>= 2).
    short_exposure : float
        Short (low-dose) exposure time in seconds (> 0).
    long_exposure : float
        Long (reference) exposure time in seconds (> ``short_exposure``).
    reference_angles : sequence of float
        Angles of the long/short training pairs, within ``[start, stop]``, no duplicates.
    num_darks : int
        Dark frames per exposure time (>= 0).
    num_flats : int
        Flat fields per exposure time (>= 0).
    flat_position : float
        Sample-stage position with the sample out of the beam (device units, e.g. mm).
    md : dict, optional
        Extra metadata for the start document (not mutated).

    Returns
    -------
    MsgGenerator[str]
        The plan; running it returns the run uid.

    Raises
    ------
    TypeError
        A device does not follow the needed protocol or a parameter has the wrong type.
    ValueError
        A parameter is out of range (see :func:`~bluesky_lowdose.plans.patterns.validate_scan_parameters`).

    See Also
    --------
    take_darks : Dark frames with the shutter closed.
    take_flats : Flat fields with the sample out of the beam.
    take_reference_frames : The long/short training pairs.
    rotation_scan : The short-exposure rotation.

    Examples
    --------
    >>> RE(lowdose_tomo_scan(det, rot, shutter, sample, num_angles=181))  # doctest: +SKIP
    """
    params = validate_scan_parameters(
        start=start,
        stop=stop,
        num_angles=num_angles,
        short_exposure=short_exposure,
        long_exposure=long_exposure,
        reference_angles=reference_angles,
        num_darks=num_darks,
        num_flats=num_flats,
        flat_position=flat_position,
    )
    _check_devices(detector, rotation, shutter, sample_stage)
    if md is not None and not isinstance(md, dict):
        raise TypeError(f"md must be a dict, got {type(md).__name__}")
    _md = _start_metadata(params, detector, rotation, shutter, sample_stage)
    _md.update(md or {})
    return _lowdose_tomo_scan(detector, rotation, shutter, sample_stage, params, _md)


def _name(dev: Any) -> str:
    return str(getattr(dev, "name", repr(dev)))


def _start_metadata(
    params: ScanParameters, detector: Any, rotation: Any, shutter: Any, sample_stage: Any
) -> dict[str, Any]:
    hints_fields = getattr(rotation, "hints", {}).get("fields", [_name(rotation)])
    return {
        "plan_name": "lowdose_tomo_scan",
        "plan_args": {
            "detector": repr(detector),
            "rotation": repr(rotation),
            "shutter": repr(shutter),
            "sample_stage": repr(sample_stage),
            "start": params.start,
            "stop": params.stop,
            "num_angles": params.num_angles,
            "short_exposure": params.short_exposure,
            "long_exposure": params.long_exposure,
            "reference_angles": list(params.reference_angles),
            "num_darks": params.num_darks,
            "num_flats": params.num_flats,
            "flat_position": params.flat_position,
        },
        "plan_type": "generator",
        "plan_pattern": "linspace",
        "plan_pattern_module": "numpy",
        "plan_pattern_args": {"start": params.start, "stop": params.stop, "num": params.num_angles},
        "detectors": [_name(detector)],
        "motors": [_name(rotation)],
        "num_points": params.num_angles,
        "num_intervals": params.num_angles - 1,
        "hints": {"dimensions": [(list(hints_fields), PRIMARY)]},
        "lowdose": {
            "short_exposure": params.short_exposure,
            "long_exposure": params.long_exposure,
            "reference_angles": list(params.reference_angles),
            "num_angles": params.num_angles,
            "num_darks": params.num_darks,
            "num_flats": params.num_flats,
            "streams": list(STREAM_ORDER),
            "detector": _name(detector),
            "rotation": _name(rotation),
            "dose": dose_accounting(params),
        },
    }


def _lowdose_tomo_scan(
    detector: Any, rotation: Any, shutter: Any, sample_stage: Any, params: ScanParameters, md: dict[str, Any]
) -> MsgGenerator[str]:
    exposure_signal = _exposure_signal(detector)
    exposure_of: dict[Exposure, float] = {"short": params.short_exposure, "long": params.long_exposure}
    angles = rotation_angles(params.start, params.stop, params.num_angles)
    initial: dict[str, float] = {}

    def inner() -> MsgGenerator[None]:
        initial["rotation"] = yield from bps.rd(rotation)
        initial["sample"] = yield from bps.rd(sample_stage)
        for exposure in EXPOSURES:
            yield from bps.mv(exposure_signal, exposure_of[exposure])
            yield from take_darks(detector, shutter, params.num_darks, stream=dark_stream(exposure))
            yield from take_flats(
                detector,
                shutter,
                sample_stage,
                params.num_flats,
                flat_position=params.flat_position,
                sample_position=initial["sample"],
                stream=flat_stream(exposure),
            )
            yield from bps.mv(shutter, SHUTTER_OPEN)
            yield from take_reference_frames(
                detector, rotation, params.reference_angles, stream=reference_stream(exposure)
            )
        yield from rotation_scan(detector, rotation, angles, stream=PRIMARY)
        yield from bps.mv(shutter, SHUTTER_CLOSE)
        return None

    def cleanup() -> MsgGenerator[None]:
        yield from bps.mv(shutter, SHUTTER_CLOSE)
        moves: list[Any] = []
        if "rotation" in initial:
            moves += [rotation, initial["rotation"]]
        if "sample" in initial:
            moves += [sample_stage, initial["sample"]]
        if moves:
            yield from bps.mv(*moves)

    @bpp.run_decorator(md=md)
    def run() -> MsgGenerator[str]:
        return (yield from bpp.finalize_wrapper(inner(), cleanup()))

    uid = yield from run()
    return uid
