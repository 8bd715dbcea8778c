"""Run a document callback on its own thread so that the RunEngine never waits for it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadedCallback"]

logger = logging.getLogger(__name__)

_STOP = object()


class ThreadedCallback:
    """Hand documents to ``target`` on a worker thread.

    The RunEngine-side ``__call__`` only puts ``(name, doc)`` on a queue. Exceptions raised
    by ``target`` are logged and kept in :attr:`errors`; they never reach the RunEngine.

    Parameters
    ----------
    target : callable
        ``target(name, doc)``, e.g. a ``TiledWriter``.
    name : str
        Thread name (for logs).
    maxsize : int
        Queue bound (0: unbounded). Documents are small when images are external.
    """

    def __init__(
        self, target: Callable[[str, dict], Any], *, name: str = "callback", maxsize: int = 0
    ) -> None:
        self.target = target
        self.name = name
        self.errors: list[tuple[str, BaseException]] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"lowdose-{name}", daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name}: callback is closed")
        self._queue.put((name, doc))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                name, doc = item
                try:
                    self.target(name, doc)
                except Exception as exc:
                    logger.exception("%s failed on a %r document", self.name, name)
                    self.errors.append((name, exc))
            finally:
                self._queue.task_done()

    @property
    def pending(self) -> int:
        """Documents not processed yet."""
        return self._queue.unfinished_tasks

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
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Process what is queued, then stop the thread."""
        if self._closed:
            return True
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()
