"""The Data Exchange layout (APS/TomoBank) and its in-memory record, validated: the schema.

Reading is in :mod:`~bluesky_lowdose.dxchange.read`, writing in
:mod:`~bluesky_lowdose.dxchange.write`. Pure: numpy here, h5py there (no bluesky, ophyd or
tiled). See ``docs/dxchange.md`` for the layout and the ``bluesky_lowdose`` extension that
carries the long/short reference pairs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

__all__ = ["DX_PATHS", "DataExchange", "DataExchangeError", "ThetaUnits"]

logger = logging.getLogger(__name__)

ThetaUnits = Literal["degrees", "radians"]

#: Where each field of :class:`DataExchange` lives in the file.
DX_PATHS: dict[str, str] = {
    "data": "/exchange/data",
    "data_white": "/exchange/data_white",
    "data_dark": "/exchange/data_dark",
    "theta": "/exchange/theta",
    "reference_short": "/exchange/reference_short",
    "reference_long": "/exchange/reference_long",
    "reference_theta": "/exchange/reference_theta",
    "data_white_long": "/exchange/data_white_long",
    "data_dark_long": "/exchange/data_dark_long",
    "exposure_time": "/measurement/instrument/detector/exposure_time",
    "exposure_time_long": "/measurement/instrument/detector/exposure_time_long",
    "sample_name": "/measurement/sample/name",
    "run_uid": "/process/bluesky_lowdose/run_uid",
    "metadata": "/process/bluesky_lowdose/metadata",
    "provenance": "/process/bluesky_lowdose/provenance",
    "reconstruction": "/exchange_1/data",
}

#: Frame stacks (n, rows, cols) and the exposure each one was taken with.
_STACKS: dict[str, str] = {
    "data": "short",
    "data_white": "short",
    "data_dark": "short",
    "reference_short": "short",
    "reference_long": "long",
    "data_white_long": "long",
    "data_dark_long": "long",
}
_DESCRIPTIONS = {
    "data": "projections",
    "data_white": "flat fields (open beam), exposure of /exchange/data",
    "data_dark": "dark fields (shutter closed), exposure of /exchange/data",
    "reference_short": "short-exposure frames at /exchange/reference_theta (training inputs)",
    "reference_long": "long-exposure frames at /exchange/reference_theta (training targets)",
    "data_white_long": "flat fields at the long exposure",
    "data_dark_long": "dark fields at the long exposure",
}
#: The additional exchange group holding a reconstruction (Data Exchange's ``exchange_N``).
RECONSTRUCTION_GROUP = "/exchange_1"
_DEGREES = {"degrees", "degree", "deg"}
_RADIANS = {"radians", "radian", "rad"}
_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6}
_TWO_PI = 2.0 * math.pi * (1.0 + 1e-6)
#: Value of the ``implements`` dataset at the root of a Data Exchange file.
IMPLEMENTS = "exchange:measurement:process"


class DataExchangeError(ValueError):
    """A Data Exchange file or a :class:`DataExchange` is incomplete or inconsistent."""


@dataclass
class DataExchange:
    """The content of one Data Exchange file.

    Attributes
    ----------
    data : numpy.ndarray
        Projections ``(n, rows, cols)``: raw counts, or flat/dark-corrected transmission when
        ``corrected`` is true.
    theta : numpy.ndarray
        Rotation angle of each projection, **degrees**, shape ``(n,)``.
    data_white, data_dark : numpy.ndarray or None
        Flat and dark fields ``(k, rows, cols)`` taken with ``exposure_time``.
    exposure_time : float or None
        Exposure of ``data``, ``data_white``, ``data_dark`` and ``reference_short``, seconds.
    reference_short, reference_long : numpy.ndarray or None
        Extension: the training pairs, short and long exposure, ``(m, rows, cols)`` at
        ``reference_theta``.
    reference_theta : numpy.ndarray or None
        Extension: angles of the reference frames, degrees, ``(m,)``.
    data_white_long, data_dark_long : numpy.ndarray or None
        Extension: flat and dark fields taken with ``exposure_time_long``.
    exposure_time_long : float or None
        Exposure of ``reference_long`` and the long flats/darks, seconds.
    reconstruction : numpy.ndarray or None
        A reconstructed volume ``(z, y, x)`` (``/exchange_1/data``, the additional exchange
        group Data Exchange uses for processed data), attenuation per pixel; not tied to the
        frame shape of ``data``.
    corrected : bool
        True when every frame stack holds flat/dark-corrected transmission ``(I - D)/(F - D)``
        (then flats and darks are not stored).
    data_description : str or None
        The ``description`` attribute of ``/exchange/data`` (default ``"projections"``), e.g. to
        say that corrected projections were not enhanced.
    sample_name : str or None
        Sample name (``/measurement/sample/name``).
    run_uid : str or None
        Uid of the Bluesky run the data come from.
    metadata : dict
        JSON-serialisable metadata (e.g. the run's start and stop documents).
    provenance : dict or None
        JSON-serialisable processing record (e.g. the enhancer's provenance).
    notes : list of str
        What :func:`read_dxfile` had to interpret (e.g. angles converted from radians); not
        written.
    """

    data: np.ndarray
    theta: np.ndarray
    data_white: np.ndarray | None = None
    data_dark: np.ndarray | None = None
    exposure_time: float | None = None
    reference_short: np.ndarray | None = None
    reference_long: np.ndarray | None = None
    reference_theta: np.ndarray | None = None
    data_white_long: np.ndarray | None = None
    data_dark_long: np.ndarray | None = None
    exposure_time_long: float | None = None
    reconstruction: np.ndarray | None = None
    corrected: bool = False
    data_description: str | None = None
    sample_name: str | None = None
    run_uid: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of every frame.

        Returns
        -------
        tuple of int
            The frame shape of ``data``.
        """
        return (int(self.data.shape[1]), int(self.data.shape[2]))

    @property
    def has_references(self) -> bool:
        """Whether the file carries long-exposure reference frames (the extension).

        Returns
        -------
        bool
            True when ``reference_long`` is present.
        """
        return self.reference_long is not None

    def validate(self) -> DataExchange:
        """Check shapes, dtypes, finiteness and angle counts; normalise array types.

        Returns
        -------
        DataExchange
            A copy with arrays as numpy arrays (stacks ``(n, rows, cols)``, angles float64).

        Raises
        ------
        DataExchangeError
            Naming the first problem found.
        """
        metadata = dict(self.metadata) if isinstance(self.metadata, Mapping) else self.metadata
        out = replace(self, metadata=metadata, notes=list(self.notes))
        out.data = _check_stack(self.data, "data")
        if out.data.shape[0] == 0:
            raise DataExchangeError(f"{DX_PATHS['data']} holds no projections")
        for name in _STACKS:
            if name == "data" or getattr(self, name) is None:
                continue
            stack = _check_stack(getattr(self, name), name)
            if stack.shape[1:] != out.data.shape[1:]:
                raise DataExchangeError(
                    f"{DX_PATHS[name]} has frames of {stack.shape[1:]} but {DX_PATHS['data']} has "
                    f"{out.data.shape[1:]}: they must match"
                )
            if stack.shape[0] == 0:
                raise DataExchangeError(f"{DX_PATHS[name]} is empty")
            setattr(out, name, stack)
        out.theta = _check_angles(self.theta, "theta", out.data.shape[0], "data")
        if self.reconstruction is not None:
            out.reconstruction = _check_stack(self.reconstruction, "reconstruction")
            if 0 in out.reconstruction.shape:
                raise DataExchangeError(f"{DX_PATHS['reconstruction']} is empty")
        if self.data_description is not None and not isinstance(self.data_description, str):
            kind = type(self.data_description).__name__
            raise DataExchangeError(f"data_description must be a str, got {kind}")
        refs = [n for n in ("reference_short", "reference_long") if getattr(out, n) is not None]
        if refs and self.reference_theta is None:
            raise DataExchangeError(f"{DX_PATHS[refs[0]]} needs {DX_PATHS['reference_theta']} (its angles)")
        if self.reference_theta is not None:
            if not refs:
                raise DataExchangeError(
                    f"{DX_PATHS['reference_theta']} given without {DX_PATHS['reference_long']}"
                )
            n_ref = getattr(out, refs[0]).shape[0]
            out.reference_theta = _check_angles(self.reference_theta, "reference_theta", n_ref, refs[0])
            for name in refs[1:]:
                if getattr(out, name).shape[0] != n_ref:
                    raise DataExchangeError(
                        f"{DX_PATHS[name]} has {getattr(out, name).shape[0]} frames but "
                        f"{DX_PATHS[refs[0]]} has {n_ref}: one frame per reference angle"
                    )
        for name in ("exposure_time", "exposure_time_long"):
            value = getattr(self, name)
            if value is not None:
                value = _as_float(value, name)
                if not (math.isfinite(value) and value > 0):
                    raise DataExchangeError(
                        f"{DX_PATHS[name]} must be a positive number of seconds, got {value}"
                    )
                setattr(out, name, value)
        if out.corrected:
            present = [
                DX_PATHS[n] for n in _STACKS if "white" in n or "dark" in n if getattr(out, n) is not None
            ]
            if present:
                raise DataExchangeError(
                    f"corrected (transmission) data cannot come with flats/darks: {', '.join(present)}"
                )
        for name in ("metadata", "provenance"):
            value = getattr(out, name)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise DataExchangeError(f"{name} must be a dict, got {type(value).__name__}")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise DataExchangeError(f"{name} is not JSON-serialisable: {err}") from err
        return out


def _check_stack(value: Any, name: str) -> np.ndarray:
    path = DX_PATHS[name]
    arr = np.asarray(value)
    if not _is_real_numeric(arr.dtype):
        raise DataExchangeError(
            f"{path} has dtype {arr.dtype}: frames must be real numbers (integer or floating point)"
        )
    if arr.ndim == 2 and name not in ("data", "reconstruction"):
        arr = arr[None]
    if arr.ndim != 3:
        axes = "(z, y, x)" if name == "reconstruction" else "(n, rows, cols)"
        raise DataExchangeError(f"{path} must be a 3-D stack {axes}, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataExchangeError(f"{path} contains {bad} NaN or infinite values")
    return arr


def _is_real_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "uif"


def _check_angles(value: Any, name: str, n: int, stack: str) -> np.ndarray:
    path = DX_PATHS[name]
    arr = np.asarray(value)
    if not _is_real_numeric(arr.dtype):
        raise DataExchangeError(f"{path} has dtype {arr.dtype}: angles must be real numbers")
    arr = arr.astype(np.float64).reshape(-1) if arr.ndim <= 1 else arr
    if arr.ndim != 1:
        raise DataExchangeError(f"{path} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataExchangeError(f"{path} contains NaN or infinite angles")
    if arr.shape[0] != n:
        raise DataExchangeError(
            f"{path} has {arr.shape[0]} angles but {DX_PATHS[stack]} has {n} frames: one angle per frame"
        )
    return arr


def _as_float(value: Any, name: str) -> float:
    try:
        return float(np.asarray(value).reshape(()))
    except (TypeError, ValueError) as err:
        raise DataExchangeError(f"{DX_PATHS[name]} must be one number, got {value!r}") from err
