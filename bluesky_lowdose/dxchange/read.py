"""Read Data Exchange HDF5 files, validated: sizes, sources, units, angles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .io import (
    _DEGREES,
    _RADIANS,
    _SECONDS,
    _STACKS,
    _TWO_PI,
    DX_PATHS,
    DataExchange,
    DataExchangeError,
    ThetaUnits,
    _as_float,
    _is_real_numeric,
)

__all__ = ["read_dxfile"]

logger = logging.getLogger("bluesky_lowdose.dxchange.io")


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 * 2**30


def read_dxfile(
    path: str | os.PathLike[str],
    *,
    theta_units: ThetaUnits | None = None,
    require_flat_dark: bool = False,
    allow_external: bool = False,
    max_bytes: int | None = None,
) -> DataExchange:
    """Read and validate a Data Exchange HDF5 file.

    Angles come back in degrees.  The ``units`` attribute of ``/exchange/theta`` decides
    (``degrees``/``deg`` or ``radians``/``rad``; radians are converted and a note is added to
    :attr:`DataExchange.notes`).  Without that attribute the values decide only when they cannot
    be radians (some ``|theta| > 2*pi``) or are all zero; otherwise the file is ambiguous and
    ``theta_units`` must be given.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    theta_units : {"degrees", "radians"}, optional
        Units of angles stored without a ``units`` attribute (a ``units`` attribute always wins;
        a disagreement is recorded in :attr:`DataExchange.notes`).
    require_flat_dark : bool
        Raise when raw (uncorrected) data come without ``/exchange/data_white`` or
        ``/exchange/data_dark``.
    allow_external : bool
        Follow HDF5 external links and read datasets whose storage is in other files (external
        raw storage, virtual datasets). Off by default: a file should not make this program read
        other files silently.
    max_bytes : int, optional
        Refuse (before reading anything) when the datasets to read declare more bytes than this;
        by default half of this machine's memory.

    Returns
    -------
    DataExchange
        The validated content.

    Raises
    ------
    DataExchangeError
        Missing datasets (named), mismatched shapes, non-numeric or complex dtypes, NaN/inf,
        angle counts that differ from frame counts, unknown or ambiguous angle units, external
        links or storage (without ``allow_external``), declared sizes above ``max_bytes``.
    FileNotFoundError
        ``path`` does not exist.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if theta_units is not None and theta_units not in ("degrees", "radians"):
        raise ValueError(f"theta_units must be 'degrees' or 'radians', got {theta_units!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataExchangeError(f"{path} is not a readable HDF5 file: {err}") from err
    with f:
        for name in ("data", "theta"):
            if DX_PATHS[name] not in f:
                raise DataExchangeError(f"{path} has no {DX_PATHS[name]}: not a Data Exchange file?")
        _check_sources(f, path, allow_external=allow_external,
                       max_bytes=_memory_bytes() // 2 if max_bytes is None else max_bytes)  # fmt: skip
        values: dict[str, Any] = {}
        for name in _STACKS:
            values[name] = _read_array(f, name, path)
        notes: list[str] = []
        for name in ("theta", "reference_theta"):
            if DX_PATHS[name] in f:
                values[name] = _read_theta(f[DX_PATHS[name]], theta_units, notes, path)
        for name in ("exposure_time", "exposure_time_long"):
            if DX_PATHS[name] in f:
                values[name] = _read_seconds(f[DX_PATHS[name]], name, path)
        for name in ("sample_name", "run_uid"):
            if DX_PATHS[name] in f:
                values[name] = _read_str(f[DX_PATHS[name]])
        for name in ("metadata", "provenance"):
            if DX_PATHS[name] in f:
                text = _read_str(f[DX_PATHS[name]])
                try:
                    values[name] = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataExchangeError(f"{path}: {DX_PATHS[name]} is not valid JSON: {err}") from err
        corrected = bool(f["exchange"].attrs.get("corrected", False))
        values["reconstruction"] = _read_array(f, "reconstruction", path)
        description = f[DX_PATHS["data"]].attrs.get("description")
        if description is not None:
            values["data_description"] = _attr_str(description)
    dx = DataExchange(**values, corrected=corrected, notes=notes)
    try:
        dx = dx.validate()
    except DataExchangeError as err:
        raise DataExchangeError(f"{path}: {err}") from None
    if require_flat_dark and not dx.corrected:
        missing = [DX_PATHS[n] for n in ("data_white", "data_dark") if getattr(dx, n) is None]
        if missing:
            raise DataExchangeError(
                f"{path} has raw projections but no {' and no '.join(missing)}: flat/dark correction "
                "needs both (or a file of corrected transmission, /exchange attribute corrected=True)"
            )
    return dx


def _check_sources(f: Any, path: Path, *, allow_external: bool, max_bytes: int) -> None:
    """Refuse external links/storage and oversized declarations before any dataset is read."""
    import h5py

    total = 0
    for name, where in DX_PATHS.items():
        parts = where.strip("/").split("/")
        node: Any = f
        for i, part in enumerate(parts):  # every link on the way, not only the last one
            here = "/" + "/".join(parts[: i + 1])
            if part not in node:
                node = None
                break
            link = node.get(part, getlink=True)
            if isinstance(link, h5py.ExternalLink) and not allow_external:
                raise DataExchangeError(
                    f"{path}: {here} is an external link to {link.filename}:{link.path}; "
                    "pass allow_external=True (CLI --allow-external) to follow it"
                )
            node = node[part]
        if node is None or not isinstance(node, h5py.Dataset):
            continue
        if not allow_external and (node.external or node.is_virtual):
            kind = "virtual dataset" if node.is_virtual else "external raw storage"
            raise DataExchangeError(
                f"{path}: {where} is a {kind} (its data live in other files); pass allow_external=True "
                "(CLI --allow-external) to read it"
            )
        if name in _STACKS or name in ("reconstruction", "theta", "reference_theta"):
            total += int(np.prod(node.shape, dtype=np.int64)) * node.dtype.itemsize
    if total > max_bytes:
        raise DataExchangeError(
            f"{path}: its datasets declare {total / 2**30:.1f} GiB, more than the "
            f"{max_bytes / 2**30:.1f} GiB this reader allows (max_bytes; default: half the memory)"
        )


def _read_array(f: Any, name: str, path: Path) -> np.ndarray | None:
    import h5py

    where = DX_PATHS[name]
    if where not in f:
        return None
    node = f[where]
    if not isinstance(node, h5py.Dataset):
        raise DataExchangeError(f"{path}: {where} is a group, expected a dataset")
    if not _is_real_numeric(node.dtype):
        raise DataExchangeError(
            f"{path}: {where} has dtype {node.dtype}: frames must be real numbers (integer or floating point)"
        )
    return node[()]


def _read_theta(ds: Any, theta_units: ThetaUnits | None, notes: list[str], path: Path) -> np.ndarray:
    where = ds.name
    if not _is_real_numeric(ds.dtype):
        raise DataExchangeError(f"{path}: {where} has dtype {ds.dtype}: angles must be real numbers")
    theta = np.asarray(ds[()], dtype=np.float64).reshape(-1)
    attr = ds.attrs.get("units")
    if isinstance(attr, bytes):
        attr = attr.decode()
    if attr is not None:
        unit = str(np.asarray(attr).reshape(-1)[0]).strip().lower()
        if unit in _DEGREES:
            units: str = "degrees"
        elif unit in _RADIANS:
            units = "radians"
        else:
            raise DataExchangeError(f"{path}: {where} has units {attr!r}; expected 'degrees' or 'radians'")
        if theta_units is not None and theta_units != units:
            notes.append(f"{where} says units={unit!r}; theta_units={theta_units!r} not applied to it")
    elif theta_units is not None:
        units = theta_units
    else:
        finite = theta[np.isfinite(theta)]
        if finite.size and np.max(np.abs(finite)) > _TWO_PI:
            units = "degrees"
        elif not np.any(finite):
            units = "degrees"  # all zero: the same in both units
        else:
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            raise DataExchangeError(
                f"{path}: {where} has no 'units' attribute and its values ({lo:g} .. {hi:g}) are all "
                "within 2*pi: they could be radians or a small range of degrees. Set the attribute "
                f"(h5py: f['{where}'].attrs['units'] = 'radians' or 'degrees') or pass "
                "theta_units='radians'/'degrees' (CLI: --theta-units)"
            )
    if units == "radians":
        finite = theta[np.isfinite(theta)]
        if finite.size and np.max(np.abs(finite)) > 2 * _TWO_PI:  # more than two turns: not radians
            top = float(np.max(np.abs(finite)))
            raise DataExchangeError(
                f"{path}: {where} is labelled (or given as) radians but reaches {top:g}, i.e. "
                f"{np.rad2deg(top):.0f} degrees: degrees labelled as radians? Fix the 'units' attribute "
                "or --theta-units"
            )
        theta = np.rad2deg(theta)
        notes.append(f"{where} converted from radians to degrees")
        logger.info("%s: %s converted from radians to degrees", path, where)
    return theta


def _attr_str(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_seconds(ds: Any, name: str, path: Path) -> float:
    value = _as_float(ds[()], name)
    unit = ds.attrs.get("units", "s")
    if isinstance(unit, bytes):
        unit = unit.decode()
    unit = str(unit).strip().lower()
    if unit not in _SECONDS:
        raise DataExchangeError(f"{path}: {ds.name} has units {unit!r}; expected s, ms or us")
    return value * _SECONDS[unit]


def _read_str(ds: Any) -> str:
    value = ds[()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)
    return str(value)
