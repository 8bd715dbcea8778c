"""Where the heavy steps run: ``distributed`` (Dask) as the task engine.

:class:`DaskEngine` connects to a Dask scheduler (``tcp://HOST:PORT``: ``dask scheduler`` and
``dask worker`` on other machines, or dask-jobqueue on a facility's batch system) or starts an
in-process cluster, and offers ``map(function, tasks)`` — the ``mapper`` the pipeline's
reconstruction slabs take (:func:`bluesky_lowdose.recon.slabs.reconstruct_volumes`). Results are
streamed back in task order with a bounded window of tasks in flight; a worker that dies mid-run
has its tasks rescheduled by the scheduler, and what cannot complete raises (never a silent hole);
a cluster left without any worker raises :class:`NoWorkers` after ``no_worker_timeout`` seconds
instead of waiting forever.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["DaskEngine", "NoWorkers", "SchedulerUnreachable"]

logger = logging.getLogger(__name__)


class SchedulerUnreachable(ConnectionError):
    """The Dask scheduler did not answer (an ``OSError``: callers catching those still do)."""


class NoWorkers(RuntimeError):
    """No Dask worker was connected for ``no_worker_timeout`` seconds while tasks waited."""


class DaskEngine:
    """A ``distributed.Client`` with the accounting a run reports.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running scheduler; None or ``"local"`` starts an in-process
        cluster (threads).
    n_workers, threads_per_worker : int
        Of the in-process cluster.
    timeout : float
        Seconds to wait for the scheduler to answer.
    no_worker_timeout : float
        Seconds :meth:`map` waits while no worker is connected before it gives up with
        :class:`NoWorkers` (a scheduler keeps tasks forever when its last worker died).

    Raises
    ------
    SchedulerUnreachable
        The scheduler cannot be reached (a ``ConnectionError``).
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int = 1,
        threads_per_worker: int = 2,
        timeout: float = 20.0,
        no_worker_timeout: float = 60.0,
    ) -> None:
        from distributed import Client

        if scheduler == "local":
            scheduler = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
            except OSError as exc:
                raise SchedulerUnreachable(f"cannot reach the Dask scheduler {scheduler}: {exc}") from exc
        else:
            self.client = Client(
                processes=False, n_workers=n_workers, threads_per_worker=threads_per_worker,
                dashboard_address=":0", set_as_default=False,
            )  # fmt: skip
        self.scheduler = scheduler
        self.no_worker_timeout = float(no_worker_timeout)
        #: Tasks submitted through :meth:`map`.
        self.tasks = 0

    def map(
        self, function: Callable[[Any], Any], tasks: Sequence[Any], *, window: int | None = None
    ) -> Iterator[Any]:
        """Run ``function`` on every task on the cluster; yield the results in task order.

        At most ``window`` tasks are in flight and each result is released on the cluster once
        yielded, so neither this process nor the workers hold more than a window of results
        (a volume's slabs stream through; they never gather in memory).

        Parameters
        ----------
        function : callable
            A module-level function (it is pickled to the workers).
        tasks : sequence
            One argument per task.
        window : int, optional
            Tasks in flight (default: twice the cluster's threads, at least 2).

        Yields
        ------
        object
            The results, in task order.
        """
        import dask

        if window is None:
            window = max(2, 2 * sum(self.client.nthreads().values()))
        pending = iter(list(tasks))
        in_flight: deque[Any] = deque()

        def submit_next() -> None:
            for task in pending:
                # The task data (sinogram slabs, or a file reference the worker reads) travel
                # inside the task, so the scheduler can rerun a task whose worker died (data
                # scattered to that worker would die with it).
                with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
                    in_flight.append(self.client.submit(function, task, pure=False))
                self.tasks += 1
                return

        try:
            for _ in range(window):
                submit_next()
            while in_flight:
                future = in_flight.popleft()
                result = self._result(future)
                future.release()
                submit_next()
                yield result
        finally:  # a task failed or the caller stopped early: nothing keeps running for nobody
            if in_flight:
                try:
                    self.client.cancel(list(in_flight))
                except Exception:  # the client is already closed: so are its tasks
                    logger.debug("could not cancel %d task(s)", len(in_flight), exc_info=True)

    def _result(self, future: Any) -> Any:
        """``future.result()``, but a cluster without workers is said, not waited on forever.

        Waits in short steps (a Ctrl-C in the main thread is seen within a second); while no
        worker is connected for ``no_worker_timeout`` seconds, raises :class:`NoWorkers`.
        """
        from distributed import TimeoutError as DaskTimeout

        alone_since: float | None = None
        while True:
            try:
                return future.result(timeout=1.0)
            except (DaskTimeout, TimeoutError):
                pass
            if self.client.nthreads():
                alone_since = None
                continue
            now = time.monotonic()
            alone_since = now if alone_since is None else alone_since
            if now - alone_since >= self.no_worker_timeout:
                where = self.scheduler or "the in-process cluster"
                raise NoWorkers(
                    f"no Dask worker has been connected to {where} for {self.no_worker_timeout:g} s "
                    f"while task {future.key} waited (did the workers die?): start workers "
                    f"(dask worker {where}) and run again"
                )

    def _identity(self) -> dict[str, Any]:
        """The scheduler's identity with every worker, asked now.

        Not ``Client.scheduler_info()``: it fetches, then returns the client's cache, which the
        client's own periodic refresh (every 2 s, without per-worker information) may overwrite in
        between; the workers then read as none although both are connected (distributed 2026.8).
        """
        return self.client.sync(self.client.scheduler.identity, n_workers=-1)

    def workers(self) -> dict[str, str]:
        """The connected workers: address → name."""
        return {addr: str(w.get("name", addr)) for addr, w in self._identity().get("workers", {}).items()}

    def report(self) -> dict[str, Any]:
        """``scheduler`` address, ``workers`` now connected, ``tasks`` run, ``in_process``."""
        info = self._identity()
        return {
            "scheduler": info.get("address"),
            "workers": len(info.get("workers", {})),
            "tasks": self.tasks,
            "in_process": self.scheduler is None,
        }

    def close(self) -> None:
        """Close the client (and the in-process cluster)."""
        cluster = self.client.cluster if self.scheduler is None else None
        self.client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
