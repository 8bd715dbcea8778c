"""Read and write Data Exchange HDF5 files (APS/TomoBank layout) with h5py, validated.

Pure: imports numpy and h5py only (no bluesky, ophyd or tiled).  See ``docs/dxchange.md`` for
the layout and the ``bluesky_lowdose`` extension that carries the long/short reference pairs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "DX_PATHS",
    "DataExchange",
    "DataExchangeError",
    "ThetaUnits",
    "read_dxfile",
    "write_dxfile",
    "write_enhanced",
]

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


# -- writing ---------------------------------------------------------------------------------------


def write_dxfile(
    path: str | os.PathLike[str],
    dx: DataExchange,
    *,
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write a :class:`DataExchange` to a Data Exchange HDF5 file.

    The file is written under a temporary name and renamed at the end, so a failed write leaves
    no partial file behind.  Frame stacks are chunked one frame per chunk; angles carry
    ``units="degrees"``, exposure times ``units="s"``.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.h5``).
    dx : DataExchange
        The content; validated first.
    overwrite : bool
        Replace an existing file.
    compression : str, optional
        The h5py compression filter of the frame stacks, e.g. ``"gzip"`` (default: none).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    DataExchangeError
        ``dx`` is inconsistent.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import h5py

    dx = dx.validate()
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True / --overwrite to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory (for {path.name})")
    tmp = _private_partial(path)
    try:
        with h5py.File(tmp, "r+") as f:
            implements = IMPLEMENTS
            if dx.reconstruction is not None:
                implements = IMPLEMENTS.replace("exchange:", f"exchange:{RECONSTRUCTION_GROUP[1:]}:", 1)
            f.create_dataset("implements", data=implements)
            f.attrs["creator"] = "bluesky_lowdose"
            for name, exposure in _STACKS.items():
                arr = getattr(dx, name)
                if arr is None:
                    continue
                ds = f.create_dataset(
                    DX_PATHS[name],
                    data=arr,
                    chunks=(1, *arr.shape[1:]),
                    compression=compression,
                )
                ds.attrs["axes"] = (
                    "theta:y:x" if name in ("data", "reference_short", "reference_long") else "z:y:x"
                )
                ds.attrs["description"] = (
                    dx.data_description if name == "data" and dx.data_description else _DESCRIPTIONS[name]
                )
                ds.attrs["exposure"] = exposure
                ds.attrs["units"] = "transmission" if dx.corrected else "counts"
            if dx.reconstruction is not None:
                rec = dx.reconstruction
                ds = f.create_dataset(
                    DX_PATHS["reconstruction"], data=rec, chunks=(1, *rec.shape[1:]), compression=compression
                )
                ds.attrs["axes"] = "z:y:x"
                ds.attrs["description"] = "reconstructed volume (see /process/bluesky_lowdose/provenance)"
                ds.attrs["units"] = "1/pixel"
                f[RECONSTRUCTION_GROUP].create_dataset("title", data="tomography reconstruction")
            exchange = f["exchange"]
            exchange.attrs["corrected"] = bool(dx.corrected)
            if dx.corrected:
                exchange.attrs["correction"] = "(I - D) / (F - D): flat/dark-corrected transmission"
            for name in ("theta", "reference_theta"):
                arr = getattr(dx, name)
                if arr is not None:
                    f.create_dataset(DX_PATHS[name], data=arr).attrs["units"] = "degrees"
            for name in ("exposure_time", "exposure_time_long"):
                value = getattr(dx, name)
                if value is not None:
                    f.create_dataset(DX_PATHS[name], data=value).attrs["units"] = "s"
            if dx.sample_name is not None:
                f.create_dataset(DX_PATHS["sample_name"], data=str(dx.sample_name))
            group = f.require_group("/process/bluesky_lowdose")
            group.attrs["software"] = "bluesky_lowdose"
            group.attrs["version"] = _version()
            group.attrs["written"] = datetime.now(UTC).isoformat(timespec="seconds")
            if dx.run_uid is not None:
                f.create_dataset(DX_PATHS["run_uid"], data=str(dx.run_uid))
            f.create_dataset(DX_PATHS["metadata"], data=json.dumps(dx.metadata, allow_nan=False))
            if dx.provenance is not None:
                ds = f.create_dataset(DX_PATHS["provenance"], data=json.dumps(dx.provenance, allow_nan=False))
                ds.attrs["format"] = "json"
                for key in ("architecture", "model_hash", "created"):
                    value = _find(dx.provenance, key)
                    if isinstance(value, str):
                        group.attrs[key] = value
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _find(record: Mapping[str, Any], key: str) -> Any:
    """``record[key]`` or, failing that, ``record["enhancer"][key]``."""
    if key in record:
        return record[key]
    inner = record.get("enhancer")
    return inner.get(key) if isinstance(inner, Mapping) else None


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bluesky-lowdose")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def write_enhanced(
    path: str | os.PathLike[str],
    enhanced: np.ndarray,
    theta: Any,
    provenance: Mapping[str, Any],
    *,
    exposure_time: float | None = None,
    reference_long: np.ndarray | None = None,
    reference_theta: Any = None,
    sample_name: str | None = None,
    run_uid: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    reconstruction: np.ndarray | None = None,
    data_description: str | None = None,
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write enhanced projections (flat/dark-corrected transmission) as a Data Exchange file.

    ``/exchange/data`` holds ``enhanced`` as float32 transmission; no flats or darks are
    written and ``/exchange`` carries ``corrected=True`` (a reader that wants line integrals
    takes ``-log`` directly).  ``provenance`` goes to ``/process/bluesky_lowdose/provenance``;
    a ``reconstruction`` goes to ``/exchange_1/data`` (``z:y:x``, float32).

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    enhanced : numpy.ndarray
        ``(n, rows, cols)`` enhanced transmission.
    theta : array_like
        ``(n,)`` angles in degrees.
    provenance : mapping
        JSON-serialisable record of how ``enhanced`` was made.
    exposure_time : float, optional
        Exposure of the (short) projections that were enhanced, seconds.
    reference_long : numpy.ndarray, optional
        Corrected long-exposure frames ``(m, rows, cols)`` to keep for comparison.
    reference_theta : array_like, optional
        Their angles in degrees.
    sample_name, run_uid : str, optional
        Sample name and source run uid.
    metadata : mapping, optional
        Further JSON-serialisable metadata.
    reconstruction : numpy.ndarray, optional
        ``(z, y, x)`` reconstructed volume (attenuation per pixel).
    data_description : str, optional
        The ``description`` attribute of ``/exchange/data`` (default ``"projections"``).
    overwrite : bool
        Replace an existing file.
    compression : str, optional
        The h5py compression filter of the frame stacks.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    dx = DataExchange(
        data=np.asarray(enhanced, dtype=np.float32),
        theta=np.asarray(theta),
        exposure_time=exposure_time,
        reference_long=None if reference_long is None else np.asarray(reference_long, dtype=np.float32),
        reference_theta=reference_theta,
        corrected=True,
        sample_name=sample_name,
        run_uid=run_uid,
        metadata=dict(metadata or {}),
        provenance=dict(provenance),
        reconstruction=None if reconstruction is None else np.asarray(reconstruction, dtype=np.float32),
        data_description=data_description,
    )
    return write_dxfile(path, dx, overwrite=overwrite, compression=compression)


# -- reading ---------------------------------------------------------------------------------------


def _private_partial(path: Path) -> Path:
    """Create the in-progress file next to ``path`` with O_EXCL and an unpredictable name.

    A planted ``.NAME.partial`` or symlink is never followed or clobbered; the file is an empty
    HDF5 file, renamed onto ``path`` only when complete.
    """
    import secrets

    import h5py

    # O_EXCL with mode 0666: the kernel applies the umask, as to any new file (mkstemp's 0600
    # would outlive the rename; reading the umask means setting it, which races other threads)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.partial")
        try:
            fd = os.open(name, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    else:
        raise FileExistsError(f"could not create an in-progress file next to {path}")
    with h5py.File(name, "w"):  # the file mkstemp made (same inode): an empty HDF5 file
        pass
    return Path(name)


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
