"""Work spread over threads that also runs while the interpreter exits.

``concurrent.futures`` refuses new work once interpreter shutdown has begun ("cannot schedule
new futures after interpreter shutdown"), which is exactly when an IPython session that exits
right after a scan waits for its enhancer (``atexit``). Plain threads still start then; where even
they cannot, the calling thread does the work alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["run_parallel"]


def run_parallel(fn: Callable[..., Any], jobs: Iterable[tuple], workers: int) -> None:
    """Call ``fn(*job)`` for every job on up to ``workers`` threads; re-raise the first error.

    Parameters
    ----------
    fn : callable
        The work of one job (writes its result itself, e.g. into a slice of an array).
    jobs : iterable of tuple
        Arguments of each call.
    workers : int
        Threads at most (the calling thread is one of them).
    """
    pending = list(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def drain() -> None:
        while not errors:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            try:
                fn(*job)
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

    threads = []
    for _ in range(max(0, min(int(workers), len(pending)) - 1)):
        thread = threading.Thread(target=drain, name="lowdose-recon", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown": work here
            break
        threads.append(thread)
    drain()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
