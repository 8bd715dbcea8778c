"""The service itself: a :class:`~bluesky_lowdose.callbacks.ProjectionEnhancer` fed by the 0MQ bus,
its signals, its Tiled connection and its report."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from .bus import _check_zmq_address, _monitored_dispatcher, parse_zmq_address
from .report import RunOutcome, ServiceError, ServiceReport

__all__ = ["DEFAULT_TILED_URI", "EnhancerService", "run_enhancer_service"]

logger = logging.getLogger("bluesky_lowdose.service")

#: The Tiled server ``lowdose-tomo serve`` starts by default.
DEFAULT_TILED_URI = "http://127.0.0.1:8000"


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


def _connect_tiled(uri: str, api_key: str | None) -> Any:
    """A client of ``uri`` with its run catalogs, or :class:`ServiceError` in one line (fast when down)."""
    import httpx
    from tiled.client.utils import ClientError

    from ..storage import TiledUnreachable, connect

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
    from ..callbacks import ProjectionEnhancer

    try:
        address = parse_zmq_address(zmq_address)
    except ValueError as exc:
        raise ServiceError(str(exc), code=2) from None
    _check_zmq_address(address)
    if client is None and tiled_uri is not None:
        client = _connect_tiled(tiled_uri, api_key)
    if client is not None:  # a killed predecessor's open runs: closed as partial, with the reason
        from ..storage import close_abandoned_runs

        close_abandoned_runs(client)
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
        isolate_training=True,  # it trains every scan for days: TensorFlow's leftovers go with the child
    )
    service = EnhancerService(address, enhancer, stop_after=stop_after, ready_file=ready_file,
                              close_timeout=close_timeout)  # fmt: skip
    logger.info("enhancer service: method %s, Tiled %s, pid %d", method, tiled_uri or "none (in memory)",
                os.getpid())  # fmt: skip
    return service.run()


# ---------------------------------------------------------------------- command line
