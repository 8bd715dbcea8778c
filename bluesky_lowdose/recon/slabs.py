"""Reconstruction split into slabs of slices: the unit of work a task scheduler distributes.

Parallel-beam slices are independent, so reconstructing slabs and stacking them gives the same
volume, bit for bit, as one call of :func:`~bluesky_lowdose.recon.reconstruct` (a test). The
``mapper`` decides where slabs run: the built-in ``map`` (here, in order), or e.g.
:meth:`bluesky_lowdose.engine.DaskEngine.map` (tasks on a ``distributed`` cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SLAB", "reconstruct_slab", "reconstruct_slabs", "slab_ranges"]

#: Slices per task by default.
DEFAULT_SLAB = 16

Mapper = Callable[[Callable[[Any], np.ndarray], Sequence[Any]], Iterable[np.ndarray]]


def slab_ranges(n_slices: int, slab: int = DEFAULT_SLAB) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_slices)`` in slabs of at most ``slab`` slices.

    Parameters
    ----------
    n_slices : int
        Detector rows.
    slab : int
        Slices per slab (>= 1).

    Returns
    -------
    list of tuple
        Half-open row ranges.
    """
    if slab < 1:
        raise ValueError(f"slab must be >= 1, got {slab}")
    return [(a, min(a + slab, n_slices)) for a in range(0, n_slices, slab)]


def reconstruct_slab(task: tuple[np.ndarray, np.ndarray, dict[str, Any]]) -> np.ndarray:
    """Reconstruct one slab: ``task = (line_integrals[:, rows], theta_deg, reconstruct kwargs)``.

    Parameters
    ----------
    task : tuple
        Line integrals ``(n_angles, slab, width)``, angles in degrees, keyword arguments of
        :func:`~bluesky_lowdose.recon.reconstruct`.

    Returns
    -------
    numpy.ndarray
        ``(slab, width, width)``.
    """
    from .core import reconstruct

    line_integrals, theta, kwargs = task
    return reconstruct(np.ascontiguousarray(line_integrals), theta, **kwargs)


def reconstruct_slabs(
    line_integrals: np.ndarray,
    theta_deg: np.ndarray,
    *,
    mapper: Mapper | None = None,
    slab: int = DEFAULT_SLAB,
    progress: bool = False,
    **kwargs: Any,
) -> np.ndarray:
    """:func:`~bluesky_lowdose.recon.reconstruct` slab by slab, the slabs run by ``mapper``.

    Parameters
    ----------
    line_integrals : numpy.ndarray
        ``(n_angles, n_slices, width)``.
    theta_deg : numpy.ndarray
        Angles in degrees.
    mapper : callable, optional
        ``mapper(function, tasks) -> results in task order`` (default: the built-in ``map``).
    slab : int
        Slices per task.
    progress : bool
        A progress bar over slabs (in-process ``map`` only; a cluster has its own dashboard).
    **kwargs
        Passed to :func:`~bluesky_lowdose.recon.reconstruct` (``backend``, ``center``, ...).

    Returns
    -------
    numpy.ndarray
        ``(n_slices, width, width)``, identical to one :func:`reconstruct` call.
    """
    li = np.asarray(line_integrals)
    if li.ndim != 3:
        raise ValueError(f"line integrals must be (angles, slices, width), got {li.shape}")
    theta = np.asarray(theta_deg, np.float64)
    tasks = [(li[:, a:b], theta, kwargs) for a, b in slab_ranges(li.shape[1], slab)]
    if mapper is None and progress:
        from tqdm.auto import tqdm

        parts = [reconstruct_slab(t) for t in tqdm(tasks, desc="reconstruction", unit="slab")]
    else:
        parts = list((mapper or map)(reconstruct_slab, tasks))
    return np.concatenate(parts, axis=0)
