"""The low-dose tomography plan and the sub-plans it is made of.

The plans take any devices that follow the bluesky protocols, so they run unchanged on the
simulated TXM, on ophyd areaDetector/EPICS devices, on ophyd-async devices and on a caller's own
protocol devices. What each role needs is listed in ``docs/plans.md`` and checked before the
first message:

- detector: ``Triggerable`` and ``Readable``; its exposure is set through
  ``prepare(TriggerInfo(livetime=...))`` (ophyd-async), ``cam.acquire_time``/``acquire_period``
  (ophyd areaDetector), a settable ``exposure_time`` (the simulator) or the caller's
  ``exposure_signal`` (see :func:`~bluesky_lowdose.plans.plan_stubs.exposure_control`);
- rotation and sample stage: ``Movable`` and ``Readable``;
- shutter: ``Movable``, taking ``shutter_open``/``shutter_close`` (``"open"``/``"close"`` by
  default; ``1``/``0`` or ``"Open"``/``"Close"`` on real shutters). It closes whenever the
  RunEngine pauses and reopens before the next exposure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import MsgGenerator

from ..streams import EXPOSURES, PRIMARY, STREAM_ORDER, Exposure, dark_stream, flat_stream, reference_stream
from .patterns import (
    ScanParameters,
    check_metadata,
    dose_accounting,
    rotation_angles,
    validate_scan_parameters,
)
from .plan_stubs import (
    ExposureControl,
    PauseClosingShutter,
    check_shutter_values,
    exposure_control,
    move,
    rotation_frames,
    take_frames,
)

__all__ = [
    "lowdose_tomo_scan",
    "rotation_scan",
    "take_darks",
    "take_flats",
    "take_reference_frames",
]

logger = logging.getLogger(__name__)

SHUTTER_OPEN = "open"
SHUTTER_CLOSE = "close"
#: Seconds any move or frame (beyond its exposure) may take by default.
DEFAULT_TIMEOUT = 60.0


def _check_devices(detector: Any, rotation: Any, shutter: Any, sample_stage: Any) -> None:
    if not isinstance(detector, Triggerable) or not isinstance(detector, Readable):
        raise TypeError(f"detector must be Triggerable and Readable, got {type(detector).__name__}")
    for role, dev in (("rotation", rotation), ("shutter", shutter), ("sample_stage", sample_stage)):
        if not isinstance(dev, Movable):
            raise TypeError(f"{role} must be Movable (have a set() method), got {type(dev).__name__}")
    for role, dev in (("rotation", rotation), ("sample_stage", sample_stage)):
        if not isinstance(dev, Readable):
            raise TypeError(f"{role} must be Readable, got {type(dev).__name__}")


def _control(detector: Any, exposure: float | None, exposure_signal: Any) -> ExposureControl | None:
    """How to set ``exposure`` on this detector (None: the exposure is left as it is)."""
    return exposure_control(detector, exposure_signal) if exposure is not None else None


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds or None, got {timeout!r}")


def take_darks(
    detector: Triggerable,
    shutter: Movable,
    num: int,
    *,
    stream: str,
    exposure: float | None = None,
    exposure_signal: Movable | None = None,
    shutter_close: Any = SHUTTER_CLOSE,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> MsgGenerator[None]:
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
    exposure : float, optional
        Exposure time in seconds, set after staging (None: as it is).
    exposure_signal : Movable, optional
        Where the exposure goes, for detectors the plan cannot recognise.
    shutter_close : object
        The shutter's closed value.
    timeout : float, optional
        Seconds a move or a frame may take beyond its exposure (None: no limit).

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if num <= 0:
        return
    yield from move(shutter, shutter_close, timeout=timeout)
    control = _control(detector, exposure, exposure_signal)
    yield from take_frames(detector, num, stream=stream, exposure=control, seconds=exposure, timeout=timeout)


def take_flats(
    detector: Triggerable,
    shutter: Movable,
    sample_stage: Movable,
    num: int,
    *,
    flat_position: float,
    sample_position: float,
    stream: str,
    exposure: float | None = None,
    exposure_signal: Movable | None = None,
    shutter_open: Any = SHUTTER_OPEN,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> MsgGenerator[None]:
    """Move the sample out of the beam, open the shutter and take ``num`` flat fields.

    The sample stage returns to ``sample_position`` afterwards.

    Parameters
    ----------
    detector : Triggerable
        The camera.
    shutter : Movable
        Opened for the flats (re-opened after every checkpoint: a pause closes a
        :class:`~bluesky_lowdose.plans.plan_stubs.PauseClosingShutter`).
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
    exposure : float, optional
        Exposure time in seconds, set after staging (None: as it is).
    exposure_signal : Movable, optional
        Where the exposure goes, for detectors the plan cannot recognise.
    shutter_open : object
        The shutter's open value.
    timeout : float, optional
        Seconds a move or a frame may take beyond its exposure (None: no limit).

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if num <= 0:
        return
    yield from move(sample_stage, flat_position, timeout=timeout)
    control = _control(detector, exposure, exposure_signal)
    yield from take_frames(
        detector, num, stream=stream, exposure=control, seconds=exposure,
        shutter=shutter, shutter_value=shutter_open, timeout=timeout,
    )  # fmt: skip
    yield from move(sample_stage, sample_position, timeout=timeout)


def rotation_scan(
    detector: Triggerable,
    rotation: Movable,
    angles: Sequence[float],
    *,
    stream: str = PRIMARY,
    exposure: float | None = None,
    exposure_signal: Movable | None = None,
    shutter: Movable | None = None,
    shutter_open: Any = SHUTTER_OPEN,
    timeout: float | None = DEFAULT_TIMEOUT,
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
    exposure : float, optional
        Exposure time in seconds, set after staging (None: as it is).
    exposure_signal : Movable, optional
        Where the exposure goes, for detectors the plan cannot recognise.
    shutter : Movable, optional
        Set to ``shutter_open`` after every checkpoint (None: left alone).
    shutter_open : object
        The shutter's open value.
    timeout : float, optional
        Seconds a move or a frame may take beyond its exposure (None: no limit).

    Yields
    ------
    Msg
        Bluesky messages.
    """
    control = _control(detector, exposure, exposure_signal)
    yield from rotation_frames(
        detector, rotation, angles, stream=stream, exposure=control, seconds=exposure,
        shutter=shutter, shutter_value=shutter_open, timeout=timeout,
    )  # fmt: skip


def take_reference_frames(
    detector: Triggerable, rotation: Movable, angles: Sequence[float], *, stream: str, **kwargs: Any
) -> MsgGenerator[None]:
    """Take frames at the reference angles (the training pairs), one stream per exposure.

    Parameters
    ----------
    detector : Triggerable
        The camera.
    rotation : Movable
        The rotation stage.
    angles : sequence of float
        Reference angles in degrees.
    stream : str
        Event stream name.
    **kwargs
        ``exposure``, ``exposure_signal``, ``shutter``, ``shutter_open``, ``timeout`` as in
        :func:`rotation_scan`.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if len(angles) == 0:
        return
    yield from rotation_scan(detector, rotation, angles, stream=stream, **kwargs)


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
    reference_angles: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
    num_darks: int = 10,
    num_flats: int = 10,
    flat_position: float = 5.0,
    shutter_open: Any = SHUTTER_OPEN,
    shutter_close: Any = SHUTTER_CLOSE,
    exposure_signal: Movable | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Low-dose tomography: long/short reference pairs, then a short-exposure rotation.

    One run with these streams, in order (names in :mod:`bluesky_lowdose.streams`):
    for the long and then the short exposure, darks (shutter closed), flats (sample moved
    to ``flat_position``) and one frame at each reference angle; then ``primary``, the full
    rotation at the short exposure. The reference pairs come before the rotation so that a
    streaming enhancer can train while the rotation runs. The shutter closes and both stages
    return to where they started even when the plan fails or is aborted; the shutter also
    closes whenever the RunEngine pauses (or a suspender suspends) and reopens before the next
    exposure, so a paused scan adds no dose.

    Everything is validated when the plan starts, before the first message, in the same way
    in IPython and in the queueserver.

    Parameters
    ----------
    detector : Triggerable
        Camera (ophyd-async ``Preparable``, ophyd areaDetector with ``cam.acquire_time``, or
        with a settable ``exposure_time`` in seconds; otherwise pass ``exposure_signal``).
    rotation : Movable
        Rotation stage in degrees (Readable).
    shutter : Movable
        Beam shutter accepting ``shutter_open`` and ``shutter_close``.
    sample_stage : Movable
        Translation stage (Readable) that takes the sample out of the beam for flat fields.
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
        Angles of the long/short training pairs, within ``[start, stop]``, no duplicates (four by
        default: ``auto`` judges every method by them; see docs/evaluation.md, "Four pairs").
    num_darks : int
        Dark frames per exposure time (>= 0).
    num_flats : int
        Flat fields per exposure time (>= 0).
    flat_position : float
        Sample-stage position with the sample out of the beam (device units, e.g. mm).
    shutter_open : str or int
        The value that opens the shutter (``"open"``; e.g. ``1`` or ``"Open"`` on EPICS). A
        shutter with named states takes its own spelling, matched without regard to case; the
        value used is in the start document's ``plan_args``.
    shutter_close : str or int
        The value that closes the shutter (``"close"``; e.g. ``0`` or ``"Close"``).
    exposure_signal : Movable, optional
        A signal in seconds that sets the exposure, for a detector the plan cannot recognise.
    timeout : float, optional
        Seconds any move or frame (beyond its exposure) may take before the plan fails with a
        ``TimeoutError`` naming the device (None: wait forever).
    md : dict, optional
        Extra metadata for the start document (not mutated): JSON values only (no NaN/inf), and
        none of the keys the plan writes itself (``lowdose``, ``plan_name``, ``plan_args``, ...).

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
    TimeoutError
        A move or a frame took longer than ``timeout``.

    See Also
    --------
    take_darks : Dark frames with the shutter closed.
    take_flats : Flat fields with the sample out of the beam.
    take_reference_frames : The long/short training pairs.
    rotation_scan : The short-exposure rotation.

    Examples
    --------
    >>> RE(lowdose_tomo_scan(det, rot, shutter, sample, num_angles=181))  # doctest: +SKIP
    >>> RE(lowdose_tomo_scan(det, rot, shutter, sample, shutter_open=1, shutter_close=0))  # doctest: +SKIP
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
    control = exposure_control(detector, exposure_signal)
    # the shutter's own spelling of its states ("open" -> "Open"), recorded in plan_args
    shutter_open, shutter_close = check_shutter_values(shutter, shutter_open, shutter_close)
    _check_timeout(timeout)
    extra = check_metadata(md)
    _md = _start_metadata(params, detector, rotation, shutter, sample_stage)
    _md["plan_args"].update(shutter_open=shutter_open, shutter_close=shutter_close, timeout=timeout)
    _md["lowdose"]["exposure_control"] = control.kind
    _md.update(extra)
    guard = PauseClosingShutter(shutter, shutter_open, shutter_close, timeout=timeout)
    plan = _lowdose_tomo_scan(detector, rotation, guard, sample_stage, params, _md, control, timeout)
    return (yield from plan)


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
        # readable where the epoch `time` is not (the Tiled web UI's run list)
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
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
    detector: Any,
    rotation: Any,
    shutter: PauseClosingShutter,
    sample_stage: Any,
    params: ScanParameters,
    md: dict[str, Any],
    control: ExposureControl,
    timeout: float | None,
) -> MsgGenerator[str]:
    exposure_of: dict[Exposure, float] = {"short": params.short_exposure, "long": params.long_exposure}
    angles = rotation_angles(params.start, params.stop, params.num_angles)
    initial: dict[str, float] = {}
    opened = {"shutter": shutter, "shutter_value": shutter.open_value, "timeout": timeout}

    def inner() -> MsgGenerator[None]:
        initial["rotation"] = yield from bps.rd(rotation)
        initial["sample"] = yield from bps.rd(sample_stage)
        for exposure in EXPOSURES:
            seconds = exposure_of[exposure]
            if params.num_darks:
                yield from move(shutter, shutter.close_value, timeout=timeout)
                yield from take_frames(
                    detector, params.num_darks, stream=dark_stream(exposure), exposure=control,
                    seconds=seconds, timeout=timeout,
                )  # fmt: skip
            if params.num_flats:
                yield from move(sample_stage, params.flat_position, timeout=timeout)
                yield from take_frames(
                    detector, params.num_flats, stream=flat_stream(exposure), exposure=control,
                    seconds=seconds, **opened,
                )  # fmt: skip
                yield from move(sample_stage, initial["sample"], timeout=timeout)
            yield from rotation_frames(
                detector, rotation, params.reference_angles, stream=reference_stream(exposure),
                exposure=control, seconds=seconds, **opened,
            )  # fmt: skip
        yield from rotation_frames(
            detector, rotation, angles, stream=PRIMARY, exposure=control,
            seconds=params.short_exposure, **opened,
        )  # fmt: skip
        yield from move(shutter, shutter.close_value, timeout=timeout)
        return None

    def cleanup() -> MsgGenerator[None]:
        # Each step is tried even when an earlier one fails (a dead motor must not keep the
        # shutter open); failures are logged, the plan's own exception is the one reported.
        steps: list[tuple[str, Any, Any]] = [("shutter", shutter, shutter.close_value)]
        if "rotation" in initial:
            steps.append(("rotation", rotation, initial["rotation"]))
        if "sample" in initial:
            steps.append(("sample stage", sample_stage, initial["sample"]))
        for role, device, value in steps:
            try:
                yield from move(device, value, timeout=timeout)
            except Exception:
                level = logging.CRITICAL if role == "shutter" else logging.ERROR
                logger.log(level, "cleanup: could not return the %s %s to %r", role, _name(device), value,
                           exc_info=True)  # fmt: skip

    @bpp.run_decorator(md=md)
    def run() -> MsgGenerator[str]:
        return (yield from bpp.finalize_wrapper(inner(), cleanup()))

    uid = yield from run()
    return uid
