"""Pure trajectory and dose arithmetic of the low-dose scan (no messages, no RunEngine)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

__all__ = [
    "ANGLE_RANGE",
    "COUNT_RANGE",
    "EXPOSURE_RANGE",
    "FLAT_POSITION_RANGE",
    "NUM_ANGLES_RANGE",
    "RESERVED_METADATA",
    "ScanParameters",
    "check_metadata",
    "dose_accounting",
    "rotation_angles",
    "validate_scan_parameters",
]

#: Start-document keys the plan writes itself; ``md`` may not replace them (the dose accounting
#: in ``lowdose`` must stay the plan's own).
RESERVED_METADATA = frozenset(
    {"lowdose", "plan_name", "plan_args", "plan_type", "plan_pattern", "plan_pattern_module",
     "plan_pattern_args", "num_points", "num_intervals", "detectors", "motors"}
)  # fmt: skip

#: Two reference angles closer than this (degrees) are duplicates.
ANGLE_TOLERANCE = 1e-6
#: Inclusive bounds (degrees) of ``start``, ``stop`` and every reference angle.
ANGLE_RANGE: tuple[float, float] = (-360.0, 360.0)
#: Inclusive bounds (seconds) of the exposure times (a queue annotation cannot say "> 0": 1 µs).
EXPOSURE_RANGE: tuple[float, float] = (1e-6, 3600.0)
#: Inclusive bounds of ``num_angles``.
NUM_ANGLES_RANGE: tuple[int, int] = (2, 10000)
#: Inclusive bounds of ``num_darks`` and ``num_flats``.
COUNT_RANGE: tuple[int, int] = (0, 1000)
#: Inclusive bounds of ``flat_position`` (device units: a million mm, µm or steps is no stage's
#: travel; the stage's own limits are checked when it moves).
FLAT_POSITION_RANGE: tuple[float, float] = (-1e6, 1e6)


@dataclass(frozen=True)
class ScanParameters:
    """Validated, normalised scan parameters."""

    start: float
    stop: float
    num_angles: int
    short_exposure: float
    long_exposure: float
    reference_angles: tuple[float, ...]
    num_darks: int
    num_flats: int
    flat_position: float


def rotation_angles(start: float, stop: float, num_angles: int) -> np.ndarray:
    """Angles of the short-exposure rotation: ``numpy.linspace(start, stop, num_angles)``.

    Parameters
    ----------
    start, stop : float
        First and last angle in degrees (both included).
    num_angles : int
        Number of projections.

    Returns
    -------
    numpy.ndarray
        float64 angles in degrees.
    """
    return np.linspace(float(start), float(stop), int(num_angles))


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _count(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def _within(name: str, value: float, bounds: tuple[float, float], unit: str = "") -> float:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name}={value:g}{unit} is outside [{bounds[0]:g}, {bounds[1]:g}]{unit}")
    return value


def validate_scan_parameters(
    *,
    start: float,
    stop: float,
    num_angles: int,
    short_exposure: float,
    long_exposure: float,
    reference_angles: Sequence[float],
    num_darks: int,
    num_flats: int,
    flat_position: float,
) -> ScanParameters:
    """Check every scan parameter and return them normalised.

    Raises
    ------
    TypeError
        A parameter has the wrong type (e.g. a string angle, a float count).
    ValueError
        No angles, a reference angle outside ``[start, stop]``, duplicate reference angles,
        non-positive or inverted exposures (long must exceed short), negative numbers of
        darks/flats, non-finite numbers, or a value outside the ranges above (the queue's
        annotation rejects the same at ``item_add``).
    """
    start_f = _within("start", _number("start", start), ANGLE_RANGE, "°")
    stop_f = _within("stop", _number("stop", stop), ANGLE_RANGE, "°")
    if start_f == stop_f:
        raise ValueError(f"start and stop must differ, both are {start_f}")
    n = _count("num_angles", num_angles, 1, NUM_ANGLES_RANGE[1])
    if n < 2:
        raise ValueError(f"num_angles must be >= 2 for a tomographic rotation, got {n}")
    short = _number("short_exposure", short_exposure)
    long_ = _number("long_exposure", long_exposure)
    if short <= 0 or long_ <= 0:
        raise ValueError(f"exposure times must be positive, got short={short}, long={long_}")
    _within("short_exposure", short, EXPOSURE_RANGE, " s")
    _within("long_exposure", long_, EXPOSURE_RANGE, " s")
    if long_ <= short:
        raise ValueError(f"long_exposure ({long_} s) must be longer than short_exposure ({short} s)")
    if isinstance(reference_angles, (str, bytes)) or not isinstance(reference_angles, Sequence | np.ndarray):
        raise TypeError(f"reference_angles must be a sequence of angles, got {reference_angles!r}")
    refs = tuple(_number("reference angle", a) for a in reference_angles)
    lo, hi = min(start_f, stop_f), max(start_f, stop_f)
    outside = [a for a in refs if a < lo - ANGLE_TOLERANCE or a > hi + ANGLE_TOLERANCE]
    if outside:
        raise ValueError(f"reference angles {outside} lie outside the scan range [{lo}, {hi}]")
    srt = sorted(refs)
    dups = [b for a, b in itertools.pairwise(srt) if abs(b - a) < ANGLE_TOLERANCE]
    if dups:
        raise ValueError(f"duplicate reference angles: {dups}")
    return ScanParameters(
        start=start_f,
        stop=stop_f,
        num_angles=n,
        short_exposure=short,
        long_exposure=long_,
        reference_angles=refs,
        num_darks=_count("num_darks", num_darks, *COUNT_RANGE),
        num_flats=_count("num_flats", num_flats, *COUNT_RANGE),
        flat_position=_within("flat_position", _number("flat_position", flat_position), FLAT_POSITION_RANGE),
    )


def dose_accounting(params: ScanParameters) -> dict[str, float | int]:
    """Exposure the sample receives in this scan vs. a conventional long-exposure scan.

    Dose is counted as beam-on-sample time (darks and flats do not irradiate the sample).

    Returns
    -------
    dict
        ``sample_exposure_s`` (this scan: rotation + both reference exposures),
        ``conventional_exposure_s`` (``num_angles`` long exposures),
        ``dose_ratio`` (conventional / this scan, the dose reduction factor),
        ``dose_fraction`` (this scan / conventional), and the parts.
    """
    rotation = params.num_angles * params.short_exposure
    references = len(params.reference_angles) * (params.short_exposure + params.long_exposure)
    total = rotation + references
    conventional = params.num_angles * params.long_exposure
    return {
        "rotation_exposure_s": rotation,
        "reference_exposure_s": references,
        "sample_exposure_s": total,
        "conventional_exposure_s": conventional,
        "dose_ratio": conventional / total,
        "dose_fraction": total / conventional,
        "detector_time_s": total
        + (params.num_darks + params.num_flats) * (params.short_exposure + params.long_exposure),
    }


def _check_value(path: str, value: object) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"md{path} is {value!r}: metadata must be finite (JSON has no NaN/inf)")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"md{path} has a non-string key {key!r}")
            _check_value(f"{path}[{key!r}]", item)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item)
        return
    raise TypeError(
        f"md{path} is a {type(value).__name__} ({value!r:.60}): metadata must be JSON "
        "(str, number, bool, None, list, dict) so that it can be stored and backed up"
    )


def check_metadata(md: object) -> dict:
    """Check the caller's start-document metadata before the run opens.

    Parameters
    ----------
    md : dict or None
        Extra metadata.

    Returns
    -------
    dict
        ``md`` (or an empty dict), unchanged.

    Raises
    ------
    TypeError
        ``md`` is not a dict, has non-string keys or values JSON cannot hold (sets, arrays,
        objects): a run whose start document cannot be serialised would leave an empty backup.
    ValueError
        A NaN or infinite number (stored as null otherwise), or a key the plan writes itself
        (:data:`RESERVED_METADATA`, e.g. ``lowdose`` with the dose accounting).
    """
    if md is None:
        return {}
    if not isinstance(md, dict):
        raise TypeError(f"md must be a dict, got {type(md).__name__}")
    clash = sorted(RESERVED_METADATA & set(md))
    if clash:
        raise ValueError(
            f"md may not set {clash}: the plan writes these itself (dose accounting, plan record)"
        )
    _check_value("", md)
    return md
