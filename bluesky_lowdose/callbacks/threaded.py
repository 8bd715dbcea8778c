"""Run a document callback on its own thread so that the RunEngine never waits for it.

:class:`ThreadedCallback` is bluesky's :class:`~bluesky.callbacks.buffer.BufferingWrapper` (the
queue, the worker thread, the shutdown at exit) with what a long-lived beamline process needs on
top: ``flush`` (wait until what was handed over is processed), ``pending``, and a bounded record
of the target's failures, per run, without the documents or tracebacks that failed.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bluesky.callbacks.buffer import BufferingWrapper

__all__ = ["ThreadedCallback", "WriteError"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteError:
    """One failure of the target: the run, the document kind and the error's text.

    Unpacks as ``(name, message)`` for code written against the earlier ``(name, exc)`` pairs.
    """

    run_uid: str | None
    name: str
    message: str

    def __iter__(self):
        return iter((self.name, self.message))

    def __getitem__(self, index: int) -> str:
        return (self.name, self.message)[index]


class ThreadedCallback(BufferingWrapper):
    """Hand documents to ``target`` on a worker thread (bluesky's ``BufferingWrapper``).

    The RunEngine-side ``__call__`` only puts ``(name, doc)`` on a queue. Exceptions raised by
    ``target`` are logged and recorded in :attr:`errors` (the most recent ``max_errors``, as
    :class:`WriteError`: run uid, document name, message); they never reach the RunEngine.

    Parameters
    ----------
    target : callable
        ``target(name, doc)``, e.g. a ``TiledWriter``.
    name : str
        Thread name (for logs).
    maxsize : int
        Queue bound (0: bluesky's default of a million documents). Documents are small when
        images are external.
    max_errors : int
        Failures kept in :attr:`errors` (older ones are counted in :attr:`error_count`).
    """

    #: Seconds the queue may take to drain at interpreter exit.
    EXIT_TIMEOUT_S = 120.0

    def __init__(
        self,
        target: Callable[[str, dict], Any],
        *,
        name: str = "callback",
        maxsize: int = 0,
        max_errors: int = 100,
    ) -> None:
        self.target = target
        self.name = name
        self.errors: deque[WriteError] = deque(maxlen=max_errors)
        self.error_count = 0
        self._errors_per_run: dict[str, int] = {}
        self._run_of: dict[str, str] = {}  # descriptor/resource uid -> run uid (forgotten at stop)
        self._submitted = 0
        self._processed = 0
        self._count_lock = threading.Lock()
        super().__init__(self._deliver, **({"queue_size": maxsize} if maxsize else {}))
        self._thread.name = f"lowdose-{name}"
        # upstream joins the thread at exit without a limit; a target stuck on a dead server
        # would then keep the process from ever exiting
        atexit.unregister(self.shutdown)
        atexit.register(self.close, self.EXIT_TIMEOUT_S)

    def __call__(self, name: str, doc: dict) -> None:
        if self._stop_event.is_set():
            raise RuntimeError(f"{self.name}: callback is closed")
        with self._count_lock:
            self._submitted += 1
        try:
            super().__call__(name, doc)
        except BaseException:
            with self._count_lock:
                self._submitted -= 1
            raise

    def _deliver(self, name: str, doc: dict) -> None:
        run = self._run_uid(name, doc)
        try:
            self.target(name, doc)
        except Exception as exc:
            logger.exception("%s failed on a %r document", self.name, name)
            self.error_count += 1
            self.errors.append(WriteError(run, name, f"{type(exc).__name__}: {exc}"))
            if run is not None:
                self._errors_per_run[run] = self._errors_per_run.get(run, 0) + 1
        finally:
            if name == "stop":
                self._forget(doc.get("run_start"))
            with self._count_lock:
                self._processed += 1

    def _run_uid(self, name: str, doc: dict) -> str | None:
        if name == "start":
            return doc.get("uid")
        if name in ("descriptor", "resource", "stream_resource"):
            run = doc.get("run_start")
            if run is not None and doc.get("uid") is not None:
                self._run_of[doc["uid"]] = run
            return run
        if name == "stop":
            return doc.get("run_start")
        key = {"event": "descriptor", "event_page": "descriptor", "datum": "resource",
               "datum_page": "resource", "stream_datum": "stream_resource"}.get(name)  # fmt: skip
        return None if key is None else self._run_of.get(doc.get(key))

    def _forget(self, run: str | None) -> None:
        if run is not None:
            for uid in [u for u, r in self._run_of.items() if r == run]:
                del self._run_of[uid]

    def errors_of(self, run_uid: str) -> int:
        """Failures of the target on documents of run ``run_uid`` (since this callback started)."""
        return self._errors_per_run.get(run_uid, 0)

    @property
    def pending(self) -> int:
        """Documents handed over but not processed yet."""
        with self._count_lock:
            return self._submitted - self._processed

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued document is processed.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait (None: forever).

        Returns
        -------
        bool
            True when the queue drained in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Process what is queued, then stop the thread.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread (None: until it is done).

        Returns
        -------
        bool
            True when the thread ended in time.
        """
        self.shutdown(wait=False)
        atexit.unregister(self.close)
        self._thread.join(timeout)
        return not self._thread.is_alive()
