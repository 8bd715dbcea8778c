"""Plan stubs of the low-dose scan and the device adapters they need.

Like bluesky's own ``count``, the scan is built from small stubs: setting the exposure the
way each device family allows (:class:`ExposureControl`), frames at a fixed position
(:func:`take_frames`, a :func:`bluesky.plan_stubs.repeat` with a checkpoint before each frame,
inside :func:`staged`),
frames along a trajectory (:func:`rotation_frames`), and a shutter that closes whenever the
RunEngine pauses (:class:`PauseClosingShutter`).

Nothing here imports a device class: devices are recognised by the bluesky protocols and by
the attributes the device families really have.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Preparable, Status
from bluesky.utils import MsgGenerator, short_uid

__all__ = [
    "ExposureControl",
    "PauseClosingShutter",
    "check_shutter_values",
    "exposure_control",
    "move",
    "rotation_frames",
    "staged",
    "take_frames",
    "trigger_and_read",
]

logger = logging.getLogger(__name__)


def _name(dev: Any) -> str:
    return str(getattr(dev, "name", None) or repr(dev))


def _timeout_error(what: str, timeout: float | None, exc: BaseException) -> TimeoutError:
    return TimeoutError(f"{what} did not finish within {timeout} s ({type(exc).__name__}: {exc})")


# --------------------------------------------------------------------------- timed moves and frames
def move(device: Movable, value: Any, *, timeout: float | None = None) -> MsgGenerator[None]:
    """``bps.mv`` that fails with a :class:`TimeoutError` naming the device and the target.

    Parameters
    ----------
    device : Movable
        What to move.
    value : object
        Target.
    timeout : float, optional
        Seconds the move may take (None: no limit).

    Yields
    ------
    Msg
        Bluesky messages.
    """
    try:
        yield from bps.mv(device, value, timeout=timeout)
    except TimeoutError as exc:  # bluesky's WaitForTimeoutError is a TimeoutError
        raise _timeout_error(f"{_name(device)} moving to {value!r}", timeout, exc) from exc


def trigger_and_read(
    devices: Sequence[Any], *, name: str, timeout: float | None = None
) -> MsgGenerator[dict[str, Any]]:
    """``bps.trigger_and_read`` whose trigger wait fails with a :class:`TimeoutError` after ``timeout``.

    Parameters
    ----------
    devices : sequence
        The first is the detector (triggered); the others are read only.
    name : str
        Event stream name.
    timeout : float, optional
        Seconds the trigger may take, exposure included (None: no limit).

    Yields
    ------
    Msg
        Bluesky messages.
    """
    detector = devices[0]
    group = short_uid("trigger")
    yield from bps.trigger(detector, group=group)
    try:
        yield from bps.wait(group=group, timeout=timeout)
    except TimeoutError as exc:
        raise _timeout_error(f"a frame of {_name(detector)}", timeout, exc) from exc
    yield from bps.create(name)
    readings: dict[str, Any] = {}
    try:
        for dev in devices:
            readings.update((yield from bps.read(dev)) or {})
    except Exception:
        yield from bps.drop()  # no half event (bluesky's trigger_and_read does the same)
        raise
    yield from bps.save()
    return readings


# --------------------------------------------------------------------------- exposure
@dataclass(frozen=True)
class ExposureControl:
    """How the exposure time of one detector is set.

    Attributes
    ----------
    kind : {"signal", "prepare", "areadetector"}
        ``signal``: one ``Movable`` signal in seconds (the simulator's ``exposure_time`` or
        the caller's ``exposure_signal``); ``prepare``: a ``Preparable`` detector (ophyd-async)
        given ``TriggerInfo(livetime=...)``; ``areadetector``: an ophyd areaDetector camera's
        ``cam.acquire_time`` and ``cam.acquire_period``.
    detector : object
        The detector.
    signal : object or None
        The signal of ``signal``.
    """

    kind: str
    detector: Any
    signal: Any = None

    def describe(self) -> str:
        """Where the exposure goes, for the start document."""
        if self.kind == "signal":
            return _name(self.signal)
        if self.kind == "areadetector":
            return f"{_name(self.detector.cam.acquire_time)} + {_name(self.detector.cam.acquire_period)}"
        return f"{_name(self.detector)}.prepare(TriggerInfo(livetime=...))"

    def set(self, seconds: float, *, timeout: float | None = None) -> MsgGenerator[None]:
        """Set the exposure to ``seconds`` (after staging: ophyd-async forgets it on ``stage``).

        Parameters
        ----------
        seconds : float
            Exposure time.
        timeout : float, optional
            Seconds the setting may take.

        Yields
        ------
        Msg
            Bluesky messages.
        """
        if self.kind == "signal":
            yield from move(self.signal, seconds, timeout=timeout)
        elif self.kind == "areadetector":
            cam = self.detector.cam
            yield from move(cam.acquire_time, seconds, timeout=timeout)
            yield from move(cam.acquire_period, seconds, timeout=timeout)
        else:
            from ophyd_async.core import TriggerInfo

            group = short_uid("prepare")
            yield from bps.prepare(self.detector, TriggerInfo(livetime=seconds), group=group)
            try:
                yield from bps.wait(group=group, timeout=timeout)
            except TimeoutError as exc:
                raise _timeout_error(f"preparing {_name(self.detector)}", timeout, exc) from exc


def _settable(obj: Any) -> bool:
    return obj is not None and isinstance(obj, Movable)


def exposure_control(detector: Any, exposure_signal: Any = None) -> ExposureControl:
    """Find how this detector's exposure is set, or say what is missing.

    In this order: the caller's ``exposure_signal``; a ``Preparable`` detector (ophyd-async:
    ``prepare(TriggerInfo(livetime=...))``); an areaDetector camera (``detector.cam.acquire_time``
    and ``acquire_period``); a settable ``detector.exposure_time`` (the simulator).

    Parameters
    ----------
    detector : object
        The camera.
    exposure_signal : Movable, optional
        A signal in seconds that sets the exposure, for any other detector.

    Returns
    -------
    ExposureControl

    Raises
    ------
    TypeError
        ``exposure_signal`` is not Movable, or the detector offers none of the above.
    """
    if exposure_signal is not None:
        if not _settable(exposure_signal):
            raise TypeError(f"exposure_signal must be Movable (have set()), got {exposure_signal!r}")
        return ExposureControl("signal", detector, exposure_signal)
    if isinstance(detector, Preparable):
        return ExposureControl("prepare", detector)
    cam = getattr(detector, "cam", None)
    if cam is not None and _settable(getattr(cam, "acquire_time", None)):
        if not _settable(getattr(cam, "acquire_period", None)):
            raise TypeError(f"{_name(detector)}.cam has acquire_time but no settable acquire_period")
        return ExposureControl("areadetector", detector)
    if _settable(getattr(detector, "exposure_time", None)):
        return ExposureControl("signal", detector, detector.exposure_time)
    raise TypeError(
        f"cannot set the exposure of detector {_name(detector)!r} ({type(detector).__name__}): it is not "
        "Preparable (ophyd-async), has no cam.acquire_time (ophyd areaDetector) and no settable "
        "exposure_time; pass exposure_signal=<a Movable signal in seconds>"
    )


# --------------------------------------------------------------------------- shutter
def _allowed_values(shutter: Any) -> tuple[list[Any] | None, type | None]:
    """Values an EPICS enum (``enum_strs``) or an ophyd-async signal's datatype allows."""
    enum_strs = None
    try:
        enum_strs = getattr(shutter, "enum_strs", None)
    except Exception:  # a disconnected EPICS signal raises on attribute access
        enum_strs = None
    datatype = getattr(shutter, "datatype", None)
    if isinstance(datatype, type) and issubclass(datatype, enum.Enum):
        return [m.value for m in datatype], None
    if enum_strs:
        return list(enum_strs), None
    if isinstance(datatype, type) and datatype in (int, float, bool, str):
        return None, datatype
    return None, None


def check_shutter_values(shutter: Any, open_value: Any, close_value: Any) -> tuple[Any, Any]:
    """Check the open/close values before anything moves; match enum states without regard to case.

    A shutter with named states (an EPICS enum's ``enum_strs``, an ophyd-async enum signal)
    takes its own spelling: ``"open"`` becomes ``"Open"`` on a shutter whose states are
    ``["Close", "Open"]`` (logged), so the plan's defaults work on either.

    Parameters
    ----------
    shutter : Movable
        The shutter.
    open_value, close_value : object
        What ``shutter.set`` gets to open and to close.

    Returns
    -------
    tuple
        ``(open_value, close_value)`` as the shutter spells them.

    Raises
    ------
    TypeError
        A value is not a string or a number, or does not fit the shutter's datatype.
    ValueError
        The values are equal, not among the shutter's enum choices, or match two of them.
    """
    for label, value in (("shutter_open", open_value), ("shutter_close", close_value)):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError(f"{label} must be a string or a number, got {value!r}")
    if open_value == close_value:
        raise ValueError(f"shutter_open and shutter_close are both {open_value!r}")
    choices, datatype = _allowed_values(shutter)
    resolved = []
    for label, value in (("shutter_open", open_value), ("shutter_close", close_value)):
        if choices is not None:
            value = _match_state(label, value, choices, _name(shutter))
        elif datatype is str and not isinstance(value, str):
            raise TypeError(f"{label}={value!r}: {_name(shutter)} takes strings")
        elif datatype in (int, float) and not isinstance(value, int | float):
            raise TypeError(f"{label}={value!r}: {_name(shutter)} takes numbers")
        resolved.append(value)
    if resolved[0] == resolved[1]:
        raise ValueError(f"shutter_open and shutter_close are both the state {resolved[0]!r}")
    return resolved[0], resolved[1]


def _match_state(label: str, value: Any, choices: list, name: str) -> Any:
    if value in choices or (isinstance(value, int) and 0 <= value < len(choices)):  # an index
        return value
    if isinstance(value, str):
        same = [c for c in choices if isinstance(c, str) and c.casefold() == value.casefold()]
        if len(same) == 1:
            logger.info("%s=%r: using %s's state %r", label, value, name, same[0])
            return same[0]
    raise ValueError(f"{label}={value!r} is not a state of {name}: one of {choices}")


class _DoneStatus:
    """A status that is already finished (a shutter already in the requested state)."""

    done = True
    success = True

    def add_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)

    def exception(self, timeout: float | None = 0.0) -> BaseException | None:
        return None

    def wait(self, timeout: float | None = None) -> None:
        return None


async def _await_status(status: Any, timeout: float | None) -> None:
    if inspect.isawaitable(status):
        await asyncio.wait_for(status, timeout)
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def _done(_: Any) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

    status.add_callback(_done)
    await asyncio.wait_for(fut, timeout)
    exc = status.exception() if hasattr(status, "exception") else None
    if exc is not None:
        raise exc


class PauseClosingShutter:
    """The scan's view of the shutter: it closes when the RunEngine pauses or suspends.

    The RunEngine calls ``pause()`` on every ``Pausable`` object a plan used; this adapter
    closes the real shutter there, so a paused low-dose scan puts no dose on the sample. The
    plan re-requests the open state after each checkpoint; after a pause that request reaches
    the shutter again (it was closed), otherwise it is a no-op that touches no hardware.

    Parameters
    ----------
    shutter : Movable
        The real shutter.
    open_value, close_value : object
        Its open and close values.
    timeout : float, optional
        Seconds closing at a pause may take.
    """

    def __init__(self, shutter: Movable, open_value: Any, close_value: Any, *, timeout: float | None) -> None:
        self.shutter = shutter
        self.open_value = open_value
        self.close_value = close_value
        self.timeout = timeout
        self.state: Any = None  # the last value the real shutter reached (None: unknown)
        self.closed_at_pause = 0

    @property
    def name(self) -> str:
        """The real shutter's name."""
        return _name(self.shutter)

    @property
    def parent(self) -> None:
        """No parent: the adapter is its own root."""
        return None

    def set(self, value: Any) -> Status:
        """Move the real shutter unless it is known to be at ``value`` already."""
        if self.state is not None and value == self.state:
            return _DoneStatus()
        self.state = None
        status = self.shutter.set(value)

        def _record(st: Any) -> None:
            if st.success:
                self.state = value

        status.add_callback(_record)
        return status

    async def pause(self) -> None:
        """Close the real shutter (the RunEngine calls this on pause and on suspension)."""
        if self.state == self.close_value:
            return
        try:
            await _await_status(self.shutter.set(self.close_value), self.timeout)
        except Exception:
            self.state = None
            logger.critical("could not close shutter %s at the pause: the sample may get dose", self.name,
                            exc_info=True)  # fmt: skip
            return
        self.state = self.close_value
        self.closed_at_pause += 1
        logger.info("shutter %s closed for the pause", self.name)

    def resume(self) -> None:
        """Nothing: the plan reopens the shutter before the next exposure."""

    def stop(self, success: bool = False) -> None:
        """Stop the real shutter if it can be stopped."""
        stop = getattr(self.shutter, "stop", None)
        if callable(stop):
            stop(success=success)


# --------------------------------------------------------------------------- frames
def staged(plan: MsgGenerator[Any], device: Any) -> MsgGenerator[Any]:
    """``bpp.stage_wrapper`` whose unstage cannot hide why the plan failed.

    When the plan fails because a device died, unstaging that device fails too; bluesky's
    wrapper would then report the unstage error instead of the real one. Here an unstage error
    after a failure is logged and the original exception is the one that propagates; after a
    success it propagates as usual.

    Parameters
    ----------
    plan : generator
        The staged part.
    device : Stageable
        Staged before, unstaged after.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    failed = {"yes": False}

    def body() -> MsgGenerator[Any]:
        try:
            return (yield from plan)
        except BaseException:
            failed["yes"] = True
            raise

    def unstage() -> MsgGenerator[None]:
        try:
            yield from bps.unstage(device, group=short_uid("unstage"), wait=True)
        except Exception:
            if not failed["yes"]:
                raise
            logger.error("unstaging %s failed after the plan had failed", _name(device), exc_info=True)

    # wait=True: an ophyd-async detector's stage resets what prepare() sets, so it must finish first
    yield from bps.stage(device, group=short_uid("stage"), wait=True)
    return (yield from bpp.finalize_wrapper(body(), unstage()))


def take_frames(
    detector: Any,
    num: int,
    *,
    stream: str,
    exposure: ExposureControl | None,
    seconds: float | None,
    shutter: PauseClosingShutter | None = None,
    shutter_value: Any = None,
    timeout: float | None = None,
) -> MsgGenerator[None]:
    """``num`` frames at a fixed position: stage, set the exposure, repeat (checkpoint, frame), unstage.

    Parameters
    ----------
    detector : Triggerable and Readable
        The camera.
    num : int
        Number of frames (0: nothing happens).
    stream : str
        Event stream name.
    exposure : ExposureControl or None
        How the exposure is set (None: left as it is).
    seconds : float or None
        Exposure time (None: left as it is).
    shutter : PauseClosingShutter, optional
        Re-set to ``shutter_value`` after every checkpoint (reopens it after a pause).
    shutter_value : object
        The shutter state of these frames.
    timeout : float, optional
        Seconds a move or a frame may take beyond its exposure.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if num <= 0:
        return

    def one_frame() -> MsgGenerator[None]:
        yield from _frame([detector], stream, seconds, shutter, shutter_value, timeout)

    yield from _segment(detector, bps.repeat(one_frame, num=num), exposure, seconds, timeout)


def rotation_frames(
    detector: Any,
    rotation: Any,
    angles: Sequence[float],
    *,
    stream: str,
    exposure: ExposureControl | None,
    seconds: float | None,
    shutter: PauseClosingShutter | None = None,
    shutter_value: Any = None,
    timeout: float | None = None,
) -> MsgGenerator[None]:
    """One frame at each angle: checkpoint, (shutter), move, trigger and read detector + rotation.

    Parameters
    ----------
    detector : Triggerable and Readable
        The camera.
    rotation : Movable and Readable
        The rotation stage; its readback goes into each event as the projection angle.
    angles : sequence of float
        Angles in degrees.
    stream : str
        Event stream name.
    exposure : ExposureControl or None
        How the exposure is set (None: left as it is).
    seconds : float or None
        Exposure time (None: left as it is).
    shutter : PauseClosingShutter, optional
        Re-set to ``shutter_value`` after every checkpoint (reopens it after a pause).
    shutter_value : object
        The shutter state of these frames.
    timeout : float, optional
        Seconds a move or a frame may take beyond its exposure.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    if len(angles) == 0:
        return

    def frames() -> MsgGenerator[None]:
        for angle in angles:
            yield from bps.checkpoint()
            yield from _frame([detector, rotation], stream, seconds, shutter, shutter_value, timeout,
                              move_to=(rotation, float(angle)))  # fmt: skip

    yield from _segment(detector, frames(), exposure, seconds, timeout)


def _frame(
    devices: Sequence[Any],
    stream: str,
    seconds: float | None,
    shutter: PauseClosingShutter | None,
    shutter_value: Any,
    timeout: float | None,
    move_to: tuple[Any, float] | None = None,
) -> MsgGenerator[None]:
    """(Re)open the shutter, move, then trigger and read: one frame of a segment."""
    if shutter is not None:
        yield from move(shutter, shutter_value, timeout=timeout)
    if move_to is not None:
        yield from move(*move_to, timeout=timeout)
    frame_timeout = None if timeout is None else timeout + (seconds or 0.0)
    yield from trigger_and_read(devices, name=stream, timeout=frame_timeout)


def _segment(
    detector: Any,
    frames: MsgGenerator[Any],
    exposure: ExposureControl | None,
    seconds: float | None,
    timeout: float | None,
) -> MsgGenerator[None]:
    """Stage the detector, set the exposure (after staging), take the frames, unstage."""

    def inner() -> MsgGenerator[None]:
        if exposure is not None and seconds is not None:
            yield from exposure.set(seconds, timeout=timeout)
        yield from frames

    yield from staged(inner(), detector)
