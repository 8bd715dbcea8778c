"""How long ``auto``'s candidates take: BM3D's least time on a slab (to skip a candidate that cannot
fit its budget) and a candidate's whole scan, timed from its run on the slab (to pass over a winner
whose whole scan would not fit, :func:`~bluesky_lowdose.pipeline.choice.too_slow`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .result import ScanResult

__all__ = ["bm3d_floor_s", "bm3d_kind", "whole_scan_seconds"]


def whole_scan_seconds(
    result: ScanResult,
    *,
    frames: int,
    rows: int,
    slab_frames: int,
    slab_rows: int,
    bm3d_workers: tuple[int, int] = (1, 1),
    refit: float = 0.0,
    tuned_again: bool = False,
) -> float:
    """About how long a candidate takes on the whole scan, from its run on ``auto``'s slab.

    Its trained models and tuned filters are reused there, so only the steps per frame and per slice
    count: each step's time on the slab (``result.timings``) scaled by what it works on. The
    reconstruction and a projection denoiser (a CNN's inference, BM3D on each frame) scale with
    frames x rows; Noise2Inverse's inference with the slices (its training left out); BM3D on
    slices with the slices, at its time per call on the slab (its tuning's calls counted there,
    none on the whole scan, which reuses the factor); BM3D by the cores it ran on. ``refit``: the
    Noise2Inverse model is fine-tuned on every frame first, for this fraction of its planned steps
    (:data:`~bluesky_lowdose.pipeline.auto.REFIT`; 0: not);
    ``tuned_again``: a projection filter tuned again on the scan's pairs (its tuning's time on the
    slab's rows of the pairs, scaled to every row). A Noise2Inverse training's time per step is the
    candidate's, which may have shared the cores (on 2 cores one thread trains about as fast as
    two); BM3D's calls are taken as many side by side as it has workers (on many cores the
    slab's short batches may run fewer).

    Parameters
    ----------
    result : ScanResult
        The candidate's result on the slab (the run reused).
    frames, rows : int
        The whole scan: frames and detector rows.
    slab_frames, slab_rows : int
        What the candidate ran on.
    bm3d_workers : tuple of int
        BM3D calls side by side on the slab and on the whole scan.
    refit : float
        See above.
    tuned_again : bool
        See above.

    Returns
    -------
    float
        Seconds, an estimate (the whole scan's judge and writes are left out).
    """
    from .slices import TUNING_SLICES

    t = result.timings
    pixels = frames * rows / max(slab_frames * slab_rows, 1)
    # BM3D calls side by side on the slab, to the whole scan's
    bm3d_speed = bm3d_workers[0] / max(bm3d_workers[1], 1)
    step = result.provenance.get("slice_step") or {}
    bm3d_projections = (result.provenance.get("projection_step") or {}).get("kind") == "bm3d"
    on_cores = bm3d_speed if bm3d_projections else 1.0
    seconds = t.get("reconstruction_s", 0.0) * pixels
    seconds += t.get("projection_step_s", 0.0) * pixels * on_cores
    if tuned_again:  # on the pairs' every row, as on the slab's
        seconds += t.get("projection_training_s", 0.0) * rows / max(slab_rows, 1) * on_cores
    slice_s = t.get("slice_step_s", 0.0)
    if step.get("kind") == "noise2inverse":
        model = step.get("model") or {}
        training = 0.0 if step.get("reused_model") else float(model.get("wall_time_s", 0.0))
        seconds += max(slice_s - training, 0.0) * rows / max(slab_rows, 1)
        if refit:
            hyper = model.get("hyperparameters") or {}
            made, planned = hyper.get("steps") or 1, hyper.get("planned_steps") or 1
            seconds += refit * planned * float(model.get("wall_time_s", 0.0)) / made
    elif step.get("kind") == "bm3d":
        first, last = step.get("denoised_slices") or (0, slab_rows)
        tuning = len(step.get("tuning_losses") or {}) * min(TUNING_SLICES, slab_rows)
        seconds += slice_s / max(tuning + last - first, 1) * rows * bm3d_speed
    return float(seconds)


def bm3d_floor_s(method: str, frames: int, rows: int, width: int, seconds_per_pixel: float) -> float | None:
    """The least time a BM3D candidate takes on ``auto``'s slab: its final denoising alone (its
    tuning left out), side by side on the cores it may use
    (:data:`~bluesky_lowdose.model.baselines.BM3D_WORKERS`); None for a method without BM3D.

    Parameters
    ----------
    method : str
        The candidate.
    frames, rows, width : int
        The slab: frames, detector rows (for BM3D on slices, the slices it filters), detector width.
    seconds_per_pixel : float
        One BM3D call's time per pixel here (:func:`~bluesky_lowdose.model.baselines.bm3d_seconds_per_pixel`).

    Returns
    -------
    float or None
        Seconds.
    """
    from ..model.baselines import bm3d_workers

    kind = bm3d_kind(method)
    if kind is None:
        return None
    # slices: the slices filtered (rows x width x width); projections: every frame of the slab, for
    # one run (of one per pair); on the cores BM3D may use (fewer beside a training)
    pixels = rows * width * width if kind == "slices" else frames * rows * width
    return pixels * seconds_per_pixel / bm3d_workers()


def bm3d_kind(method: str) -> str | None:
    """Where a method runs BM3D: ``"slices"``, ``"projections"`` or None (it does not)."""
    from .methods import METHODS

    spec = METHODS[method]
    return "slices" if spec.slices == "bm3d" else "projections" if spec.projection == "bm3d" else None
