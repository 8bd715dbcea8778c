"""One way to start, wait for and stop a child process.

The embedded Tiled server, the queue stack's Redis and RE Manager, and the tests' IOC, 0MQ proxy,
enhancer service and Dask cluster all run as a :class:`ChildProcess`: in its own session (a
signal reaches the whole process group, workers included), output into a log file or a pipe,
``wait_until`` a readiness check passes (failing at once, with the log, when the process dies
first), and ``stop``: SIGTERM, then SIGKILL after a timeout.

A pid read back from a file (a stale state file) may belong to another process by now:
:func:`pid_alive` and :func:`terminate` check the process's start time against the one
recorded when it was spawned (:func:`start_ticks`) and never signal a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ChildProcess",
    "ChildProcessFailed",
    "pid_alive",
    "process_identity",
    "start_ticks",
    "terminate",
]


class ChildProcessFailed(RuntimeError):
    """The child process ended, or did not get ready in time (the message holds its log)."""


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22).

    Parameters
    ----------
    pid : int
        A process id.

    Returns
    -------
    int or None
        The start time, or None where it is not known (no such process, no ``/proc``).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def process_identity() -> dict[str, Any]:
    """This process as a record that outlives it: host, pid and start time.

    Written into what a process leaves open while it works (a processed run's start document),
    so that a later process on the same host can tell whether the writer still runs
    (:func:`pid_alive` with ``started``) or died without closing it.

    Returns
    -------
    dict
        ``{"host": ..., "pid": ..., "pid_start": ...}`` (``pid_start`` None without ``/proc``).
    """
    import socket

    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": start_ticks(pid)}


def pid_alive(pid: int | None, started: int | None = None) -> bool:
    """Whether ``pid`` runs — and, with ``started``, whether it is still that process.

    Parameters
    ----------
    pid : int or None
        A process id (None or 0: no process).
    started : int, optional
        Its :func:`start_ticks` when it was spawned: a later process that got the same pid is
        not it.

    Returns
    -------
    bool
        True while the process runs (a zombie child of ours is reaped and is not alive).
    """
    if not pid:
        return False
    if started is not None and start_ticks(pid) not in (started, None):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def terminate(
    pid: int | None, *, group: bool = True, timeout: float = 10.0, started: int | None = None
) -> bool:
    """SIGTERM (the process group when ``group``), wait up to ``timeout``, then SIGKILL.

    Parameters
    ----------
    pid : int or None
        The process (the leader of its group when ``group``).
    group : bool
        Signal the whole process group.
    timeout : float
        Seconds between SIGTERM and SIGKILL.
    started : int, optional
        Its start time when spawned (:func:`start_ticks`): a process with that pid that started
        at another time is another process and is left alone.

    Returns
    -------
    bool
        False when the pid now belongs to another process (nothing was signalled).
    """
    if not pid_alive(pid, started):
        return not (pid and started is not None and pid_alive(pid))
    assert pid is not None
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid, started):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, signal.SIGKILL)  # a straggler of the group
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


class ChildProcess:
    """A child process in its own session, its output in a log file or a pipe.

    Parameters
    ----------
    args : sequence of str
        The command.
    log : str or Path, optional
        File the output (stdout and stderr) is appended to; None: a pipe (:attr:`stdout`).
    env : mapping, optional
        Environment (default: this process's).
    name : str
        What it is, for messages.
    stdin : bool
        Give it a pipe as its input (:attr:`stdin`); default: nothing to read.
    stderr : {"merge", "inherit"}
        Its error output into the same log or pipe as its output (``"merge"``), or into this
        process's (``"inherit"``: e.g. its progress bars on the terminal, its output kept apart).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        log: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "",
        stdin: bool = False,
        stderr: str = "merge",
    ) -> None:
        if stderr not in ("merge", "inherit"):
            raise ValueError(f"stderr must be 'merge' or 'inherit', got {stderr!r}")
        self.name = name or Path(args[0]).name
        self.log_path = None if log is None else Path(log)
        out: Any = subprocess.PIPE
        handle = None
        if self.log_path is not None:
            handle = out = open(self.log_path, "ab")  # closed below: the child keeps its copy
        try:
            self.proc = subprocess.Popen(
                list(args), stdout=out, stderr=subprocess.STDOUT if stderr == "merge" else None,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=None if env is None else dict(env), start_new_session=True,
            )  # fmt: skip
        finally:
            if handle is not None:
                handle.close()
        self.started = start_ticks(self.proc.pid)

    @property
    def pid(self) -> int:
        """The process id (and process group id)."""
        return self.proc.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        """The input pipe (with ``stdin=True``)."""
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        """The output pipe (without a log file)."""
        return self.proc.stdout

    @property
    def returncode(self) -> int | None:
        """The exit status, None while it runs."""
        return self.proc.poll()

    def poll(self) -> int | None:
        """The exit status, None while it runs (as :meth:`subprocess.Popen.poll`)."""
        return self.proc.poll()

    @property
    def alive(self) -> bool:
        """True while it runs."""
        return self.proc.poll() is None

    def log_text(self, tail: int | None = None) -> str:
        """What it wrote to its log so far (the last ``tail`` characters)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def wait_until(
        self, ready: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll ``ready()`` until it is true.

        Parameters
        ----------
        ready : callable
            The readiness check (exceptions count as not ready).
        timeout : float
            Seconds.
        what : str
            What is awaited, for the message.
        interval : float
            Seconds between checks.

        Raises
        ------
        ChildProcessFailed
            The process ended first, or ``timeout`` passed (the message holds its log's tail).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ChildProcessFailed(
                    f"{what}: {self.name} ended (exit status {self.proc.returncode}):\n{self.log_text(4000)}"
                )
            try:
                if ready():
                    return
            except Exception:  # not ready yet
                pass
            if time.monotonic() > deadline:
                raise ChildProcessFailed(f"{what}: not within {timeout} s:\n{self.log_text(4000)}")
            time.sleep(interval)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM its process group, wait up to ``timeout``, then SIGKILL.

        Parameters
        ----------
        timeout : float
            Seconds between SIGTERM and SIGKILL.

        Returns
        -------
        int or None
            The exit status.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode  # an output pipe stays open: whoever reads it closes it

    def kill(self) -> None:
        """SIGKILL its process group: it dies without closing anything."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
