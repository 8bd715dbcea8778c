"""Reconstruction split into slabs of slices: the unit of work a task scheduler distributes.

Parallel-beam slices are independent, so reconstructing slabs and stacking them gives the same
volume, bit for bit, as one call of :func:`~bluesky_lowdose.recon.reconstruct` (a test). The
``mapper`` decides where slabs run: the built-in ``map`` (here, in order), or e.g.
:meth:`bluesky_lowdose.engine.DaskEngine.map` (tasks on a ``distributed`` cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stored import ArrayWriter, StackWriter, StoredArray, volume_writer

__all__ = [
    "DEFAULT_SLAB",
    "reconstruct_slab_set",
    "reconstruct_slabs",
    "reconstruct_volumes",
    "slab_ranges",
]

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


def reconstruct_slab_set(task: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """Reconstruct several volumes' slab from one read of the sinogram slabs they come from.

    Parameters
    ----------
    task : tuple
        ``(sources, theta_deg, wanted, kwargs)``: ``sources`` maps a name to line integrals
        ``(n_angles, slab, width)`` (an array, or a :class:`~.stored.LazySlice` read here, e.g. on a
        Dask worker); ``wanted`` is a list of ``(volume name, source name, frame index or None)``;
        ``kwargs`` go to :func:`~bluesky_lowdose.recon.reconstruct`.

    Returns
    -------
    dict
        Volume name -> ``(slab, width, width)``.
    """
    from .core import reconstruct

    sources, theta, wanted, kwargs = task
    data = {name: np.asarray(src, dtype=np.float32) for name, src in sources.items()}
    theta = np.asarray(theta, np.float64)
    out: dict[str, np.ndarray] = {}
    for name, source, index in wanted:
        li, th = (data[source], theta) if index is None else (data[source][index], theta[index])
        out[name] = reconstruct(np.ascontiguousarray(li), th, **kwargs)
    return out


def reconstruct_volumes(
    sources: Mapping[str, np.ndarray | StoredArray],
    theta_deg: np.ndarray,
    wanted: Sequence[tuple[str, str, np.ndarray | None]],
    *,
    mapper: Mapper | None = None,
    slab: int = DEFAULT_SLAB,
    progress: bool = False,
    out_dir: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, np.ndarray | StoredArray]:
    """Reconstruct several volumes slab by slab: each slab of every source is read once.

    Parameters
    ----------
    sources : mapping
        Name -> line integrals ``(n_angles, n_slices, width)``: arrays, or
        :class:`~.stored.StoredArray` stacks on disk (then each task reads its own slab: memory is
        bounded by the slabs in flight, and Dask workers read the file themselves — it must be
        on a file system they see).
    theta_deg : numpy.ndarray
        Angles in degrees, one per frame.
    wanted : sequence of tuple
        ``(volume name, source name, frame index or None for all frames)``.
    mapper : callable, optional
        ``mapper(function, tasks) -> results in task order`` (default: the built-in ``map``). It
        should yield results as they come (as :meth:`bluesky_lowdose.engine.DaskEngine.map`
        does) for memory to stay bounded.
    slab : int
        Slices per task.
    progress : bool
        A progress bar over slabs.
    out_dir : str or Path, optional
        Write each volume to ``out_dir/<name>.h5`` (dataset ``volume``) slab by slab and return
        :class:`~.stored.StoredArray` handles; None returns arrays in memory.
    **kwargs
        Passed to :func:`~bluesky_lowdose.recon.reconstruct` (``backend``, ``center``, ...).

    Returns
    -------
    dict
        Volume name -> ``(n_slices, width, width)`` float32 (array or stored).
    """
    shapes = {tuple(src.shape) for src in sources.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"sources must be (angles, slices, width) stacks of one shape, got {shapes}")
    n_angles, n_slices, _ = next(iter(shapes))
    theta = np.asarray(theta_deg, np.float64)
    if theta.shape != (n_angles,):
        raise ValueError(f"{theta.size} angle(s) for {n_angles} frame(s)")
    ranges = slab_ranges(n_slices, slab)

    def rows(src: Any, a: int, b: int) -> Any:
        return src.rows(a, b) if isinstance(src, StoredArray) else src[:, a:b]

    tasks = [({k: rows(s, a, b) for k, s in sources.items()}, theta, list(wanted), kwargs) for a, b in ranges]
    results: Iterable[dict[str, np.ndarray]] = (mapper or map)(reconstruct_slab_set, tasks)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(tasks), desc="reconstruction", unit="slab", leave=False)
    outs: dict[str, StackWriter | ArrayWriter] = {}
    try:
        for (a, _), res in zip(ranges, results, strict=True):
            for name, vol in res.items():
                if name not in outs:
                    path = None if out_dir is None else Path(out_dir) / f"{name}.h5"
                    outs[name] = volume_writer(path, (n_slices, *vol.shape[1:]))
                outs[name].write(a, vol)
    except BaseException:
        for out in outs.values():
            out.discard()  # no half-written volume, no open handle
        raise
    return {name: out.close() for name, out in outs.items()}


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
    li = line_integrals if isinstance(line_integrals, StoredArray) else np.asarray(line_integrals)
    if li.ndim != 3:
        raise ValueError(f"line integrals must be (angles, slices, width), got {li.shape}")
    out = reconstruct_volumes({"li": li}, theta_deg, [("volume", "li", None)], mapper=mapper, slab=slab,
                              progress=progress, **kwargs)  # fmt: skip
    return np.asarray(out["volume"])
