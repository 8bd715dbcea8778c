"""An embedded Tiled server (SQLite catalog + files + DuckDB tables) in its own process.

The server runs as a subprocess (``python -m bluesky_lowdose.storage.tiled_serve serve catalog ...``:
tiled's command line with its DuckDB tables used by one request at a time), never inside the
process that imports TensorFlow: TensorFlow bundles an SQLite without FTS5 and, once
imported first, breaks every write to Tiled's SQLite catalog (see docs/architecture.md).
It also keeps HTTP handling from competing with training for the GIL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .._process import ChildProcess, ChildProcessFailed

__all__ = ["DataDirectory", "TiledServer", "TiledServerError", "free_port", "resolve_api_key"]

logger = logging.getLogger(__name__)

API_KEY_ENV = "TILED_API_KEY"
API_KEY_FILE = ".tiled_api_key"


#: Tiled web UI settings with columns for the run catalogs (tiled's defaults plus ``specs``).
UI_SETTINGS = Path(__file__).with_name("tiled_ui_settings.yml")


class TiledServerError(RuntimeError):
    """The Tiled server could not be started or reached."""


def private_directory(path: str | Path) -> Path:
    """Create ``path`` and its missing parents readable by their owner only (0700).

    Directories that exist keep their mode. Every command that may create a data directory
    (``demo``, ``serve``, ``queue start``, the profile) goes through here, so ``catalog.db`` and
    the detector files are never world-readable because of who created the directory first.

    Parameters
    ----------
    path : str or Path
        The directory.

    Returns
    -------
    Path
        The directory (expanded, absolute).
    """
    path = Path(path).expanduser().absolute()
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process: keep its mode
            continue
        os.chmod(p, 0o700)  # mkdir's mode is filtered by the umask
    return path


@dataclass(frozen=True)
class DataDirectory:
    """The layout of a data directory served by the embedded Tiled server.

    Parameters
    ----------
    root : Path
        The data directory.
    """

    root: Path

    @classmethod
    def create(cls, root: str | Path) -> DataDirectory:
        """Make (if needed) the directory tree and return its layout.

        A data directory this call creates is readable by its owner only (0700): runs, backups,
        logs and the key file are nobody else's business. An existing one keeps its mode.
        """
        d = cls(Path(root).expanduser().resolve())
        private_directory(d.root)
        for p in (d.root, d.tiled, d.writable, d.detector, d.volumes, d.backup, d.results, d.work):
            p.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def tiled(self) -> Path:
        """Catalog database and Tiled-managed storage."""
        return self.root / "tiled"

    @property
    def catalog(self) -> Path:
        """SQLite catalog database."""
        return self.tiled / "catalog.db"

    @property
    def writable(self) -> Path:
        """Files written through Tiled (arrays, zarr)."""
        return self.tiled / "data"

    @property
    def tabular(self) -> Path:
        """DuckDB database for appendable tables (event streams)."""
        return self.tiled / "tables.duckdb"

    @property
    def detector(self) -> Path:
        """HDF5 files written by detectors, registered by Tiled without copying."""
        return self.root / "detector"

    @property
    def volumes(self) -> Path:
        """HDF5 files of the processed runs' volumes, registered by Tiled without copying (the
        enhancer's ``volume_directory``)."""
        return self.root / "volumes"

    @property
    def backup(self) -> Path:
        """JSON-lines backups of runs that could not be written to Tiled."""
        return self.root / "backup"

    @property
    def work(self) -> Path:
        """The enhancer's files while a scan is reconstructed: line integrals, volumes (bounded
        memory); each run's folder goes once its processed run is written."""
        return self.root / "work"

    @property
    def results(self) -> Path:
        """Figures and summaries of the main job."""
        return self.root / "results"


def resolve_api_key(data_dir: str | Path | None = None) -> str:
    """The API key: ``$TILED_API_KEY``, else the one kept in the data directory, else a new one.

    A generated key is written to ``<data_dir>/.tiled_api_key`` readable by its owner only.

    Parameters
    ----------
    data_dir : str or Path, optional
        Where the key is kept.

    Returns
    -------
    str
        The API key.
    """
    env = os.environ.get(API_KEY_ENV)
    if env:
        return env
    if data_dir is None:
        return secrets.token_hex(32)
    path = Path(data_dir) / API_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return key


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise TiledServerError(f"cannot resolve host {host!r}: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (IPv4 or IPv6)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _redact_into(stream: Any, path: Path, secret: str) -> None:
    """Copy the server's output into its log with the key replaced by ``***`` (a daemon thread)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, stat.S_IRUSR | stat.S_IWUSR)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    lost = 0
    with os.fdopen(fd, "ab", buffering=0) as log:
        # The pipe is read to its end whatever happens to the log: a server whose output is not
        # read blocks on its next write, and every request (/healthz too) then hangs for good.
        for line in iter(stream.readline, b""):
            line = line.replace(secret.encode(), b"***")
            try:
                if lost:
                    log.write(b"[%d lines of server output lost: the log could not be written]\n" % lost)
                    lost = 0
                log.write(line)
            except OSError:  # disk full, quota: drop the line, keep reading, say so once it works again
                lost += 1
    stream.close()


class TiledServer:
    """A Tiled server serving a data directory, run in a subprocess.

    Parameters
    ----------
    data_dir : str or Path
        Data directory (created if missing); the catalog persists there.
    port : int, optional
        TCP port (default: a free one).
    host : str
        Address to bind (default loopback).
    api_key : str, optional
        Single-user API key (default: :func:`resolve_api_key`).
    startup_timeout : float
        Seconds to wait for ``/healthz``.

    Examples
    --------
    >>> with TiledServer("lowdose-data") as server:  # doctest: +SKIP
    ...     client = server.client()
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.layout = DataDirectory.create(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.api_key = api_key or resolve_api_key(self.layout.root)
        self.startup_timeout = startup_timeout
        self._proc: ChildProcess | None = None
        self._log_path = self.layout.tiled / "server.log"

    @property
    def uri(self) -> str:
        """The server's address (without the key)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        lay = self.layout
        return [
            sys.executable,
            "-m",
            "bluesky_lowdose.storage.tiled_serve",  # tiled's command line, DuckDB used serially
            "serve",
            "catalog",
            str(lay.catalog),
            *(() if lay.catalog.exists() else ("--init",)),
            "-w",
            str(lay.writable),
            "-w",
            f"duckdb:///{lay.tabular}",  # duckdb:/// + absolute path = four slashes
            "-r",
            str(lay.detector),
            "-r",
            str(lay.volumes),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def start(self) -> TiledServer:
        """Start the server and wait until it answers ``/healthz``.

        The port must be free before the server starts (something else answering ``/healthz``
        there would otherwise receive the key with every request); the server's output goes to
        ``<data>/tiled/server.log`` (mode 0600) with the key replaced by ``***``.

        Raises
        ------
        TiledServerError
            The port is taken, the server exits during start-up or does not answer in time (the
            process is stopped: nothing is left running).
        """
        if self._proc is not None:
            return self
        if _port_in_use(self.host, self.port):
            raise TiledServerError(
                f"port {self.port} on {self.host} is already in use by another process: choose another "
                "port (or none, for a free one); the key is never sent to a server this process did not start"
            )
        env = dict(os.environ)
        env["TILED_SINGLE_USER_API_KEY"] = self.api_key
        # the web UI's run lists get columns (scan id, time, plan, status, method, result)
        env.setdefault("TILED_UI_SETTINGS", str(UI_SETTINGS))
        env.pop(API_KEY_ENV, None)
        self._proc = ChildProcess(self.command(), env=env, name="tiled serve")
        self._log_thread = threading.Thread(
            target=_redact_into, args=(self._proc.stdout, self._log_path, self.api_key),
            name="tiled-server-log", daemon=True,
        )  # fmt: skip
        self._log_thread.start()
        # a script that raises after start() (without close() or ``with``) leaves no server behind
        self._finalizer = weakref.finalize(self, self._proc.stop)
        try:
            self._wait_until_up()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_until_up(self) -> None:
        proc = self._proc
        assert proc is not None

        def up() -> bool:
            return httpx.get(f"{self.uri}/healthz", timeout=1.0).status_code == 200

        try:
            proc.wait_until(up, timeout=self.startup_timeout, interval=0.2, what=f"Tiled at {self.uri}")
        except ChildProcessFailed:
            if proc.alive:
                raise TiledServerError(
                    f"Tiled server did not answer {self.uri}/healthz within {self.startup_timeout} s"
                ) from None
            self._log_thread.join(5)  # its output is in the redacted log, not the pipe
            tail = self._log_path.read_text(errors="replace")[-2000:]
            raise TiledServerError(f"Tiled server exited during start-up:\n{tail}") from None
        logger.info("Tiled server at %s serving %s", self.uri, self.layout.root)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        proc.stop(timeout)
        thread = getattr(self, "_log_thread", None)
        if thread is not None:
            thread.join(5)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def client(self):
        """A tiled client of this server, with the run catalogs ``raw`` and ``processed``."""
        from .catalog import connect

        return connect(self.uri, api_key=self.api_key)

    def __enter__(self) -> TiledServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
