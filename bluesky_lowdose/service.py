"""``lowdose-tomo enhancer``: the streaming enhancer as its own process, fed by bluesky's 0MQ bus.

The RunEngine publishes its documents with ``bluesky.callbacks.zmq.Publisher`` (the profile does
so when ``LOWDOSE_ENHANCER_ZMQ`` is set) to a ``bluesky-0MQ-proxy``; this service subscribes a
:class:`~bluesky_lowdose.callbacks.ProjectionEnhancer` to the proxy's output with a
``bluesky.callbacks.zmq.RemoteDispatcher``. Training, enhancement, reconstruction and any GPU
memory then never share a process with the RunEngine; the processed runs go to Tiled exactly as
with the in-process enhancer.

::

    bluesky-0MQ-proxy --in-address 127.0.0.1:5577 --out-address 127.0.0.1:5578
    lowdose-tomo enhancer --zmq 127.0.0.1:5578 --tiled-uri http://127.0.0.1:8000
    LOWDOSE_ENHANCER_ZMQ=127.0.0.1:5577 ipython --profile=lowdose    # the RunEngine side

The service reads the detector's frames from the files the documents point to, so it must see
the detector directory at the same path as the RunEngine (same machine or a shared file system).

On SIGTERM or SIGINT it stops listening, ends every run whose stop document has not arrived
(its processed run is closed as partial, with the reason) and waits for the open runs to be
written; a second signal exits at once. Errors while processing a run make that run partial
and never end the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ._argtypes import count, method, positive_float

__all__ = [
    "EnhancerService",
    "RunOutcome",
    "ServiceError",
    "ServiceReport",
    "configure_parser",
    "parse_zmq_address",
    "run",
    "run_enhancer_service",
]

logger = logging.getLogger(__name__)

#: The Tiled server ``lowdose-tomo serve`` starts by default.
DEFAULT_TILED_URI = "http://127.0.0.1:8000"

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>\d+)$")


class ServiceError(Exception):
    """A problem the user can fix (bad address, Tiled unreachable); one line, no traceback.

    Parameters
    ----------
    message : str
        What is wrong.
    code : int
        Exit status of ``lowdose-tomo enhancer`` (2: bad usage, 1: a service is unreachable).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunOutcome:
    """What the service produced for one raw run.

    Attributes
    ----------
    raw_uid, processed_uid : str
        The raw run and its processed run ("" when none was written).
    method : str
        The pipeline method run.
    status : str
        ``"complete"`` or ``"partial"``.
    reasons : list of str
        Why the processed run is partial.
    """

    raw_uid: str
    processed_uid: str
    method: str
    status: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class ServiceReport:
    """How a run of the service ended.

    Attributes
    ----------
    outcomes : list of RunOutcome
        Every raw run processed, in the order they finished.
    stop_reason : str
        Why the service stopped (a signal, ``stop_after`` reached, the bus failed).
    closed_in_time : bool
        False when runs were still being processed or written at the end of the close timeout.
    """

    outcomes: list[RunOutcome] = field(default_factory=list)
    stop_reason: str = ""
    closed_in_time: bool = True


def parse_zmq_address(text: str) -> str:
    """The 0MQ address of ``HOST:PORT``, ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Parameters
    ----------
    text : str
        The address as a user writes it.

    Returns
    -------
    str
        ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Raises
    ------
    ValueError
        The text is no such address, or the port is not 1 ... 65535.

    Examples
    --------
    >>> parse_zmq_address("127.0.0.1:5578")
    'tcp://127.0.0.1:5578'
    """
    text = text.strip()
    if text.startswith("ipc://") and len(text) > len("ipc://"):
        return text
    rest = text[len("tcp://") :] if text.startswith("tcp://") else text
    match = _HOST_PORT.match(rest)
    if match is None:
        raise ValueError(f"{text!r} is not a 0MQ address: give HOST:PORT, tcp://HOST:PORT or ipc://PATH")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: a TCP port is 1 ... 65535, got {port}")
    return f"tcp://{rest}"


def _check_zmq_address(address: str) -> None:
    """Raise :class:`ServiceError` when 0MQ cannot connect to ``address`` (e.g. unknown host)."""
    import socket

    import zmq

    if address.startswith("tcp://"):
        host = address[len("tcp://") :].rpartition(":")[0].strip("[]")
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ServiceError(
                f"cannot resolve the host of {address}: {exc.strerror or exc}", code=2
            ) from None

    context = zmq.Context()
    try:
        sock = context.socket(zmq.SUB)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            raise ServiceError(f"cannot subscribe to {address}: {exc}", code=2) from None
        finally:
            sock.close(linger=0)
    finally:
        context.term()


class EnhancerService:
    """Feed a :class:`~bluesky_lowdose.callbacks.ProjectionEnhancer` from a 0MQ proxy until stopped.

    Parameters
    ----------
    zmq_address : str
        The proxy's output (``HOST:PORT``, ``tcp://...`` or ``ipc://...``).
    enhancer : ProjectionEnhancer
        The enhancer (or any callback with its ``results``, ``progress_of``, ``close`` and
        ``forget``).
    stop_after : int, optional
        Stop once this many runs have been fully processed and written.
    ready_file : str or Path, optional
        Written (JSON: ``pid``, ``zmq``) once the subscription to the proxy is established, and
        removed when the service ends: start the scan after it appears (0MQ drops documents
        published before a subscriber is connected).
    close_timeout : float
        Seconds to wait, when stopping, for open runs to be processed and written.
    poll_interval : float
        Seconds between checks for finished runs.
    """

    def __init__(
        self,
        zmq_address: str,
        enhancer: Any,
        *,
        stop_after: int | None = None,
        ready_file: str | Path | None = None,
        close_timeout: float = 600.0,
        poll_interval: float = 0.2,
    ) -> None:
        if stop_after is not None and stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {stop_after}")
        self.address = parse_zmq_address(zmq_address)
        self.enhancer = enhancer
        self.stop_after = stop_after
        self.ready_file = None if ready_file is None else Path(ready_file)
        self.close_timeout = close_timeout
        self.poll_interval = poll_interval
        self.report = ServiceReport()
        self._reported: set[str] = set()
        self._lowdose_runs: set[str] = set()
        self._dispatcher: Any = None
        self._finished = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ main
    def run(self) -> ServiceReport:
        """Listen until a signal, ``stop_after`` runs, or a failure of the bus; then close.

        Returns
        -------
        ServiceReport
            The runs processed and how the service ended.
        """
        dispatcher = _monitored_dispatcher(self.address, self._watch_connection)
        self._dispatcher = dispatcher
        dispatcher.subscribe(self.enhancer)
        dispatcher.subscribe(self._log_document)
        restore = self._install_loop_signal_handlers(dispatcher.loop)
        watcher = threading.Thread(target=self._watch_results, name="lowdose-service-results", daemon=True)
        watcher.start()
        try:
            logger.info("connecting to the 0MQ proxy at %s", self.address)
            dispatcher.start()
        except asyncio.CancelledError:
            pass  # stop requested
        except Exception as exc:
            self.report.stop_reason = self.report.stop_reason or f"the 0MQ subscription failed: {exc!r}"
            logger.exception("the 0MQ subscription to %s failed", self.address)
        finally:
            self._remove_ready_file()
        with _ClosingSignals(restore):
            self._close(watcher)
        return self.report

    def stop(self, reason: str) -> None:
        """Ask the service to stop (thread-safe; also from signal handlers).

        Parameters
        ----------
        reason : str
            Logged and recorded in :attr:`report`.
        """
        with self._lock:
            if self.report.stop_reason:
                return
            self.report.stop_reason = reason
        logger.info("stopping: %s", reason)
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        try:
            dispatcher.loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:  # the loop is already closed
            pass

    def _cancel(self) -> None:
        self._dispatcher.cancel()

    def _close(self, watcher: threading.Thread) -> None:
        open_runs = [uid for uid, res in list(self.enhancer.results.items()) if not res.done.is_set()]
        if open_runs:
            logger.warning(
                "waiting up to %.0f s for %d open run(s); runs without a stop document are closed as "
                "partial: %s",
                self.close_timeout,
                len(open_runs),
                "; ".join(self._describe(uid) for uid in open_runs),
            )
        t0 = time.monotonic()
        self.report.closed_in_time = bool(self.enhancer.close(timeout=self.close_timeout))
        self._finished.set()
        watcher.join()
        self._report_finished()
        if not self.report.closed_in_time:
            left = [uid[:8] for uid, res in list(self.enhancer.results.items()) if not res.done.is_set()]
            logger.error(
                "gave up after %.0f s: run(s) %s still being processed or written; their processed runs "
                "stay open (or are in the backup directory)",
                time.monotonic() - t0,
                ", ".join(left),
            )
        logger.info("enhancer service stopped (%s); %d run(s) processed",
                    self.report.stop_reason, len(self.report.outcomes))  # fmt: skip

    def _describe(self, uid: str) -> str:
        try:
            p = self.enhancer.progress_of(uid)
        except KeyError:
            return f"{uid[:8]} (not started)"
        expected = p.get("frames_expected") or "?"
        return f"{uid[:8]} ({p.get('stage')}, {p.get('frames_enhanced', 0)}/{expected} frames)"

    # ------------------------------------------------------------------ documents and results
    def _log_document(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            uid = doc.get("uid", "?")
            if isinstance(doc.get("lowdose"), dict):
                self._lowdose_runs.add(uid)
                logger.info("run %s (scan_id %s): start received, enhancing", uid, doc.get("scan_id"))
            else:
                logger.info("run %s (%s): not a low-dose scan, ignored", uid, doc.get("plan_name", "?"))
        elif name == "stop" and doc.get("run_start") in self._lowdose_runs:
            self._lowdose_runs.discard(doc["run_start"])
            logger.info("run %s: stop received (exit_status %s)", doc["run_start"], doc.get("exit_status"))

    def _watch_results(self) -> None:
        while not self._finished.wait(self.poll_interval):
            self._report_finished()

    def _report_finished(self) -> None:
        with self._lock:
            finished = [
                (uid, res)
                for uid, res in list(self.enhancer.results.items())
                if uid not in self._reported and res.done.is_set()
            ]
            for uid, res in finished:
                self._reported.add(uid)
                outcome = RunOutcome(uid, res.processed_uid, res.method, res.status, list(res.reasons))
                self.report.outcomes.append(outcome)
                if outcome.status == "complete":
                    logger.info("run %s: processed run %s complete (method %s)",
                                uid, outcome.processed_uid, outcome.method)  # fmt: skip
                else:
                    logger.warning("run %s: processed run %s %s (method %s): %s", uid,
                                   outcome.processed_uid or "-", outcome.status, outcome.method or "-",
                                   "; ".join(outcome.reasons))  # fmt: skip
                try:
                    self.enhancer.forget(uid)  # a long-running service must not keep every stack
                except (KeyError, RuntimeError):
                    pass
            done = len(self.report.outcomes)
        if finished and self.stop_after is not None and done >= self.stop_after:
            self.stop(f"{done} run(s) processed (stop after {self.stop_after})")

    # ------------------------------------------------------------------ connection state
    async def _watch_connection(self, monitor: Any) -> None:
        """Follow the subscription's connection (events of the socket monitor); announce readiness."""
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        subscribed = waiting = False
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                waiting = False
                if not subscribed:
                    subscribed = True
                    self._write_ready_file()
                    logger.info("subscribed to the 0MQ proxy at %s: listening for runs", self.address)
                else:
                    logger.info("reconnected to the 0MQ proxy at %s", self.address)
            elif event == zmq.EVENT_DISCONNECTED:
                logger.warning("lost the 0MQ proxy at %s (documents published meanwhile are lost); "
                               "reconnecting", self.address)  # fmt: skip
            elif event == zmq.EVENT_CONNECT_RETRIED and not waiting:
                waiting = True
                logger.warning("no 0MQ proxy answers at %s yet; retrying", self.address)

    def _write_ready_file(self) -> None:
        if self.ready_file is None:
            return
        tmp = self.ready_file.with_name(self.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "zmq": self.address}))
        tmp.replace(self.ready_file)  # atomic: a reader never sees half a file

    def _remove_ready_file(self) -> None:
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ signals
    def _install_loop_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> dict[int, Any]:
        """SIGTERM/SIGINT stop the service; returns the handlers to restore (empty off the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self.stop, f"received {signal.Signals(sig).name}")
        return previous


class _ClosingSignals:
    """While closing, a second SIGTERM/SIGINT raises KeyboardInterrupt; afterwards restore handlers."""

    def __init__(self, restore: dict[int, Any]) -> None:
        self.restore = restore

    def __enter__(self) -> None:
        for sig in self.restore:
            signal.signal(sig, self._interrupt)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.restore.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    @staticmethod
    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} while closing")


def _monitored_dispatcher(address: str, watch: Callable[[Any], Awaitable[None]]) -> Any:
    """A ``RemoteDispatcher`` whose socket is monitored from before it connects.

    ``RemoteDispatcher.start()`` creates and connects its socket in one step, so a monitor attached
    afterwards can miss the handshake; this subclass's ``start()`` is bluesky's (1.15), with the
    monitor attached between the two, and polling resumed after a message whose name is no
    document kind (upstream's poll task ends there, and the service with it). Documents arrive
    as msgpack (:mod:`bluesky_lowdose.wire`). ``watch(monitor_socket)`` runs on the dispatcher's loop until
    :meth:`cancel`.
    """
    import zmq
    import zmq.asyncio
    from bluesky.callbacks.zmq import RemoteDispatcher

    class MonitoredRemoteDispatcher(RemoteDispatcher):
        _watcher: asyncio.Task | None = None

        def start(self) -> None:
            if self.closed:
                raise RuntimeError("this dispatcher has already been started and stopped")
            monitor = None
            try:
                asyncio.set_event_loop(self.loop)
                self._context = zmq.asyncio.Context()
                self._socket = self._context.socket(zmq.SUB)
                events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                monitor = self._socket.get_monitor_socket(events)
                self._watcher = self.loop.create_task(watch(monitor))
                self._socket.connect(self.address)
                self._socket.setsockopt_string(zmq.SUBSCRIBE, "")
                while True:
                    self._task = self.loop.create_task(self._poll())
                    try:
                        self.loop.run_until_complete(self._task)
                        break
                    except KeyError as exc:  # _poll's DocumentNames[name]: not a document kind
                        logger.error("dropped a 0MQ message naming no document kind: %s", exc)
            finally:
                if self._watcher is not None and not self._watcher.done():
                    self._watcher.cancel()
                    self.loop.run_until_complete(asyncio.gather(self._watcher, return_exceptions=True))
                if monitor is not None:
                    self._socket.disable_monitor()
                    monitor.close(linger=0)
                self.stop()

        def cancel(self) -> None:
            """Stop listening (call on the loop: ``loop.call_soon_threadsafe(dispatcher.cancel)``)."""
            if self._task is not None:
                self._task.cancel()

    from .wire import unpack

    # msgpack, never pickle: a pickle sent to the proxy would otherwise run in this process
    return MonitoredRemoteDispatcher(address, deserializer=unpack)


def _connect_tiled(uri: str, api_key: str | None) -> Any:
    """A client of ``uri`` with its run catalogs, or :class:`ServiceError` in one line (fast when down)."""
    import httpx
    from tiled.client.utils import ClientError

    from .storage import TiledUnreachable, connect

    try:
        return connect(uri, api_key=api_key)  # asks /healthz once first: fast when down
    except TiledUnreachable as exc:
        raise ServiceError(str(exc)) from None
    except ClientError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise ServiceError(
                f"Tiled at {uri} refused the API key (HTTP {status}): set TILED_API_KEY"
            ) from None
        raise ServiceError(f"Tiled at {uri} answered HTTP {status}: {exc}") from None
    except httpx.HTTPError as exc:
        raise ServiceError(f"cannot reach Tiled at {uri}: {exc}") from None
    except RuntimeError as exc:  # tiled's client: "This server requires API key authentication."
        if "API key" not in str(exc):
            raise
        raise ServiceError(f"Tiled at {uri} requires an API key: set TILED_API_KEY") from None


def run_enhancer_service(
    zmq_address: str,
    *,
    tiled_uri: str | None,
    api_key: str | None = None,
    backup_directory: str | Path | None = None,
    work_directory: str | Path | None = None,
    volume_directory: str | Path | None = None,
    method: str = "auto",
    n2i_steps: int | None = None,
    epochs: int | None = None,
    stop_after: int | None = None,
    ready_file: str | Path | None = None,
    close_timeout: float = 600.0,
    client: Any = None,
    preview_interval: float | None = 5.0,
    registry: str = "auto",
) -> ServiceReport:
    """Run the streaming enhancer on the documents of a 0MQ proxy, until stopped.

    Parameters
    ----------
    zmq_address : str
        The proxy's output address (``HOST:PORT``; ``bluesky-0MQ-proxy --out-address``).
    tiled_uri : str or None
        Tiled server receiving the processed runs; None keeps results in memory (logged only).
    api_key : str, optional
        Tiled API key.
    backup_directory : str or Path, optional
        Where processed runs go as JSON lines if Tiled fails.
    work_directory : str or Path, optional
        Line integrals and volumes of the run being reconstructed (bounded memory); None keeps
        them in memory.
    volume_directory : str or Path, optional
        Where the processed runs' volumes are written (HDF5, served in place by Tiled: a folder
        in the server's readable storage); needed with Tiled.
    method : str
        Pipeline method (``"auto"``, ``"paper"``, ``"n2i"``, ...).
    n2i_steps : int, optional
        Noise2Inverse training steps (default: the pipeline's).
    epochs : int, optional
        Training epochs of the projection CNN (default: the pipeline's).
    stop_after : int, optional
        End after this many runs have been fully processed (tests, batch use); default: run
        until SIGTERM/SIGINT.
    ready_file : str or Path, optional
        Written once subscribed to the proxy, removed at the end (see :class:`EnhancerService`).
    close_timeout : float
        Seconds to wait for open runs when stopping.
    client : tiled.client.container.Container, optional
        An existing Tiled client (then ``tiled_uri`` and ``api_key`` are not used).
    preview_interval : float or None
        Seconds between live previews in the processed run's ``preview`` stream (None: none).
    registry : {"auto", "record", "only", "off"}
        The model registry (see :class:`~bluesky_lowdose.callbacks.ProjectionEnhancer`).

    Returns
    -------
    ServiceReport
        The runs processed and how the service ended.

    Raises
    ------
    ServiceError
        A bad address, or Tiled unreachable or refusing the key.
    """
    from .callbacks import ProjectionEnhancer

    try:
        address = parse_zmq_address(zmq_address)
    except ValueError as exc:
        raise ServiceError(str(exc), code=2) from None
    _check_zmq_address(address)
    if client is None and tiled_uri is not None:
        client = _connect_tiled(tiled_uri, api_key)
    if backup_directory is not None:
        Path(backup_directory).mkdir(parents=True, exist_ok=True)
    enhancer = ProjectionEnhancer(
        client,
        keep_frames=False,  # the frames are in Tiled and the detector's files; memory stays flat
        method=method,
        train_kwargs={} if epochs is None else {"epochs": epochs},
        n2i_options={} if n2i_steps is None else {"steps": n2i_steps},
        backup_directory=backup_directory,
        work_directory=work_directory,  # line integrals and volumes on disk: memory stays bounded
        volume_directory=volume_directory,
        preview_interval=preview_interval,
        registry=registry,
    )
    service = EnhancerService(address, enhancer, stop_after=stop_after, ready_file=ready_file,
                              close_timeout=close_timeout)  # fmt: skip
    logger.info("enhancer service: method %s, Tiled %s, pid %d", method, tiled_uri or "none (in memory)",
                os.getpid())  # fmt: skip
    return service.run()


# ---------------------------------------------------------------------- command line
def _zmq(text: str) -> str:
    try:
        return parse_zmq_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``lowdose-tomo enhancer`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.description = (
        "Run the streaming enhancer as its own process, fed by a bluesky-0MQ-proxy; "
        "SIGTERM/Ctrl-C closes open runs as partial and exits."
    )
    parser.add_argument(
        "--zmq", required=True, type=_zmq, metavar="HOST:PORT",
        help="the 0MQ proxy's output address (bluesky-0MQ-proxy --out-address)",
    )  # fmt: skip
    parser.add_argument(
        "--tiled-uri", default=None,
        help=f"Tiled server for the processed runs (default {DEFAULT_TILED_URI}, as lowdose-tomo serve); "
        "API key from $TILED_API_KEY",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", default="lowdose-data",
        help="data directory: the processed runs' volumes and enhanced frames (<data-dir>/volumes unless "
        "--volume-dir), backups of processed runs if Tiled fails; without --tiled-uri also its API key "
        "file (default: ./lowdose-data)",
    )  # fmt: skip
    parser.add_argument(
        "--volume-dir", default=None, metavar="DIR",
        help="where the processed runs' volumes and enhanced frames are written as HDF5: a folder the Tiled "
        "server reads (its readable storage, tiled serve ... -r DIR), since Tiled serves them in place; "
        "lowdose-tomo serve --data-dir D reads D/volumes (default: <data-dir>/volumes)",
    )  # fmt: skip
    parser.add_argument("--method", type=method, default="auto", help="pipeline method (default auto)")
    parser.add_argument("--n2i-steps", type=count(1), default=None, help="Noise2Inverse training steps")
    parser.add_argument(
        "--epochs", type=count(1), default=15, help="training epochs of the projection CNN (default 15)"
    )
    parser.add_argument(
        "--preview-interval", type=float, default=5.0, metavar="S",
        help="seconds between live previews (stream 'preview', drawn by lowdose-tomo watch); 0: after "
        "every batch of frames; negative: no preview (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--registry", choices=("auto", "record", "only", "off"), default="auto",
        help="model registry in Tiled: auto (default) publishes the best registered model's result of "
        "the run's instrument first, then fine-tunes it; record trains from scratch; only applies the "
        "registered model without training; off neither records nor reuses",
    )  # fmt: skip
    parser.add_argument(
        "--stop-after", type=count(1), default=None, metavar="N",
        help="exit after N runs have been processed (default: run until SIGTERM/Ctrl-C)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-file", default=None, metavar="PATH",
        help="write this file once subscribed to the proxy (removed at exit)",
    )  # fmt: skip
    parser.add_argument(
        "--close-timeout", type=positive_float, default=600.0, metavar="S",
        help="seconds to wait for open runs when stopping (default 600)",
    )  # fmt: skip


def _api_key(args: argparse.Namespace) -> str | None:
    from .storage.server import API_KEY_ENV, API_KEY_FILE

    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    if args.tiled_uri is None:  # the server of the data directory: its key file, never a new key
        path = Path(args.data_dir).expanduser() / API_KEY_FILE
        try:
            return path.read_text().strip() or None
        except OSError:
            return None
    return None


def _fail(message: str, code: int) -> int:
    print(f"lowdose-tomo enhancer: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, *, on_report: Callable[[ServiceReport], Any] | None = None) -> int:
    """Run ``lowdose-tomo enhancer``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options (see :func:`configure_parser`).
    on_report : callable, optional
        Receives the :class:`ServiceReport` at the end.

    Returns
    -------
    int
        0 when stopped cleanly, 1 when open runs could not be finished in time or a service is
        unreachable, 2 for bad options, 130 when a second signal interrupted the close.
    """
    logger.setLevel(logging.INFO)  # a service says what it does, without -v
    data_dir = Path(args.data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        return _fail(f"--data-dir {data_dir} is a file, not a directory", 2)
    tiled_uri = args.tiled_uri or DEFAULT_TILED_URI
    try:
        report = run_enhancer_service(
            args.zmq,
            tiled_uri=tiled_uri,
            api_key=_api_key(args),
            backup_directory=data_dir / "backup",
            work_directory=data_dir / "work",
            volume_directory=Path(args.volume_dir).expanduser() if args.volume_dir else data_dir / "volumes",
            method=args.method,
            n2i_steps=args.n2i_steps,
            epochs=args.epochs,
            stop_after=args.stop_after,
            ready_file=args.ready_file,
            close_timeout=args.close_timeout,
            preview_interval=None if args.preview_interval < 0 else args.preview_interval,
            registry=args.registry,
        )
    except ServiceError as exc:
        return _fail(str(exc), exc.code)
    except OSError as exc:  # e.g. the backup directory cannot be created
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    except KeyboardInterrupt as exc:
        return _fail(f"interrupted ({exc or 'Ctrl-C'}); open processed runs may stay unclosed", 130)
    if on_report is not None:
        on_report(report)
    return 0 if report.closed_in_time else 1
