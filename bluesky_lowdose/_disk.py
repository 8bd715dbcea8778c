"""Refuse a write that would fill the disk, before HDF5 sees the full disk.

HDF5 does not survive ``ENOSPC``: a failed write leaves the file's metadata half written, and
closing it — or letting Python free it — can crash the whole process (a segfault, not an
exception). Every HDF5 file the package writes while a scan runs (the simulated detector's
frames, the enhancer's line integrals and volumes) therefore asks :func:`check_free_space` first,
and stops with :class:`DiskFull` — an ``OSError`` with ``errno.ENOSPC`` that names the folder and
the numbers — while :data:`reserve <reserve_bytes>` bytes are still free: room for Tiled's catalog,
the stop documents and the backup journal, so that the scan ends cleanly and nothing already
taken is lost.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["DEFAULT_RESERVE_MB", "RESERVE_ENV", "DiskFull", "check_free_space", "reserve_bytes"]

#: Environment variable: MiB to keep free on any disk the package writes scan data to.
RESERVE_ENV = "LOWDOSE_DISK_RESERVE_MB"
#: Its default.
DEFAULT_RESERVE_MB = 64.0

_MIB = 2**20


class DiskFull(OSError):
    """A write was refused because the disk would be (nearly) full: ``errno.ENOSPC``."""


def reserve_bytes() -> int:
    """Bytes kept free (``$LOWDOSE_DISK_RESERVE_MB``, default :data:`DEFAULT_RESERVE_MB`).

    Returns
    -------
    int
        The reserve.

    Raises
    ------
    ValueError
        The variable is not a number ≥ 0.
    """
    text = os.environ.get(RESERVE_ENV, "")
    try:
        mb = float(text) if text.strip() else DEFAULT_RESERVE_MB
    except ValueError:
        raise ValueError(f"{RESERVE_ENV}={text!r} is not a number of MiB") from None
    if not mb >= 0:
        raise ValueError(f"{RESERVE_ENV}={text!r} must be ≥ 0")
    return int(mb * _MIB)


def check_free_space(path: str | Path, nbytes: int, what: str) -> None:
    """Raise :class:`DiskFull` unless ``nbytes`` fit on ``path``'s disk with the reserve left.

    Parameters
    ----------
    path : str or Path
        The file (or folder) about to be written; its nearest existing folder is measured.
    nbytes : int
        Bytes about to be written.
    what : str
        What is written, for the message (``"frame 12 of txm_cam"``).

    Raises
    ------
    DiskFull
        Fewer than ``nbytes`` + the reserve are free.
    """
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:  # nothing to measure (a path that vanished): the write itself will tell
        return
    free = st.f_bavail * st.f_frsize
    reserve = reserve_bytes()
    if free < int(nbytes) + reserve:
        raise DiskFull(
            errno.ENOSPC,
            f"disk full: {what} needs {nbytes / _MIB:.2f} MiB in {folder}, where {free / _MIB:.1f} MiB are "
            f"free and {reserve / _MIB:.0f} MiB are kept free for the catalog, the stop documents and the "
            f"backup ({RESERVE_ENV}); free space there and start again",
        )
