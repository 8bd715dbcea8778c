"""Plans as the bluesky-queueserver sees them: generator functions with parameter annotations.

:func:`~bluesky_lowdose.plans.tomo.lowdose_tomo_scan` is one generator function for IPython
and the queue: its checks run when the plan starts, before the first message, in both.
:func:`annotate_lowdose_tomo_scan` wraps it in a generator function with the same name,
signature and docstring (``functools.wraps``; the original stays unannotated) and attaches a
``bluesky_queueserver.parameter_annotation_decorator`` annotation so that the RE Manager
rejects bad items at ``item_add``, before they reach the queue:

- device parameters accept only the names of the devices listed for each role;
- angles lie in [-360, 360] degrees, exposures in [1 µs, 3600 s], ``num_angles`` in
  [2, 10000], ``num_darks``/``num_flats`` in [0, 1000], ``flat_position`` in ±10⁶ device
  units (the same ranges the plan checks when it starts: :mod:`~bluesky_lowdose.plans.patterns`).

Parameter descriptions are not repeated here: the queueserver takes them from the numpydoc
docstring of the plan. The plan itself still validates everything (e.g. ``start < stop``,
reference angles within the rotation, ``long_exposure > short_exposure``) when it starts.

``exposure_signal`` is annotated ``__MOVABLE__``: the queueserver turns the name of a movable
device in the worker's namespace into the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from bluesky.utils import MsgGenerator

from .patterns import ANGLE_RANGE, COUNT_RANGE, EXPOSURE_RANGE, FLAT_POSITION_RANGE, NUM_ANGLES_RANGE
from .tomo import lowdose_tomo_scan as _lowdose_tomo_scan

__all__ = [
    "TIMEOUT_RANGE",
    "annotate_count_and_mv",
    "annotate_lowdose_tomo_scan",
    "as_generator_function",
    "count",
    "lowdose_tomo_scan",
    "lowdose_tomo_scan_annotation",
    "mv",
]

#: Inclusive bounds (seconds) of ``timeout``.
TIMEOUT_RANGE: tuple[float, float] = (0.001, 86400.0)


def as_generator_function(func: Callable[..., Any]) -> Callable[..., MsgGenerator[Any]]:
    """Wrap a function that returns a plan into a generator function (a plan for the queueserver).

    Parameters
    ----------
    func : callable
        A function returning a generator (or any iterable of messages).

    Returns
    -------
    callable
        A generator function with ``func``'s name, docstring and signature (via ``__wrapped__``)
        that yields from ``func(*args, **kwargs)`` and returns its return value.
    """

    @functools.wraps(func)
    def plan(*args: Any, **kwargs: Any) -> MsgGenerator[Any]:
        return (yield from func(*args, **kwargs))

    return plan


def _range(bounds: tuple[float, float]) -> dict[str, float]:
    return {"min": bounds[0], "max": bounds[1]}


def lowdose_tomo_scan_annotation(
    *,
    detectors: Sequence[str] = ("txm_cam",),
    rotations: Sequence[str] = ("rotation",),
    shutters: Sequence[str] = ("shutter",),
    sample_stages: Sequence[str] = ("sample_x",),
) -> dict[str, Any]:
    """The ``parameter_annotation_decorator`` annotation of ``lowdose_tomo_scan``.

    Parameters
    ----------
    detectors, rotations, shutters, sample_stages : sequence of str
        Names of the devices the queue accepts for each role (names in the RE Worker
        namespace; ``:regex`` patterns as in the queueserver's device lists also work).

    Returns
    -------
    dict
        The annotation (JSON-serialisable).
    """
    return {
        "parameters": {
            "detector": {"annotation": "Detectors", "devices": {"Detectors": list(detectors)}},
            "rotation": {"annotation": "RotationStages", "devices": {"RotationStages": list(rotations)}},
            "shutter": {"annotation": "Shutters", "devices": {"Shutters": list(shutters)}},
            "sample_stage": {"annotation": "SampleStages", "devices": {"SampleStages": list(sample_stages)}},
            "start": {"annotation": "float", **_range(ANGLE_RANGE)},
            "stop": {"annotation": "float", **_range(ANGLE_RANGE)},
            "num_angles": {"annotation": "int", **_range(NUM_ANGLES_RANGE)},
            "short_exposure": {"annotation": "float", **_range(EXPOSURE_RANGE)},
            "long_exposure": {"annotation": "float", **_range(EXPOSURE_RANGE)},
            "reference_angles": {"annotation": "typing.List[float]", **_range(ANGLE_RANGE)},
            "num_darks": {"annotation": "int", **_range(COUNT_RANGE)},
            "num_flats": {"annotation": "int", **_range(COUNT_RANGE)},
            "flat_position": {"annotation": "float", **_range(FLAT_POSITION_RANGE)},
            "shutter_open": {"annotation": "typing.Union[str, int]"},
            "shutter_close": {"annotation": "typing.Union[str, int]"},
            "exposure_signal": {"annotation": "typing.Optional[__MOVABLE__]"},
            "timeout": {"annotation": "typing.Optional[float]", **_range(TIMEOUT_RANGE)},
            "md": {"annotation": "typing.Optional[typing.Dict[str, typing.Any]]"},
        }
    }


def annotate_lowdose_tomo_scan(
    *,
    detectors: Sequence[str] = ("txm_cam",),
    rotations: Sequence[str] = ("rotation",),
    shutters: Sequence[str] = ("shutter",),
    sample_stages: Sequence[str] = ("sample_x",),
) -> Callable[..., MsgGenerator[str]]:
    """``lowdose_tomo_scan`` as a queueserver plan that accepts only the given device names.

    Parameters
    ----------
    detectors, rotations, shutters, sample_stages : sequence of str
        Names of the devices the queue accepts for each role.

    Returns
    -------
    callable
        The annotated generator function (name, signature and docstring of the plan).
    """
    from bluesky_queueserver import parameter_annotation_decorator

    annotation = lowdose_tomo_scan_annotation(
        detectors=detectors, rotations=rotations, shutters=shutters, sample_stages=sample_stages
    )
    return parameter_annotation_decorator(annotation)(as_generator_function(_lowdose_tomo_scan))


#: ``lowdose_tomo_scan`` for the queueserver, for the default device names of
#: :func:`bluesky_lowdose.devices.make_devices` (``txm_cam``, ``rotation``, ``shutter``, ``sample_x``).
lowdose_tomo_scan = annotate_lowdose_tomo_scan()


#: Inclusive bounds of ``count``'s ``num`` and ``delay`` (s), and of ``mv``'s positions.
COUNT_NUM_RANGE: tuple[int, int] = (1, 10000)
DELAY_RANGE: tuple[float, float] = (0.0, 3600.0)
POSITION_RANGE: tuple[float, float] = (-1000.0, 1000.0)


def count(
    detectors: Sequence[Any], num: int = 1, delay: float | None = None, *, md: dict[str, Any] | None = None
) -> MsgGenerator[str]:
    """Take ``num`` readings of the detectors (bluesky's ``count``, with bounded parameters).

    Parameters
    ----------
    detectors : list
        The detectors to trigger and read.
    num : int
        Number of readings (1 ... 10000).
    delay : float, optional
        Seconds between readings (0 ... 3600).
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    MsgGenerator[str]
        The plan; running it returns the run uid.
    """
    from bluesky.plans import count as bluesky_count

    return (yield from bluesky_count(detectors, num=num, delay=delay, md=md))


def mv(device: Any, position: float) -> MsgGenerator[Any]:
    """Move one device to ``position`` and wait (bluesky's ``mv`` for one device, bounded).

    Parameters
    ----------
    device : Movable
        The stage.
    position : float
        Target in the device's units (-1000 ... 1000).

    Returns
    -------
    MsgGenerator
        The plan.
    """
    import bluesky.plan_stubs as bps

    return (yield from bps.mv(device, position))


def annotate_count_and_mv(
    *, detectors: Sequence[str] = ("txm_cam",), motors: Sequence[str] = ("rotation", "sample_x")
) -> dict[str, Callable[..., MsgGenerator[Any]]]:
    """``count`` and ``mv`` for the queue: device lists and ranges checked at ``item_add``.

    Unannotated, ``count(num=10**9)`` and ``mv rotation 1e300`` would pass ``item_add``.

    Parameters
    ----------
    detectors, motors : sequence of str
        Names of the devices each plan accepts.

    Returns
    -------
    dict
        ``{"count": ..., "mv": ...}``.
    """
    from bluesky_queueserver import parameter_annotation_decorator

    count_annotation = {
        "parameters": {
            "detectors": {"annotation": "typing.List[Detectors]", "devices": {"Detectors": list(detectors)}},
            "num": {"annotation": "int", **_range(COUNT_NUM_RANGE)},
            "delay": {"annotation": "typing.Optional[float]", **_range(DELAY_RANGE)},
            "md": {"annotation": "typing.Optional[typing.Dict[str, typing.Any]]"},
        }
    }
    mv_annotation = {
        "parameters": {
            "device": {"annotation": "Motors", "devices": {"Motors": list(motors)}},
            "position": {"annotation": "float", **_range(POSITION_RANGE)},
        }
    }
    return {
        "count": parameter_annotation_decorator(count_annotation)(as_generator_function(count)),
        "mv": parameter_annotation_decorator(mv_annotation)(as_generator_function(mv)),
    }
