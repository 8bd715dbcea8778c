"""``method="auto"``: try the candidates on a slab of the scan, let the long exposures choose.

Every candidate runs through :func:`~bluesky_lowdose.pipeline.enhance_scan` on a slab of
detector rows around the centre (:data:`AUTO_SLAB_ROWS` judged rows plus :data:`AUTO_MARGIN` on
each side, or the whole detector when it is that small) and is judged by the long exposures
(:mod:`~bluesky_lowdose.pipeline.judge`): the criterion is its **gain over the raw
reconstruction on the same angles**, in PSNR (gains within
:data:`~bluesky_lowdose.pipeline.choice.TIE_DB` of the best: the larger SSIM gain,
:func:`~bluesky_lowdose.pipeline.choice.pick_winner`; ``auto``'s rules are in
:mod:`~bluesky_lowdose.pipeline.choice`).  A candidate that scores below the raw
reconstruction in PSNR *or* SSIM is never chosen; when none beats it, ``"none"`` wins, so
``auto`` never returns a result that the long exposures judge worse than the raw one.

A candidate that learns from the pairs (the paper's CNN, BM3D tuned on them) is judged
**leave-one-out**: run once per pair without it, each pair judged by the run that did not see it,
the residuals pooled; the others are judged on every pair, so all are judged on the same views.
That costs one run per pair more for those candidates; the run without the last pair is the one
reused on the whole scan.

Such a candidate **races** (:data:`RACE_DB`): its first run, trained without the last pair, is
judged on that pair against the best candidate so far that is not below raw (on the same pair,
``none`` included). More than :data:`RACE_DB` behind there, its other runs are not made: it is
recorded as ``stopped`` with both gains, and it is not chosen. On the ten recorded judge cases
(``benchmarks/bench_judge_ties.py``) no candidate that would have won was stopped, and the demo's
paper CNN and BM3D on projections stop after one run instead of four.

**Blends** (:func:`blends`): the mean of the volumes of two candidates not below raw, one that
denoises the projections and one that denoises the slices, is judged too, from the projections its
parts' judgement made (a projection is linear: no run of its own), and may be chosen like a
candidate; the whole scan is then run with both methods (their models reused) and their volumes
averaged. The two kinds of denoiser make different errors, so their mean is often better than
either: on the ten recorded judge cases ``auto``'s picks gain 0.23 dB against the truth on average
with blends, and are at or above the truly best single method in 7 of 10 cases instead of 5.

Candidates (:data:`AUTO_CANDIDATES`) start in that order while the time budget lasts
(``budget_s``); Noise2Inverse's training stops after :data:`N2I_SHARE` of the remaining budget
(its steps are recorded), other candidates that have started finish their run; a pair-trained
candidate makes its other folds only if they would end within the budget, each taken as long as
its first run (else ``stopped``, not chosen: one pair does not judge it); the ones not run are
recorded as such. The candidates that learn from the pairs come last, so that they race against
every other one. The winner's trained model (projection network, Noise2Inverse denoiser) or tuned
filter (BM3D's sigma on projections, its factor on slices) is then reused on the whole scan, so it
is not trained or tuned twice.

**The budget covers the winner's whole scan too.** Each judged candidate's whole scan is timed from
its run on the slab (:func:`whole_scan_seconds`: its steps per frame and per slice scaled, its
trained models reused), and the winner's whole scan is given what is left of
(1 + :data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`) x the budget, at least
``WHOLE_SCAN_SHARE`` x it. A candidate or blend that would take longer is passed over where another
one the judge allows would fit (:func:`~bluesky_lowdose.pipeline.choice.too_slow`); where none would,
the judge's pick stands. The record has each ``whole_scan_s`` and ``whole_scan``: the allowance, the
candidates passed over, and the seconds the winner's whole scan took.

A candidate of BM3D on slices filters only the slices its judge reads (the judged rows and
:data:`~bluesky_lowdose.pipeline.scan.JUDGE_REACH` beyond them; BM3D filters each slice on its own).

On detectors wider than :data:`ESTIMATE_ABOVE_WIDTH` a BM3D candidate starts only if its least
time on the slab fits in what is left of the budget (:func:`bm3d_floor_s`: its final BM3D alone,
BM3D's cost per pixel timed once on a 256² image here). BM3D's time grows with the pixel count:
one 1024² slice takes about 55 s on 2 cores, so BM3D on the slab's slices would run over 20
minutes past any budget, and the whole scan's for hours if it won.

Tried and not kept: Noise2Inverse training in a thread beside the BM3D candidates. On their own,
600 steps and BM3D of 48 slices overlapped fully (50.6 s together, 50.7 + 8.8 s in turn); in
``make demo`` the candidates took 241 s instead of 221 s (Noise2Inverse 64 s slower, the BM3D
candidates 37 s slower).

Noise2Inverse is judged on the slab but trained on detector rows sampled over the whole height
(:func:`~bluesky_lowdose.model.n2i.training_rows`: every row of a small detector, evenly spaced
rows with their neighbours on a large one), as it would be on the whole scan: a denoiser that
has only seen the slab's interior, where neighbouring slices agree, paints the object into the
empty slices beyond its faces (measured at 128^3: 0.0019 rms there against 0.0004 elsewhere).

**Where the long exposures barely see the noise** (a real scan's counts: :func:`noise_bound`'s
share under :data:`NOISE_SHARE_FLOOR`, measured right after ``none``), they measure their own
model error rather than noise removal: at 19 000 quanta they rated Noise2Inverse +2.1 dB over raw
where it was 3.6 dB below. There ``auto`` judges by **recorrupted scans** instead
(:mod:`~bluesky_lowdose.pipeline.recorrupt`): the candidates run on the slab with more noise of
the frames' own statistics, and each is scored against a plain reconstruction of a second scan
whose noise is independent of it, an unbiased estimate of its error against the noise-free
reconstruction (:func:`~bluesky_lowdose.pipeline.choice.pick_noise_free`; pair-trained candidates
run once, no folds, no race).
The winner then runs on the frames as they were, its trained models reused (a BM3D filter tuned
on the recorrupted pairs is tuned again).

Without long exposures there is nothing to judge with: ``auto`` is then
:data:`~bluesky_lowdose.pipeline.AUTO_WITHOUT_PAIRS`, as recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .angles import DEFAULT_TOLERANCE, same_view_indices
from .choice import (
    NOISE_SHARE_FLOOR,
    RACE_DB,
    WHOLE_SCAN_SHARE,
    _at_scan_noise,
    eligible,
    noise_free_eligible,
    noise_warning,
    pick_in_time,
    race,
    too_slow,
    whole_scan_allowance,
)
from .costs import bm3d_floor_s, bm3d_kind, whole_scan_seconds
from .flatfield import rows_of
from .recorrupt import Recorrupted, recorrupted_slab
from .result import AUTO_CANDIDATE
from .scan import judge_reach

if TYPE_CHECKING:
    from .judge import LongExposureJudge
    from .result import ScanResult
    from .scan import ScanPipeline

__all__ = [
    "AUTO_BUDGET_S",
    "AUTO_CANDIDATES",
    "AUTO_MARGIN",
    "AUTO_SLAB_ROWS",
    "REFIT",
    "REFIT_BELOW_ANGLES_PER_WIDTH",
    "auto_slab",
    "blends",
    "concurrent_kernels",
    "finish_auto",
    "noise_bound",
    "select_method",
]

logger = logging.getLogger(__name__)

#: Candidates of ``auto``, in the order they are tried.
AUTO_CANDIDATES: tuple[str, ...] = ("none", "n2i", "bm3d-slices", "bm3d", "paper")
#: Seconds the candidates may take together (the one running when it runs out finishes); the winner's
#: whole scan should end by (1 + :data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`) x it.
AUTO_BUDGET_S = 150.0
#: Detector rows the candidates are judged on, and rows of margin run on each side.
AUTO_SLAB_ROWS = 32
AUTO_MARGIN = 8
#: Seconds of Noise2Inverse training granted even when the budget is spent (it runs second), and
#: the share of the remaining budget its training may take.
MIN_TRAINING_S = 20.0
N2I_SHARE = 0.6
#: Frames a candidate's scan keeps at least when the long exposures' views are left out of it.
MIN_JUDGED_FRAMES = 8
#: Detectors wider than this: a BM3D candidate starts only if its least time on the slab fits in
#: what is left of the budget (:func:`bm3d_floor_s`). BM3D on one 1024² slice takes about 55 s on
#: 2 cores, so BM3D on slices would take over 20 minutes on the slab alone.
ESTIMATE_ABOVE_WIDTH = 256
#: Below this many frames per detector pixel of width, a Noise2Inverse winner whose candidate trained
#: without the long exposures' views (or on a recorrupted scan) is fine-tuned on every frame of the scan
#: before it denoises it (:data:`REFIT`): it learns its angle subsets' streaks, and the whole scan's
#: subsets have others. Measured reused as it was (64³, ``benchmarks/bench_refit.py``): 0.08 dB lost at
#: 1.4 x width angles, 0.08-0.21 dB at 1.2 x, 0.5 dB at 1.0 x, 0.7-3.3 dB at 0.6 x (docs/evaluation.md,
#: "Noise2Inverse reused on other views"). ``make demo`` (1.4 x) pays nothing for it.
REFIT_BELOW_ANGLES_PER_WIDTH = 1.2
#: That fine-tuning: the fraction of the Noise2Inverse steps and of the learning rate. 0.3 / 0.3 won
#: back 0.6 of 0.73 dB and 3.1 of 3.3 dB at 0.6 x width (0.2 / 0.1: 0.6 and 2.7).
REFIT: dict[str, float] = {"fraction": 0.3, "learning_rate_fraction": 0.3}
#: Train a Noise2Inverse candidate (over the whole height) in a child process on half the cores while
#: the BM3D candidates after it (on slices, on projections) run on the others; a pair-trained one races
#: (:func:`race`) against the candidates judged by then. On 2 cores TensorFlow trains Noise2Inverse's
#: batches of 4 crops about as fast on one thread as on two (36.5 s against 33.4 s for 1500 steps), and
#: BM3D beside a two-thread training slowed it by half: one thread each, the two took 41.7 s together
#: against 54.4 s one after the other (docs/benchmarks.md, "The main job"). The projection CNN's
#: candidates (the paper's) follow the BM3D ones there, their training in a child process on the other
#: cores' threads too: in ``make demo`` the second core idled for the last 23 s of Noise2Inverse's
#: training, and the paper's 26 s candidate ran after it. ``SIDE_BY_SIDE_CNN = False`` keeps them for
#: after the training.
SIDE_BY_SIDE = True
SIDE_BY_SIDE_CNN = True
#: ... but only while Noise2Inverse's training may go on this long (s) by its time limit: where the
#: budget stops the training soon after the BM3D candidates, the CNN runs after it on every core. At
#: real-like 128³ under the default budget the training's limit ended 10 s after BM3D, and the paper's
#: CNN took 77 s beside (one thread) against 60 s after it (the candidates 171 s against 163 s).
CNN_BESIDE_MIN_S = 30.0
#: A candidate that trains a projection CNN on the pairs starts only while this many seconds (s) per
#: run it needs (one per pair, leave-one-out; one where recorrupted scans judge) are left of the
#: budget. Its runs took 25-63 s each on the 48-row slab of a 128² scan (2 cores); in a 128³ photon
#: scan under the default budget the paper's CNN started with 34 s left, its first run took 63 s,
#: and it then stopped as its other two would end past the budget: a minute spent on a candidate that
#: could not be judged (``benchmarks/bench_auto_budget.py``, docs/benchmarks.md, "The main job").
CNN_RUN_MIN_S = 20.0
#: The first part's weight in a blend of two candidates (:func:`blends`). 0.25/0.5/0.75 were tried on
#: the ten recorded judge cases: the judge's picks were no better than with 0.5 alone (+0.08 dB on
#: average, four times the blends to judge).
BLEND_WEIGHT = 0.5


def blends(
    candidates: dict[str, dict[str, Any]],
    projected: dict[str, tuple[np.ndarray, np.ndarray]],
    judge: LongExposureJudge,
    weight: float = BLEND_WEIGHT,
    names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The blends of two candidates not below raw (the mean of their volumes), judged like them:
    one that denoises the projections with one that denoises the slices.

    Their errors differ most (a filter of each frame against a denoiser of each slice). Blends of
    two slice denoisers were tried too: Noise2Inverse with BM3D on slices lost 1.0 and 1.4 dB against
    the better of the two on three of the recorded cases, and on ``make demo`` the judge took that
    blend by 0.1 dB where it was 0.3 dB below Noise2Inverse against the truth, 70 s later.

    A projection is linear, so a blend's projection at a pair is the blend of its parts'
    projections there: a blend is judged from what its parts' judgement projected (pair ``k`` of a
    pair-trained part by its run without that pair), with no run of its own. Its gain is over the
    blend of its parts' raw reconstructions (the same as each part's own raw where, as usual, they
    are one). Measured on the ten recorded judge cases (``benchmarks/bench_judge_ties.py``,
    ``docs/evaluation.md``, "Blends"): with blends ``auto``'s picks are 0.23 dB better against the
    truth on average, and at or above the truly best single method in 7 of 10 cases (5 without).

    Parameters
    ----------
    candidates : dict
        ``auto``'s record per candidate (:func:`eligible` ones are blended; ``none`` and methods
        with both steps are not).
    projected : dict
        Per judged candidate: its projections at every pair and its raw reconstruction's.
    judge : LongExposureJudge
        The judge of the slab.
    weight : float
        The first part's weight (the second: ``1 - weight``).
    names : sequence of str, optional
        The candidates blended (default: the :func:`eligible` ones).

    Returns
    -------
    dict
        Per blend (:func:`~bluesky_lowdose.pipeline.methods.blend_name`): a record like a
        candidate's, with ``blend_of`` and ``weights``.
    """
    import itertools

    from .methods import blend_name, blend_parts, denoising_domain

    ok = [m for m in (eligible(candidates) if names is None else names)
          if m in projected and denoising_domain(m) is not None]  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for a, b in itertools.combinations(ok, 2):
        if denoising_domain(a) == denoising_domain(b):
            continue
        a, b = blend_parts(blend_name(a, b))
        mix = [weight * x + (1 - weight) * y for x, y in zip(projected[a], projected[b], strict=True)]
        every = list(range(len(mix[0])))
        q, raw = judge.score_projections(mix[0], every), judge.score_projections(mix[1], every)
        out[blend_name(a, b)] = {
            "status": "run", "blend_of": [a, b], "weights": [weight, 1 - weight], "seconds": 0.0,
            "judge": q, "raw": raw, "held_out": any(candidates[m].get("held_out") for m in (a, b)),
            "gain_psnr_db": q["psnr_db"] - raw["psnr_db"], "gain_ssim": q["ssim"] - raw["ssim"],
            "gain_psnr_db_per_pair": _pair_gains(judge, *mix),
        }  # fmt: skip
    return out


def auto_slab(rows: int) -> slice:
    """The detector rows the candidates run on: the central judged rows and their margins.

    Parameters
    ----------
    rows : int
        Detector rows.

    Returns
    -------
    slice
        Rows of the frames (all of them for small detectors).
    """
    want = AUTO_SLAB_ROWS + 2 * AUTO_MARGIN
    if rows <= want + AUTO_MARGIN:
        return slice(0, rows)
    start = (rows - want) // 2
    return slice(start, start + want)


def _leave_out_views(theta_deg: np.ndarray, reference_angles: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The frames of the candidates' scan (indices): all but those that see the long exposures' views.

    A reconstruction projected again at an angle it was made from returns that frame's own noise,
    ramp-filtered and summed along the whole ray (the back-projection and the projection follow
    the same lines), so the judge would penalise the raw reconstruction for noise the truth barely
    shows and reward any smoothing.  Judged on views no candidate saw, the judge ranks like the
    truth (``docs/evaluation.md``).  The winner runs on every frame afterwards.
    """
    drop = same_view_indices(theta_deg, reference_angles)
    keep = np.setdiff1d(np.arange(len(theta_deg)), drop)
    if drop.size == 0 or keep.size < MIN_JUDGED_FRAMES:
        why = (
            "no frame lies on a long exposure's view"
            if drop.size == 0
            else (f"only {keep.size} frames would be left (fewer than {MIN_JUDGED_FRAMES}): judged in view")
        )
        return np.arange(len(theta_deg)), {"left_out_frames": [], "note": why}  # fmt: skip
    note = (f"{drop.size} short frame(s) on the long exposures' views (and 180° from them) left out of every "
            "candidate's reconstruction, so the judge compares with views no candidate saw")  # fmt: skip
    return keep, {"left_out_frames": drop.tolist(), "note": note}


def noise_bound(
    judge: LongExposureJudge,
    raw_volume: Any,
    frames: np.ndarray,
    theta_deg: np.ndarray,
    open_beam_counts: Any,
    *,
    read_noise: float = 0.0,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """The most a denoiser can gain by the long exposures by removing the scan's noise.

    The raw reconstruction's residual against the long exposures is its noise plus the judge's own
    model error (an FBP projected again at a view it did not see) and the long frames' noise. A second,
    independent noise of the same photon statistics (Poisson around the measured counts, plus read
    noise) doubles the first part only; the judge's drop tells its share of the residual, and so the
    gain that removing all of it would give. At low counts the estimate saturates (the share is
    near 1 and the bound large); where the share is small it matched the truth in simulation.

    Parameters
    ----------
    judge : LongExposureJudge
        The judge of the candidates (all pairs).
    raw_volume : array_like
        The raw reconstruction of ``frames``.
    frames : numpy.ndarray
        ``(n, rows, width)`` flat/dark-corrected transmission it was made from.
    theta_deg : numpy.ndarray
        Their angles.
    open_beam_counts : float or numpy.ndarray
        Open-beam photons per pixel of the frames (``(rows, width)`` or a scalar).
    read_noise : float
        Read noise, photons rms.
    seed : int
        Seeds the second noise.
    **options
        Passed to :func:`~bluesky_lowdose.pipeline.enhance_scan` (``center``, ``backend``, ...).

    Returns
    -------
    dict
        ``share`` (0–1), ``most_gain_db`` (None where the share saturates), the judge's PSNR of the
        raw and of the doubled-noise reconstruction, ``seconds``.
    """
    from .stack import enhance_scan

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 7)
    n0 = np.asarray(open_beam_counts, np.float32)
    doubled = np.empty(frames.shape, np.float32)
    for i in range(0, len(frames), 32):  # bounded temporaries on large detectors
        lam = np.clip(np.asarray(frames[i : i + 32], np.float32) * n0, 0.0, None)
        extra = rng.poisson(lam).astype(np.float32) - lam
        if read_noise:
            extra += rng.normal(scale=read_noise, size=lam.shape).astype(np.float32)
        doubled[i : i + 32] = np.maximum((lam + extra) / n0, 0.5 / n0)
    again = enhance_scan(doubled, theta_deg, method="none", keep_projections=False, judge=False,
                         open_beam_counts=open_beam_counts, read_noise=read_noise, **options)  # fmt: skip
    every = list(range(len(judge.angles_deg)))
    raw_db = judge.score_projections(judge.project(raw_volume, every), every)["psnr_db"]
    doubled_db = judge.score_projections(judge.project(again.volume, every), every)["psnr_db"]
    share = float(np.clip(10 ** ((raw_db - doubled_db) / 10) - 1, 0.0, 1.0))
    return {"share": share, "most_gain_db": None if share > 0.95 else float(-10 * np.log10(1 - share)),
            "raw_psnr_db": float(raw_db), "doubled_noise_psnr_db": float(doubled_db),
            "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip


def _noise_judge(
    record: dict[str, Any],
    judge: LongExposureJudge,
    raw_volume: Any,
    proj: np.ndarray,
    theta_deg: np.ndarray,
    rows: slice,
    opb: Any,
    lopb: Any,
    short: np.ndarray,
    long_: np.ndarray,
    every_view: tuple[np.ndarray, np.ndarray, tuple[Any, Any] | None],
    judged_rows: slice,
    kwargs: dict[str, Any],
) -> Recorrupted | None:
    """After ``none``: the noise bound (``record["noise"]``) and, where the long exposures barely see
    the noise (:data:`NOISE_SHARE_FLOOR`), the recorrupted scans that judge instead
    (``record["noise_free"]``), made from ``every_view`` (the slab's frames, angles and
    Noise2Inverse's training rows before any view was left out). A failure is logged and leaves the
    long exposures to judge."""
    options = {k: kwargs[k] for k in ("center", "backend") if k in kwargs}
    noise, seed = float(kwargs.get("read_noise") or 0.0), int(kwargs.get("seed", 0))
    try:  # what removing all of the noise could gain by the long exposures
        record["noise"] = noise_bound(judge, raw_volume, proj, theta_deg, rows_of(opb, rows),
                                      read_noise=noise, seed=seed, **options)  # fmt: skip
    except Exception as exc:
        logger.warning("auto: the noise bound was not estimated: %s", exc)
        return None
    if record["noise"]["share"] >= NOISE_SHARE_FLOOR:
        return None
    try:
        frames, angles, training = every_view
        nf = recorrupted_slab(frames, rows, angles, short=short, long_=long_,
                              open_beam_counts=opb, read_noise=noise, long_open_beam_counts=lopb,
                              training=training, judged_rows=judged_rows, seed=seed, **options)  # fmt: skip
    except Exception as exc:
        logger.warning("auto: the recorrupted scans were not made, the long exposures judge: %s", exc)
        record["noise"]["recorrupted"] = f"not made: {exc}"
        return None
    record["noise_free"] = nf.record
    record["rule"] = ("largest estimated PSNR gain over the raw reconstruction against the noise-free "
                      "reconstruction (recorrupted scans: the long exposures barely see the noise), among "
                      "the candidates and the blends; none where none is estimated above it")  # fmt: skip
    return nf


def _pair_gains(
    judge: LongExposureJudge, test: np.ndarray, raw: np.ndarray, which: Sequence[int] = ()
) -> list[float]:
    """The judged PSNR gain over raw on each pair (``which``, default every pair) of projections at them."""
    which = list(which) or list(range(len(judge.angles_deg)))
    score = judge.score_projections
    return [round(score(test[[i]], [k])["psnr_db"] - score(raw[[i]], [k])["psnr_db"], 3)
            for i, k in enumerate(which)]  # fmt: skip


def _leave_one_out(
    judge: LongExposureJudge, last: np.ndarray, raw: np.ndarray, run: Callable[[int], ScanResult]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pair-trained candidate judged on every pair, each by the volume made without it.

    ``last`` is the projection at the last pair of the run trained without it, ``raw`` the raw
    reconstruction's projections at every pair; ``run(k)`` runs the candidate again without pair
    ``k`` for every other pair.  The projections at each pair are pooled into one score, the raw
    reconstruction is judged on every pair too: the same views as the candidates that do not learn
    from the pairs, so their gains compare.  Judged on the held-out pair alone, one pair's noise
    decided (measured: ``docs/evaluation.md``, "Leave-one-out").

    Returns
    -------
    tuple
        The quality (``enhanced``, ``raw``, ``held_out``) pooled over the pairs, the record of the
        folds (per pair: the held-out pair's angle, gain, seconds), and the projections judged
        (pair ``k`` by the run without it).
    """
    n = len(judge.angles_deg)
    every = list(range(n))
    tests = np.empty((n, *judge.reference.shape[1:]), np.float32)
    tests[n - 1] = last
    seconds = [0.0] * n
    for k in range(n - 1):
        t0 = time.perf_counter()
        tests[k] = judge.project(run(k).volume, [k])[0]
        seconds[k] = round(time.perf_counter() - t0, 2)
    score = judge.score_projections
    gains = _pair_gains(judge, tests, raw)
    quality = {"enhanced": score(tests, every), "raw": score(raw, every), "held_out": True}
    record = {"rule": "judged on every pair, each by a run trained without it (the residuals pooled); the "
                      "run trained without the last pair is the one reused",
              "pairs_deg": [float(a) for a in judge.angles_deg], "gain_psnr_db_per_pair": gains,
              "seconds_per_fold": seconds}  # fmt: skip
    return quality, record, tests


def _n2i_over_height(
    method: str, frames: np.ndarray, theta_deg: np.ndarray, rows: np.ndarray, options: dict[str, Any]
) -> Any:
    """A Noise2Inverse candidate's denoiser, trained on ``frames`` (the detector rows ``rows``,
    sampled over the whole height) through the scan's own pipeline (correction, subsets, training)."""
    from .scan import ScanPipeline

    opb = options.get("open_beam_counts")
    pipe = ScanPipeline(frames.shape[1:], method, input=options.get("input", "transmission"),
                        open_beam_counts=rows_of(opb, rows),
                        read_noise=options.get("read_noise", 0.0), n2i_options=options.get("n2i_options"),
                        center=options.get("center"), backend=options.get("backend"),
                        keep_projections=False, seed=options.get("seed", 0), mapper=options.get("mapper"),
                        judge=False, isolate_training=options.get("isolate_training", False),
                        training_threads=options.get("training_threads"))  # fmt: skip
    for i in range(0, len(frames), 16):
        pipe.add(i, theta_deg[i : i + 16], frames[i : i + 16])
    return pipe.train_denoiser(slice_rows=rows)


def concurrent_kernels() -> bool:
    """Whether numba's parallel kernels (the judge's forward projection, the ``fbp`` back-projector)
    may be called from two threads at once: numba's OpenMP and TBB layers take that, its fallback
    ``workqueue`` layer (neither library found) aborts the process. ``auto`` trains beside the BM3D
    candidates only where they do (:data:`SIDE_BY_SIDE`).

    Returns
    -------
    bool
    """
    import numba

    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()  # chooses the layer, as the first parallel call would
        return numba.threading_layer() in ("omp", "tbb")
    except Exception:  # an unknown numba: not side by side
        return False


def _say(progress: bool, line: str) -> None:
    """A line on stderr that keeps the progress bars intact (``progress`` on)."""
    if progress:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)


def _trained_on(record: dict[str, Any]) -> str | None:
    """What ``auto``'s candidates ran on where it was not the scan's own frames, every one of them."""
    if record.get("noise_free") is not None:
        return "a recorrupted scan"
    if record["judged_views"]["left_out_frames"]:
        return "frames without the long exposures' views"
    return None


def _whole_scan_steps(
    record: dict[str, Any], method: str, result: Any, *, frames: int, width: int, reusable: bool
) -> dict[str, bool]:
    """What the winner's whole scan does for ``method`` beside running it with its slab's models: one
    rule for :func:`finish_auto` and for the time the choice gives it (:func:`_time_the_whole_scan`).

    ``reuse``: the slab was the whole scan (every row, every frame, not recorrupted, every slice
    filtered) and its result is the whole scan's; ``refit``: a Noise2Inverse model trained on other
    views or noise, at sparse angles, is fine-tuned on every frame first (:data:`REFIT`);
    ``tune_again``: a projection filter tuned on recorrupted pairs is tuned again on the scan's.
    """
    from .methods import METHODS

    spec = METHODS[method]
    trained_on_other = _trained_on(record) is not None
    # a slab result whose every slice was denoised (an auto candidate of BM3D on slices filters fewer)
    every_slice = result is not None and "denoised_slices" not in (result.provenance.get("slice_step") or {})
    return {
        "reuse": reusable and record["whole_detector"] and not trained_on_other and every_slice,
        "refit": spec.slices == "n2i" and trained_on_other and frames < REFIT_BELOW_ANGLES_PER_WIDTH * width,
        "tune_again": record.get("noise_free") is not None and spec.projection not in (None, "cnn"),
    }


def _time_the_whole_scan(
    record: dict[str, Any],
    results: dict[str, Any],
    nf: Recorrupted | None,
    *,
    frames: int,
    slab_frames: int,
    height: int,
    width: int,
    budget_s: float,
    elapsed_s: float,
    cores: int,
    reusable: bool,
) -> dict[str, str]:
    """Each judged candidate's (and blend's) whole scan in seconds (:func:`whole_scan_seconds`, in its
    record as ``whole_scan_s``; the allowance in ``record["whole_scan"]``), and the ones that would not
    fit where another would, with why (:func:`~bluesky_lowdose.pipeline.choice.too_slow`).

    ``results`` are the candidates' slab results; ``nf`` the recorrupted judge (None: the long
    exposures judge); ``frames``, ``height``, ``width`` the whole scan's; ``slab_frames`` what the
    candidates ran on; ``cores`` BM3D's workers on the whole scan; ``reusable``: a slab that is the
    whole scan, every frame, is the winner's result as it is (as ``finish_auto`` decides, with the
    same conditions for a fine-tuning and a filter tuned again)."""
    candidates = record["candidates"]
    slab_rows = record["slab_rows"][1] - record["slab_rows"][0]
    beside = (record.get("side_by_side") or {}).get("beside", [])
    for m, res in results.items():
        steps = _whole_scan_steps(record, m, res, frames=frames, width=width, reusable=reusable)
        candidates[m]["whole_scan_s"] = 0.0 if steps["reuse"] else round(whole_scan_seconds(
            res, frames=frames, rows=height, slab_frames=slab_frames, slab_rows=slab_rows,
            bm3d_workers=(record["side_by_side"]["bm3d_workers"] if m in beside else cores, cores),
            refit=REFIT["fraction"] if steps["refit"] else 0.0,
            tuned_again=steps["tune_again"]), 1)  # fmt: skip
    for e in candidates.values():  # a blend runs both of its parts
        if "blend_of" in e and all("whole_scan_s" in candidates[p] for p in e["blend_of"]):
            e["whole_scan_s"] = round(sum(candidates[p]["whole_scan_s"] for p in e["blend_of"]), 1)
    allowed = whole_scan_allowance(budget_s, elapsed_s)
    record["whole_scan"] = {"allowed_s": round(allowed, 1), "share": WHOLE_SCAN_SHARE}
    return too_slow(eligible(candidates) if nf is None else noise_free_eligible(candidates), allowed)


def select_method(
    projections: Any,
    theta_deg: Any,
    *,
    long_refs: Any,
    reference_angles: Any,
    short_refs: Any = None,
    candidates: Sequence[str] | None = None,
    budget_s: float = AUTO_BUDGET_S,
    progress: bool = False,
    rows: slice | None = None,
    judged_rows: slice | None = None,
    training_rows: tuple[Any, Any] | None = None,
    race_db: float | None = RACE_DB,
    bm3d_seconds_per_pixel: float | None = None,
    blend: bool = True,
    reusable: bool = True,
    **kwargs: Any,
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Run the candidates on a slab and choose by the long exposures' judgement.

    Parameters
    ----------
    projections : array_like
        ``(n, rows, width)`` frames in the pipeline's input units (a slab is cut here).
    theta_deg : array_like
        Their angles, degrees.
    long_refs, reference_angles : array_like
        The long exposures (all rows) and their angles.
    short_refs : array_like, optional
        Their short partners (default: the projections at ``reference_angles``).
    candidates : sequence of str, optional
        Methods to try (default :data:`AUTO_CANDIDATES`; ``"none"`` is always tried).
    budget_s : float
        Seconds the candidates may take together; the winner's whole scan should end by
        (1 + :data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`) x it: a candidate whose whole
        scan (:func:`whole_scan_seconds`) would not is passed over where another one would
        (:func:`~bluesky_lowdose.pipeline.choice.too_slow`).
    progress : bool
        A line per candidate on stderr.
    rows : slice, optional
        The detector rows ``projections`` already are (a slab cut by the caller, e.g. from frames
        on disk); the long exposures and per-pixel counts, full height, are cut to them here.
        Default: :func:`auto_slab` of the projections, cut here.
    judged_rows : slice, optional
        The rows of the slab the long exposures judge. Default: :data:`AUTO_MARGIN` rows left out
        on each side where the slab is cut from a taller detector (every method sees an edge at
        the cut that the whole scan does not have: measured, the paper's CNN lost 3 dB of its
        judged gain there), every row where the slab is the whole detector.
    training_rows : tuple, optional
        ``(frames, rows)``: the same frames at the detector rows Noise2Inverse trains on
        (:func:`~bluesky_lowdose.model.n2i.training_rows` of the whole detector); its candidates
        train there and are judged on the slab. Default: they train on the slab.
    race_db : float or None
        A candidate that learns from the pairs stops after its first run when it is this far (dB)
        behind the best so far on the pair that run did not see (:func:`race`); None: every
        candidate runs all its folds (the evaluation, which judges every method).
    bm3d_seconds_per_pixel : float, optional
        BM3D's time per pixel here, for the BM3D candidates' least time (:func:`bm3d_floor_s`);
        default: timed once on a 256² image when the detector is wider than
        :data:`ESTIMATE_ABOVE_WIDTH` (narrower: not estimated).
    blend : bool
        Judge the blends of the candidates not below raw too (:func:`blends`), and choose among
        them and the candidates.
    reusable : bool
        Whether a candidate's result on a slab that is the whole scan (every row, every frame) is
        reused as the winner's (``finish_auto`` without a work directory): its whole scan then
        costs nothing.
    **kwargs
        Passed to :func:`~bluesky_lowdose.pipeline.enhance_scan` (``input``,
        ``open_beam_counts``, ``read_noise``, ``n2i_options``, ``seed``, ...).

    Returns
    -------
    tuple
        ``(winner, record, chosen)``: the method chosen (a blend: its parts joined by ``"+"``); a
        JSON-ready record (per candidate and blend its judge scores, gain, seconds, status; the
        slab; the rule; why the winner won); per method the winner is made of, its trained models
        to reuse on the whole scan (``models``) and its result on the slab (``result``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..model.baselines import BM3D_WORKERS, _cores
    from .methods import METHODS
    from .stack import enhance_scan

    proj = np.asarray(projections)
    height = np.asarray(long_refs).shape[1]
    if rows is None:
        rows = auto_slab(proj.shape[1])
        proj = proj[:, rows]
    elif proj.shape[1] != rows.stop - rows.start:
        raise ValueError(f"projections of {proj.shape[1]} rows are not the slab {rows.start}:{rows.stop}")
    order = list(AUTO_CANDIDATES if candidates is None else candidates)
    if "none" not in order:
        order.insert(0, "none")
    unknown = [m for m in order if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown auto candidate(s) {unknown}; choose among {', '.join(METHODS)}")
    n_slab = rows.stop - rows.start
    if judged_rows is None:
        cut_out = (rows.start > 0 or rows.stop < height) and n_slab > 2 * AUTO_MARGIN
        judged_rows = slice(AUTO_MARGIN, n_slab - AUTO_MARGIN) if cut_out else slice(0, n_slab)
    first, last = judged_rows.indices(n_slab)[:2]
    record: dict[str, Any] = {
        "rule": "largest PSNR gain over the raw reconstruction against the long exposures (same angles: "
        "every pair, leave-one-out for candidates that learn from the pairs), among the candidates and the "
        "blends (the mean of two candidates' volumes); never one below the raw reconstruction in PSNR or "
        "SSIM",
        "slab_rows": [rows.start, rows.stop],
        "whole_detector": rows.stop - rows.start == height,
        "judged_rows": [rows.start + first, rows.start + last],
        "budget_s": float(budget_s),
        "candidates": {},
    }
    models: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    started = time.perf_counter()
    long_slab = np.asarray(long_refs)[:, rows]
    if short_refs is None:  # their short partners, taken before those frames leave the scan
        from .stack import pair_from_projections

        tolerance = kwargs.get("tolerance", DEFAULT_TOLERANCE)
        short_slab = pair_from_projections(proj, np.asarray(theta_deg), reference_angles, tolerance)[0]
    else:
        short_slab = np.asarray(short_refs)[:, rows]
    theta_deg = np.asarray(theta_deg, np.float64)
    every_view = (proj, theta_deg, training_rows)  # where recorrupted scans judge: no view left out
    if kwargs.get("backend") == "dfi":  # direct Fourier inversion needs the regular angles: judged in view
        record["judged_views"] = {"left_out_frames": [], "note": "backend 'dfi' needs every regular angle: "
                                  "judged in view (biased towards smoothing)"}  # fmt: skip
    else:
        keep, record["judged_views"] = _leave_out_views(theta_deg, reference_angles)
        proj, theta_deg = proj[keep], theta_deg[keep]
        if training_rows is not None:
            training_rows = (np.asarray(training_rows[0])[keep], training_rows[1])
    opb = kwargs.pop("open_beam_counts", None)
    lopb = kwargs.pop("long_open_beam_counts", None)

    from .judge import holdout_index, make_judge

    n_pairs = len(np.asarray(long_refs))
    # the judge of the pair-trained candidates' folds: as enhance_scan makes it for the slab
    judge = make_judge(long_slab, reference_angles, input=kwargs.get("input", "transmission"),
                       open_beam_counts=rows_of(lopb, rows), center=kwargs.get("center"),
                       rows=judged_rows)  # fmt: skip

    def options_for(method: str) -> dict[str, Any]:
        """A candidate's options: Noise2Inverse's training limited to its share of the budget left."""
        options = dict(kwargs)
        if METHODS[method].slices == "n2i":  # the longest step: it leaves 40 % of the rest to the others
            left = max(N2I_SHARE * (budget_s - (time.perf_counter() - started)), MIN_TRAINING_S)
            given = (kwargs.get("n2i_options") or {}).get("time_limit_s")
            left = left if given is None else min(float(given), left)
            options["n2i_options"] = {**(kwargs.get("n2i_options") or {}), "time_limit_s": left}
        return options

    def over_height(method: str) -> bool:
        """A Noise2Inverse candidate that trains on rows over the whole height."""
        spec = METHODS[method]
        return training_rows is not None and spec.slices == "n2i" and spec.projection is None

    def train_over_height(method: str, options: dict[str, Any], **extra: Any) -> Any:
        return _n2i_over_height(method, training_rows[0], theta_deg, np.asarray(training_rows[1]),
                                {**options, "open_beam_counts": opb, **extra})  # fmt: skip

    def attempt(
        method: str, pretrained: tuple[Any, float, dict[str, Any]] | None = None, **extra: Any
    ) -> tuple[dict[str, Any], Any]:
        """One candidate, run and judged: its record and its result (None where not judged).
        ``pretrained``: its Noise2Inverse training already started (a future), when, its options;
        ``extra``: options of this run (a training in a child process, its threads)."""
        t0 = time.perf_counter() if pretrained is None else pretrained[1]
        options = {**options_for(method), **extra} if pretrained is None else pretrained[2]
        spec = METHODS[method]
        try:
            if over_height(method):
                options["slice_model"] = (train_over_height(method, options) if pretrained is None
                                          else pretrained[0].result())  # fmt: skip

            def run(holdout: bool | int) -> Any:
                # a fold (holdout=k) is judged here, pooled with the others: not by its own run
                return enhance_scan(proj, theta_deg, long_refs=long_slab, short_refs=short_slab,
                                    reference_angles=reference_angles, method=method, keep_projections=False,
                                    judge_rows=judged_rows, open_beam_counts=rows_of(opb, rows),
                                    long_open_beam_counts=rows_of(lopb, rows), holdout=holdout,
                                    judge=holdout is True, **options)  # fmt: skip

            token = AUTO_CANDIDATE.set(True)
            try:
                res = run(True)
                q = res.quality
                folds = None
                if q is not None and spec.pairs and q["held_out"] and nf is None:
                    last = n_pairs - 1
                    raw = judge.project(res.raw_volume, list(range(n_pairs)))
                    tested = judge.project(res.volume, [last])
                    first = _pair_gains(judge, tested, raw[[last]], [last])[0]
                    ahead = race(record["candidates"], first, last, race_db)
                    angle = float(judge.angles_deg[last])
                    seen = f"{first:+.2f} dB over raw on the {angle:g}° pair it did not see"
                    stopped = {"first_run": {"pair_deg": angle, "gain_psnr_db": first}}
                    if ahead is not None:  # raced: not chosen, its other folds not run
                        stopped["race"] = {"leader": ahead[0], "leader_gain_psnr_db": ahead[1],
                                           "race_db": race_db}  # fmt: skip
                        stopped["status"] = (f"stopped after one run: {seen}, more than {race_db:g} dB "
                                             f"behind {ahead[0]} ({ahead[1]:+.2f} dB there)")  # fmt: skip
                    elif (now := time.perf_counter()) + (n_pairs - 1) * (now - t0) - started > budget_s:
                        # its other folds, each about as long as this run, would end past the budget
                        stopped["status"] = (f"stopped after one run: its other {n_pairs - 1} folds would "
                                             f"end past the {budget_s:g} s budget ({seen}; one pair does "
                                             "not judge it)")  # fmt: skip
                    if "status" in stopped:
                        return {**stopped, "seconds": round(time.perf_counter() - t0, 2)}, None
                    q, folds, tests = _leave_one_out(judge, tested[0], raw, run)
                    projected[method] = (tests, raw)
            finally:
                AUTO_CANDIDATE.reset(token)
        except Exception as exc:  # a candidate that fails is not chosen; the others still run
            logger.warning("auto: candidate %s failed: %s", method, exc)
            return {"status": f"failed: {exc}", "seconds": time.perf_counter() - t0}, None
        entry: dict[str, Any] = {"status": "run", "seconds": round(time.perf_counter() - t0, 2)}
        if over_height(method):
            data = options["slice_model"].provenance["training_data"]
            entry["training_rows"] = {"rows": len(data["slice_rows"]), "of": height,
                                      "centre_slices": data["training_slices"]}  # fmt: skip
        hyper = (getattr(res.models.get("slices"), "provenance", None) or {}).get("hyperparameters") or {}
        if "planned_steps" in hyper:  # how much of its training the budget let Noise2Inverse make
            entry["training_steps"] = {
                "made": hyper["steps"],
                "planned": hyper["planned_steps"],
                "stopped_by_time_limit": bool(hyper.get("stopped_by_time_limit")),
            }
        if q is not None:
            entry.update(judge=q["enhanced"], raw=q["raw"], held_out=q["held_out"],
                         gain_psnr_db=q["enhanced"]["psnr_db"] - q["raw"]["psnr_db"],
                         gain_ssim=q["enhanced"]["ssim"] - q["raw"]["ssim"])  # fmt: skip
        if nf is not None:
            entry["noise_free"] = nf.estimate(res.volume)
        if folds is not None:
            entry["leave_one_out"] = folds
            entry["gain_psnr_db_per_pair"] = folds["gain_psnr_db_per_pair"]
        elif q is not None:  # each pair's gain: what a pair-trained candidate races against
            every = list(range(n_pairs))
            projected[method] = (judge.project(res.volume, every), judge.project(res.raw_volume, every))
            entry["gain_psnr_db_per_pair"] = _pair_gains(judge, *projected[method])
        return entry, res

    def keep(method: str, entry: dict[str, Any], res: Any) -> None:
        """A candidate's record, and its models and result when it ran."""
        record["candidates"][method] = entry
        if entry["status"] == "run":
            models[method] = dict(res.models)
            results[method] = res
        gain = entry.get("gain_psnr_db")
        shown = f"{gain:+.2f} dB over raw" if gain is not None else entry["status"]
        if "noise_free" in entry:
            shown = f"{_at_scan_noise(entry['noise_free'])} over raw"
        _say(progress, f"auto: {method} {shown} ({entry.get('seconds', 0):.0f} s)")

    measured: dict[str, float] = {}
    nf: Recorrupted | None = None  # set after none where the long exposures barely see the noise
    # each judged candidate's projections at every pair (pair k by a run that did not see it) and
    # its raw reconstruction's: what the blends are judged on
    projected: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def least_time(method: str) -> float | None:
        """A BM3D candidate's least time on the slab, where it is estimated (wide detectors)."""
        kind = bm3d_kind(method)
        if kind is None:
            return None
        spp = bm3d_seconds_per_pixel
        if spp is None:
            if proj.shape[2] <= ESTIMATE_ABOVE_WIDTH:
                return None
            if kind not in measured:
                from ..model import baselines
                from .slices import slice_profile

                profile = slice_profile(proj.shape[2]) if kind == "slices" else baselines.BM3D_PROFILE
                measured[kind] = baselines.bm3d_seconds_per_pixel(profile)
                record.setdefault("bm3d_seconds_per_pixel", {})[kind] = measured[kind]
            spp = measured[kind]
        # BM3D on slices filters the slices the judge reads, on projections every row of the slab
        reach = judge_reach(judged_rows, n_slab) if kind == "slices" else slice(0, n_slab)
        return bm3d_floor_s(method, len(proj), reach.stop - reach.start, proj.shape[2], spp)

    def not_run(method: str) -> dict[str, Any] | None:
        """Why a candidate does not start now (its record), or None."""
        elapsed = time.perf_counter() - started
        if METHODS[method].pairs and holdout_index(n_pairs) is None:
            return {"status": f"not run: {n_pairs} pair(s); a method that learns from the pairs is judged on "
                    "one it did not see, which needs at least 3"}  # fmt: skip
        if method != "none" and elapsed >= budget_s:
            return {"status": f"not run: the {budget_s:g} s budget was spent"}
        runs = 1 if nf is not None else n_pairs  # where recorrupted scans judge: one run, no folds
        if METHODS[method].projection == "cnn" and budget_s - elapsed < runs * CNN_RUN_MIN_S:
            return {"status": f"not run: {budget_s - elapsed:.0f} s of the {budget_s:g} s budget left, under "
                    f"the {runs * CNN_RUN_MIN_S:g} s its {runs} training run(s) need ({CNN_RUN_MIN_S:g} s "
                    "each at least)"}  # fmt: skip
        if (floor := least_time(method)) is not None and floor > budget_s - elapsed:
            return {"status": f"not run: its BM3D would take {floor:.0f} s at least on this slab, "
                    f"{budget_s - elapsed:.0f} s of the {budget_s:g} s budget are left",
                    "least_seconds": round(floor, 1)}  # fmt: skip
        return None

    def run_or_skip(method: str, **extra: Any) -> None:
        if (reason := not_run(method)) is not None:
            record["candidates"][method] = reason
        else:
            keep(method, *attempt(method, **extra))

    done: set[str] = set()
    cores = _cores()
    for method in order:
        if method in done:
            continue
        pretrained = None
        # beside Noise2Inverse's training: the BM3D candidates later in the order, then the projection
        # CNN's (see SIDE_BY_SIDE)
        later = [m for m in order[order.index(method) + 1 :] if m not in done and METHODS[m].slices != "n2i"]
        cnns = [m for m in later if METHODS[m].projection == "cnn" and METHODS[m].slices is None]
        cnns = cnns if SIDE_BY_SIDE_CNN else []
        beside = [m for m in later if bm3d_kind(m) is not None and METHODS[m].projection != "cnn"] + cnns
        if (SIDE_BY_SIDE and beside and over_height(method) and cores >= 2 and not_run(method) is None
                and concurrent_kernels()):  # fmt: skip
            options, threads = options_for(method), cores // 2
            pool = ThreadPoolExecutor(1, thread_name_prefix="auto-n2i")
            pretrained = (pool.submit(train_over_height, method, options, isolate_training=True,
                                      training_threads=threads), time.perf_counter(), options)  # fmt: skip
            pool.shutdown(wait=False)
            record["side_by_side"] = side = {"training": method, "beside": [], "training_threads": threads,
                                             "bm3d_workers": cores - threads}  # fmt: skip
            limit = (options.get("n2i_options") or {}).get("time_limit_s")
            token = BM3D_WORKERS.set(cores - threads)
            try:
                for other in beside:  # a CNN trains in a child process too, on the other cores' threads
                    cnn = other in cnns
                    left = None if limit is None else pretrained[1] + limit - time.perf_counter()
                    if cnn and (pretrained[0].done() or (left is not None and left < CNN_BESIDE_MIN_S)):
                        why = (" had ended" if pretrained[0].done() else "'s time limit was reached"
                               if left <= 0 else f"'s time limit ends in {left:.0f} s")  # fmt: skip
                        side["after"] = f"{other}: the training{why}"
                        continue  # after the training, on every core
                    run_or_skip(other, **({"isolate_training": True, "training_threads": cores - threads}
                                          if cnn else {}))  # fmt: skip
                    if not record["candidates"][other]["status"].startswith("not run"):
                        side["beside"].append(other)  # what ran beside (a candidate not started is not)
                    done.add(other)
            finally:
                BM3D_WORKERS.reset(token)
            keep(method, *attempt(method, pretrained))  # started within the budget: judged whatever is left
        else:
            run_or_skip(method)
        if method == "none" and "none" in results and kwargs.get("input", "transmission") == "transmission" \
                and opb is not None:  # fmt: skip
            nf = _noise_judge(record, judge, results["none"].volume, proj, theta_deg, rows, opb, lopb,
                              short_slab, long_slab, every_view, judged_rows, kwargs)  # fmt: skip
            if nf is not None:  # the candidates run on the first recorrupted scan, every view, from here on
                proj, theta_deg, short_slab, training_rows = nf.frames, every_view[1], nf.short, nf.training
                record["judged_views"]["noise_free"] = (
                    "every frame: the recorrupted scans need no view left out, and a denoiser trained "
                    "without some views lost 3 dB on the whole scan at 77 angles; the long exposures' "
                    "scores are then in view"
                )
                estimated = nf.record["raw_psnr_db"]
                record["candidates"]["none"]["noise_free"] = {"psnr_db": estimated, "gain_psnr_db": 0.0}
                _say(progress, f"auto: judged by recorrupted scans (raw: {estimated:.2f} dB estimated "
                               "against the noise-free reconstruction)")  # fmt: skip
    if blend:
        names = None if nf is None else list(noise_free_eligible(record["candidates"]))
        made = blends(record["candidates"], projected, judge, names=names)
        for name, e in made.items():
            if nf is not None:
                a, b = e["blend_of"]
                e["noise_free"] = nf.estimate(e["weights"][0] * results[a].volume
                                              + e["weights"][1] * results[b].volume)  # fmt: skip
            shown = e["gain_psnr_db"] if nf is None else e["noise_free"]["gain_psnr_db"]
            _say(progress, f"auto: {name} (the mean of both volumes) {shown:+.2f} dB over raw")
        record["candidates"].update(made)
    slow = _time_the_whole_scan(record, results, nf, frames=len(every_view[0]), slab_frames=len(proj),
                                height=height, width=proj.shape[2], budget_s=budget_s,
                                elapsed_s=time.perf_counter() - started, cores=cores,
                                reusable=reusable)  # fmt: skip
    winner, why = pick_in_time(record, slow)
    record["winner"] = winner
    record["why"] = why
    record["seconds"] = round(time.perf_counter() - started, 2)
    logger.info("auto chose %s: %s", winner, why)
    parts = record["candidates"].get(winner, {}).get("blend_of") or [winner]
    return winner, record, {m: {"models": models.get(m, {}), "result": results.get(m)} for m in parts}


def finish_auto(pipe: ScanPipeline) -> ScanResult:
    """The end of a ``method="auto"`` scan: the candidates run on a slab, the long exposures
    choose, the winner runs on the whole scan (its trained models reused; a Noise2Inverse model trained on
    other views or noise is fine-tuned on every frame first at sparse angles, :data:`REFIT`).

    Parameters
    ----------
    pipe : ScanPipeline
        The scan's pipeline, fed with every frame and the pairs (``fit``).

    Returns
    -------
    ScanResult
        The winner's result, with ``provenance["auto"]`` (every candidate's score, and why).

    Raises
    ------
    ValueError
        Fewer than two frames, or no long exposures with their angles.
    """
    from ..model.n2i import N2I_DEFAULTS, training_rows
    from .methods import METHODS
    from .scan import ScanPipeline

    if pipe.n_frames < 2:
        raise ValueError(f"{pipe.n_frames} frame(s): at least 2 are needed")
    if pipe._pairs is None or pipe._pairs[2] is None or pipe.judge is None:
        raise ValueError("method 'auto' needs long exposures with their angles (fit) to choose")
    t0 = time.perf_counter()
    theta = np.asarray(pipe._theta)
    kept = pipe._sink.take("inputs")  # handed over: the frames as given, in memory or on disk
    stored = None if isinstance(kept, np.ndarray) else kept
    rows = auto_slab(pipe.shape[0])
    # Noise2Inverse candidates train on rows over the whole height (the slab has no object's face)
    height, width = pipe.shape
    trained_rows = sampled = None
    tried = pipe.auto_candidates or AUTO_CANDIDATES
    if rows.stop - rows.start < height and any(METHODS[m].slices == "n2i" for m in tried):
        context = int(pipe.n2i_options.get("context", N2I_DEFAULTS["context"]))
        trained_rows = training_rows((height, width, width), 2, context)[0]
    if stored is not None:
        import h5py

        with h5py.File(stored.path, "r", locking=False) as f:
            slab = np.asarray(f[stored.dataset][:, rows], np.float32)
            sampled = (
                None if trained_rows is None else np.asarray(f[stored.dataset][:, trained_rows], np.float32)
            )
    else:
        frames = kept
        slab = frames[:, rows]
        if trained_rows is not None:
            sampled = frames[:, trained_rows]
    short, long_, angles = pipe._pairs
    common = dict(input=pipe.input, open_beam_counts=pipe.open_beam_counts, read_noise=pipe.read_noise,
                  projection_training=pipe.projection_training, n2i_options=pipe.n2i_options,
                  center=pipe.center, backend=pipe.backend, seed=pipe.seed,
                  long_open_beam_counts=pipe.long_open_beam_counts,
                  isolate_training=pipe.isolate_training)  # fmt: skip
    winner, record, chosen = select_method(
        slab, theta, long_refs=long_, short_refs=short,
        reference_angles=angles, candidates=pipe.auto_candidates, rows=rows,
        training_rows=None if trained_rows is None else (sampled, trained_rows),
        budget_s=AUTO_BUDGET_S if pipe.auto_budget_s is None else pipe.auto_budget_s,
        progress=pipe.progress, mapper=pipe.mapper, reusable=pipe.workdir is None, **common,
    )  # fmt: skip
    pipe.timings["auto_selection_s"] = time.perf_counter() - t0
    from .judge import holdout_index

    trained_on = _trained_on(record)

    def run_whole(method: str) -> ScanResult:
        """One method of the winner on the whole scan, its trained models and tuned filter reused."""
        part = chosen[method]
        result = part["result"]
        steps = _whole_scan_steps(record, method, result, frames=pipe.n_frames, width=width,
                                  reusable=pipe.workdir is None)  # fmt: skip
        if steps["reuse"]:
            return result  # the slab was the whole scan, every frame, every slice: nothing to run again
        models = dict(part["models"])
        # a Noise2Inverse model trained on other views or noise, at sparse angles: fine-tuned on every frame
        initial = models.pop("slices", None) if steps["refit"] else None
        if initial is not None:
            record.setdefault("fine_tuned_on_every_frame", {})[method] = {
                "from": initial.model_hash, **REFIT,
                "why": f"{pipe.n_frames} frames, fewer than {REFIT_BELOW_ANGLES_PER_WIDTH:g} x the width "
                f"({width}), and its candidate trained on {trained_on}: a model learns its subsets' streaks",
            }  # fmt: skip
        if steps["tune_again"]:
            models.pop("projection", None)  # a filter tuned at the recorrupted noise: tuned again here
        held = holdout_index(len(short)) if record["candidates"][method].get("held_out") else None
        # a tuned filter is reused like a trained model: BM3D on slices keeps its slab's factor
        tuned = (part["result"].provenance.get("slice_step") or {}) if part["result"] is not None else {}
        factor = tuned.get("factor") if tuned.get("kind") == "bm3d" else None
        best = ScanPipeline(pipe.shape, method, has_pairs=True, projection_model=models.get("projection"),
                            slice_model=models.get("slices"), slice_factor=factor,
                            keep_projections=pipe.keep_projections,
                            progress=pipe.progress, on_epoch=pipe.on_epoch, workdir=pipe.workdir,
                            held_out=held,
                            mapper=pipe.mapper, fine_tune=REFIT, **common)  # fmt: skip
        if initial is not None:
            best.n2i_options = best._fine_tuned(dict(best.n2i_options), "steps", initial)
        best.fit(short, long_, reference_angles=angles)
        for i in range(0, pipe.n_frames, 16):
            block = stored.slices(i, min(i + 16, pipe.n_frames)) if stored is not None else frames[i : i + 16]
            best.add(i, theta[i : i + 16], block)
        return best.finish()

    t1 = time.perf_counter()
    runs = [run_whole(m) for m in chosen]
    if len(runs) == 1:
        result = runs[0]
    else:
        from .result import blend_results

        blend = record["candidates"][winner]
        # judged on the pair none of its parts saw, as its record was on the slab
        pipe.held_out = holdout_index(len(short)) if blend["held_out"] else None
        pipe.method = winner
        result = blend_results(pipe, runs, blend["weights"])
    # what the whole scan took, beside the winner's estimate (whole_scan_s) that the choice used
    record.setdefault("whole_scan", {})["seconds"] = round(time.perf_counter() - t1, 2)
    if stored is not None:
        Path(stored.path).unlink(missing_ok=True)
    pipe.models = dict(result.models)
    pipe.timings.update(result.timings)
    pipe.timings["auto_total_s"] = time.perf_counter() - t0
    if (warning := noise_warning(record)) is not None:
        logger.warning(warning)
        result.warn(warning)
    result.provenance["requested_method"] = "auto"
    result.provenance["auto"] = record
    result.provenance["timings"] = {k: round(v, 3) for k, v in pipe.timings.items()}
    result.timings = dict(pipe.timings)
    pipe.method = result.method
    return result
