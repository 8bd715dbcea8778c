"""Write Data Exchange HDF5 files: a scan, and an enhanced result beside its input."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .io import (
    _DESCRIPTIONS,
    _STACKS,
    DX_PATHS,
    IMPLEMENTS,
    RECONSTRUCTION_GROUP,
    DataExchange,
)

__all__ = ["write_dxfile", "write_enhanced"]

logger = logging.getLogger("bluesky_lowdose.dxchange.io")


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
