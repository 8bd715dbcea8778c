"""Where the heavy steps run: ``distributed`` (Dask) as the task engine.

:class:`DaskEngine` connects to a Dask scheduler (``tcp://HOST:PORT``: ``dask scheduler`` and
``dask worker`` on other machines, or dask-jobqueue on a facility's batch system) or starts an
in-process cluster, and offers ``map(function, tasks)`` — the ``mapper`` the pipeline's
reconstruction slabs take (:func:`bluesky_lowdose.recon.slabs.reconstruct_slabs`). Results come
back in task order; a worker that dies mid-run has its tasks rescheduled by the scheduler, and
what cannot complete raises (never a silent hole).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DaskEngine"]

logger = logging.getLogger(__name__)


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

    Raises
    ------
    OSError
        The scheduler cannot be reached.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int = 1,
        threads_per_worker: int = 2,
        timeout: float = 20.0,
    ) -> None:
        from distributed import Client

        if scheduler == "local":
            scheduler = None
        if scheduler:
            self.client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
        else:
            self.client = Client(
                processes=False, n_workers=n_workers, threads_per_worker=threads_per_worker,
                dashboard_address=None, set_as_default=False,
            )  # fmt: skip
        self.scheduler = scheduler
        #: Tasks submitted through :meth:`map`.
        self.tasks = 0

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        """Run ``function`` on every task on the cluster; results in task order.

        Parameters
        ----------
        function : callable
            A module-level function (it is pickled to the workers).
        tasks : sequence
            One argument per task.

        Returns
        -------
        list
            The results.
        """
        import dask

        tasks = list(tasks)
        # The task data (sinogram slabs) travel inside the tasks, so the scheduler can rerun a
        # task whose worker died (data scattered to that worker would die with it). The cost
        # is one copy of the slabs on the scheduler while they run.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            futures = self.client.map(function, tasks, pure=False)
        self.tasks += len(futures)
        return self.client.gather(futures)

    def report(self) -> dict[str, Any]:
        """``scheduler`` address, ``workers`` now connected, ``tasks`` run, ``in_process``."""
        info = self.client.scheduler_info()
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
