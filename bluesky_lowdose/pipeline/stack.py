"""A whole scan at once: :func:`enhance_scan` feeds a stack of frames to
:class:`~bluesky_lowdose.pipeline.scan.ScanPipeline` in the blocks the streaming enhancer uses
(the offline CLI, the evaluation and ``method="auto"``'s candidates run it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .angles import DEFAULT_TOLERANCE, check_rotation, match_angles
from .scan import ScanPipeline, ScanResult, _as_stack

__all__ = ["enhance_scan", "pair_from_projections"]


def pair_from_projections(
    projections: np.ndarray,
    theta_deg: np.ndarray,
    reference_angles: Any,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """The projections at ``reference_angles`` (the short partners of long references).

    Parameters
    ----------
    projections : numpy.ndarray
        ``(n, n_slices, width)``.
    theta_deg : numpy.ndarray
        Their angles, degrees.
    reference_angles : array_like
        Angles of the long references, degrees.
    tolerance : float
        Matching tolerance in degrees (modulo 360).

    Returns
    -------
    tuple of numpy.ndarray
        The matched projections and their indices.

    Raises
    ------
    ValueError
        A reference angle with no projection within ``tolerance``.
    """
    ref = np.atleast_1d(np.asarray(reference_angles, np.float64))
    idx = match_angles(ref, theta_deg, tolerance)
    if np.any(idx < 0):
        raise ValueError(
            f"reference angle(s) {ref[idx < 0].tolist()} have no projection within {tolerance} deg "
            f"(projections span {float(np.min(theta_deg)):g} .. {float(np.max(theta_deg)):g} deg)"
        )
    return projections[idx], idx


def enhance_scan(
    projections: Any,
    theta_deg: Any,
    *,
    short_refs: Any = None,
    long_refs: Any = None,
    reference_angles: Any = None,
    input: str = "transmission",
    method: str = "auto",
    open_beam_counts: Any = None,
    read_noise: float = 0.0,
    projection_model: Any = None,
    projection_training: dict[str, Any] | None = None,
    n2i_options: dict[str, Any] | None = None,
    center: float | None = None,
    backend: str | None = None,
    keep_projections: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    block: int = 8,
    progress: bool = False,
    seed: int = 0,
    mapper: Callable[..., Any] | None = None,
    workdir: str | Path | None = None,
    long_open_beam_counts: Any = None,
    judge: bool = True,
    judge_rows: slice | None = None,
    slice_model: Any = None,
    auto_candidates: Any = None,
    auto_budget_s: float | None = None,
    holdout: bool | int = True,
    warm_start: dict[str, Any] | None = None,
    fine_tune: dict[str, float] | None = None,
    on_first_result: Callable[[ScanResult], Any] | None = None,
    isolate_training: bool = False,
    training_threads: int | None = None,
) -> ScanResult:
    """Enhance and reconstruct one scan with one method: the package's single pipeline.

    Parameters
    ----------
    projections : array_like
        ``(n_angles, n_slices, width)``: flat/dark-corrected transmission (``input=
        "transmission"``) or line integrals (``input="line_integrals"``), in acquisition order.
    theta_deg : array_like
        ``(n_angles,)`` angles in degrees.
    short_refs, long_refs : array_like, optional
        ``(m, n_slices, width)`` short- and long-exposure reference frames at the same angles, in
        the projections' units.  Without ``short_refs``, the short partners of ``long_refs`` are
        the projections at ``reference_angles``.
    reference_angles : array_like, optional
        Angles of the references (degrees).
    input : {"transmission", "line_integrals"}
        Units of the frames.
    method : str
        ``"auto"`` or a key of :data:`METHODS` (``"paper"``, ``"n2i"``, ``"hybrid"``, ...).
    open_beam_counts : float or array_like, optional
        Detected photons of the open beam per pixel (scalar or ``(n_slices, width)``) at the
        projections' exposure, for the low-count ``-log`` bias correction; None: no correction.
    read_noise : float
        Additive detector noise in photons (with ``open_beam_counts``).
    projection_model : object, optional
        A trained projection enhancer to use instead of training on the pairs.
    projection_training : dict, optional
        Overrides of :data:`PROJECTION_TRAINING` (``epochs``, ``model``, ...).
    n2i_options : dict, optional
        Overrides of :data:`N2I_OPTIONS` (``steps``, ``crop``, ...).
    center : float, optional
        Rotation axis column.
    backend : str, optional
        Reconstruction backend (default: the first available, ``"nufft"`` where TomoPy is
        absent; see :class:`ScanPipeline`).
    keep_projections : bool
        Return the enhanced projections of methods with a projection step.
    tolerance : float
        Degrees within which reference angles match projection angles.
    block : int
        Frames processed together (the streaming enhancer uses the same blocks).
    progress : bool
        Progress bars.
    mapper : callable, optional
        Runs the reconstruction slabs (e.g. :meth:`bluesky_lowdose.engine.DaskEngine.map`);
        see :class:`ScanPipeline`.
    seed : int
        Seeds every learned step.
    workdir : str or Path, optional
        Line integrals and volumes go to HDF5 files there (bounded memory; the volumes come back
        as :class:`~bluesky_lowdose.recon.stored.StoredArray`); see :class:`ScanPipeline`.
    long_open_beam_counts : float or array_like, optional
        Open-beam photons per pixel at the long exposure (the judge's noise level).
    judge : bool
        Score the result against the long exposures (``long_refs`` with ``reference_angles``),
        whatever the method: ``result.quality``.
    judge_rows : slice, optional
        The detector rows judged (default all).
    slice_model : object, optional
        A trained Noise2Inverse denoiser to apply instead of training one.
    auto_candidates : sequence of str, optional
        ``method="auto"``: the methods tried (see :mod:`~bluesky_lowdose.pipeline.auto`).
    auto_budget_s : float, optional
        ``method="auto"``: seconds the candidates may take together; the winner's whole scan should
        end by 1.2 x it (:data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`).
    holdout : bool or int
        Judge pair-trained methods on a pair held out of their training: the last, or the pair
        of this index (see :class:`ScanPipeline`).
    warm_start, fine_tune, on_first_result
        Fine-tune registered models instead of training from scratch (see :class:`ScanPipeline`).
    isolate_training, training_threads
        Train in a child process, on this many TensorFlow threads (see :class:`ScanPipeline`).

    Returns
    -------
    ScanResult
        ``volume``, ``raw_volume``, ``projections``, ``method``, ``provenance``, ``models``.

    Raises
    ------
    ValueError
        Bad shapes, NaN/inf, a method that needs pairs without them, unmatched reference angles.

    Examples
    --------
    >>> result = enhance_scan(transmission, theta, long_refs=long, reference_angles=[0, 90])  # doctest: +SKIP
    >>> result.volume.shape  # doctest: +SKIP
    (128, 128, 128)
    """
    proj = _as_stack(projections, "projections")
    theta = np.asarray(theta_deg, np.float64)
    if theta.shape != (len(proj),) or not np.all(np.isfinite(theta)):
        raise ValueError(
            f"theta_deg must hold one finite angle per projection ({len(proj)}), got {theta.shape}"
        )
    check_rotation(theta)
    if not np.any(proj):
        raise ValueError("every projection is all zeros: no data to reconstruct")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if short_refs is not None and long_refs is None:
        raise ValueError("short_refs without long_refs: give both, or long_refs with reference_angles")
    has_pairs = long_refs is not None
    pipe = ScanPipeline(proj.shape[1:], method, has_pairs=has_pairs, input=input,
                        open_beam_counts=open_beam_counts, read_noise=read_noise,
                        projection_model=projection_model, projection_training=projection_training,
                        n2i_options=n2i_options, center=center, backend=backend,
                        keep_projections=keep_projections, seed=seed, progress=progress,
                        mapper=mapper, workdir=workdir, long_open_beam_counts=long_open_beam_counts,
                        judge=judge, judge_rows=judge_rows, slice_model=slice_model,
                        auto_candidates=auto_candidates, auto_budget_s=auto_budget_s, holdout=holdout,
                        warm_start=warm_start,
                        fine_tune=fine_tune, on_first_result=on_first_result,
                        isolate_training=isolate_training, training_threads=training_threads)  # fmt: skip
    if has_pairs:
        long_ = _as_stack(long_refs, "long_refs")
        if short_refs is None:
            if reference_angles is None:
                raise ValueError(
                    "long_refs without short_refs need reference_angles to find their short partners"
                )
            short, _ = pair_from_projections(proj, theta, reference_angles, tolerance)
        else:
            short = _as_stack(short_refs, "short_refs")
        pipe.fit(short, long_, reference_angles=reference_angles)
    from tqdm.auto import tqdm

    with tqdm(total=len(proj), desc=f"{pipe.method}: projections", unit="frame", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for i in range(0, len(proj), block):
            pipe.add(i, theta[i : i + block], proj[i : i + block])
            bar.update(min(block, len(proj) - i))
    return pipe.finish()
