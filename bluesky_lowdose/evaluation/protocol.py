"""The synthetic evaluation protocol of Yang et al. (2018), Gaussian and Poisson variants (pure).

Every scientific step -- flat/dark correction, ``-log`` (with its low-count bias correction),
training of the projection CNN, tuning of the baselines, Noise2Inverse, reconstruction and
scoring -- is :mod:`bluesky_lowdose.pipeline`'s: this module only simulates the data, calls
:func:`~bluesky_lowdose.pipeline.enhance_scan` once per method and level, and scores the
volumes with :func:`~bluesky_lowdose.pipeline.score_volume`.

Gaussian mode (the paper's protocol)
    1. The cube-of-spheres phantom is projected exactly at ``angles`` equally spaced angles over
       [0, 180] degrees inclusive: line integrals ``P``; ``P_o = P / max(P)`` in [0, 1].
    2. ``P_n = P_o + N(0, sigma^2)`` with ``sigma = level * max(P_o) = level``.  One seeded
       realisation per level.
    3. Each method runs on ``P_n * max(P)`` (line integrals, ``input="line_integrals"``); the
       methods with pairs get the clean projections at the training angles as the "long"
       references (as in the paper), their short partners are the noisy projections there.
    4. ``R_o``, the reference, is the clean projections through the same pipeline (method
       ``"none"``).

Poisson mode (physically realistic)
    The TXM simulator (:class:`bluesky_lowdose.physics.TXMPhysics`) records a full-dose scan at
    the long exposure and a low-dose scan at ``long / ratio``, each with its own long-exposure
    flats (10, out of the beam: they cost the sample no dose) and darks of its own exposure (10).
    Frames are corrected with :func:`~bluesky_lowdose.pipeline.flat_field` (the long flats scaled
    by the exposure ratio), and the open-beam photon counts and read noise measured from the long
    flats and darks with :func:`~bluesky_lowdose.pipeline.photon_statistics` go to
    :func:`~bluesky_lowdose.pipeline.enhance_scan` (``open_beam_counts``, ``read_noise``): the
    ``-log`` floor is half a photon and methods without a projection step correct the low-count
    bias.  The pairs are the long exposures of the full-dose scan at the training angles and the
    low-dose projections there.  ``R_o`` is the noise-free reconstruction (``mu`` x exact line
    integrals); ``full-dose`` is the long scan with method ``"none"``.  Plain reconstructions of
    further scans at intermediate doses (``dose_ladder``) give each method's *equivalent dose*:
    the dose at which plain FBP scores as well as the method does at ``1 / ratio``.

Slab and scores
    Only the central ``size // 8`` slices are scored (through the middle of the cube).  For speed
    every method runs on a slab of detector rows: those slices plus ``margin`` (8) rows on each
    side, so that edge effects of the projection filters stay out of the scored slices.  Scores are
    PSNR and SSIM inside the object (:func:`bluesky_lowdose.metrics.object_mask` of ``R_o``), data
    range of ``R_o``; the air around the object is not scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .config import (
    N_REFERENCE_FRAMES,
    PAPER_SSIM,
    EvaluationConfig,
)

__all__ = [
    "TRAINING_SEED_STEP",
    "judge_agreement",
    "learned",
    "low_dose_scan",
    "poisson_physics",
    "poisson_scan",
    "reference_volume",
    "run_evaluation",
    "source_digest",
]

logger = logging.getLogger(__name__)

#: Seeds of the repeated trainings (``training_seeds``): the level's seed plus multiples of this.
TRAINING_SEED_STEP = 7919


def _tag(value: float) -> int:
    """Integer seed component of a noise level or dose ratio (runs are reproducible per level)."""
    return round(1000 * float(value))


def _make_phantom(cfg: EvaluationConfig) -> Any:
    from bluesky_lowdose.physics import make_phantom, make_textured_phantom

    return (make_textured_phantom if cfg.phantom == "textured" else make_phantom)(cfg.size, seed=cfg.seed)


def _labels(phantom: Any, rows: slice) -> np.ndarray | None:
    """Phase of each voxel of the scored slices: 0 background, 1 cube, 2 spheres (None: textured)."""
    if getattr(phantom, "kind", "spheres") != "spheres":
        return None
    vol = phantom.voxelize()[rows]
    lab = np.zeros(vol.shape, dtype=np.int8)
    lab[np.isclose(vol, phantom.cube_value)] = 1
    lab[np.isclose(vol, phantom.sphere_value)] = 2
    return lab


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, key: str, t0: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0


def _brief(record: Any) -> Any:
    """Provenance without the bulky parts (loss curves, normalisation, versions, timestamps)."""
    drop = {"history", "normalization", "versions", "software", "created"}
    if isinstance(record, dict):
        return {k: _brief(v) for k, v in record.items() if k not in drop}
    if isinstance(record, (list, tuple)):
        return [_brief(v) for v in record]
    if isinstance(record, np.generic):
        return record.item()
    return record


class _Scorer:
    """Scores volumes of the slab inside the object of ``R_o`` (the pipeline's definition)."""

    def __init__(self, reference: np.ndarray, scored: slice, labels: np.ndarray | None) -> None:
        from bluesky_lowdose.metrics import object_mask

        self.scored = scored
        self.reference = reference[scored]
        self.mask = object_mask(self.reference)
        self.labels = labels

    def __call__(self, volume: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
        from bluesky_lowdose.metrics import phase_histograms
        from bluesky_lowdose.pipeline import score_volume

        vol = volume[self.scored]
        scores = score_volume(vol, self.reference, mask=self.mask)
        if self.labels is None:
            return scores, {}
        separation = phase_histograms(vol, self.labels, bins=64)["separation"]
        return scores, separation


def _plain(projections: np.ndarray, theta: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The pipeline's reconstruction without enhancement (method ``"none"``)."""
    from bluesky_lowdose.pipeline import enhance_scan

    return enhance_scan(projections, theta, method="none", **kwargs).volume


def _run_methods(
    cfg: EvaluationConfig,
    projections: np.ndarray,
    theta: np.ndarray,
    long_refs: np.ndarray,
    reference_angles: np.ndarray,
    scorer: _Scorer,
    *,
    input: str,
    seed: int,
    open_beam_counts: np.ndarray | None = None,
    read_noise: float = 0.0,
    long_open_beam_counts: np.ndarray | None = None,
    mapper: Any = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run every method through :func:`enhance_scan`; return the level's entry and middle slices."""
    from bluesky_lowdose.pipeline import enhance_scan

    entry: dict[str, Any] = {"scores": {}, "separation": {}, "seconds": {}, "provenance": {}, "judge": {}}
    slices: dict[str, np.ndarray] = {}
    volumes: dict[str, np.ndarray] = {}  # every method's, for the blends auto judges
    mid = scorer.scored.start + (scorer.scored.stop - scorer.scored.start) // 2

    def run(method: str, seed: int, repeat: int = 0) -> Any:
        # every method gets the long exposures: pair methods learn from them (all but the held-out
        # one), every result is judged by them (pipeline.judge)
        n2i = cfg.n2i_options()
        if repeat and "seed" in n2i:  # a seed given in the options would win over the repeat's
            n2i["seed"] = int(n2i["seed"]) + TRAINING_SEED_STEP * repeat
        return enhance_scan(projections, theta, long_refs=long_refs, reference_angles=reference_angles,
                            long_open_beam_counts=long_open_beam_counts, input=input, method=method,
                            open_beam_counts=open_beam_counts, read_noise=read_noise,
                            projection_training=cfg.projection_training(),
                            n2i_options=n2i, keep_projections=False, progress=cfg.progress,
                            seed=seed, mapper=mapper)  # fmt: skip

    for method in cfg.method_list():
        t0 = time.perf_counter()
        result = run(method, seed)
        entry["seconds"][method] = round(time.perf_counter() - t0, 2)
        entry["scores"][method], entry["separation"][method] = scorer(result.volume)
        entry["provenance"][method] = _brief(result.provenance)
        if result.quality is not None:
            q = result.quality
            entry["judge"][method] = {"psnr_db": q["enhanced"]["psnr_db"], "ssim": q["enhanced"]["ssim"],
                                      "raw_psnr_db": q["raw"]["psnr_db"], "raw_ssim": q["raw"]["ssim"],
                                      "angles_deg": q["enhanced"]["angles_deg"], "held_out": q["held_out"],
                                      "ceiling_psnr_db": q["ceiling_psnr_db"]}  # fmt: skip
        slices[method] = result.volume[mid].copy()
        volumes[method] = np.asarray(result.volume)
        _progress_line(f"  {method}", entry["scores"][method], entry["seconds"][method], cfg.progress)
        if cfg.training_seeds > 1 and learned(method):  # the spread of a learned method over its training
            spread = [entry["scores"][method]]
            for k in range(1, cfg.training_seeds):
                spread.append(scorer(run(method, seed + TRAINING_SEED_STEP * k, k).volume)[0])
            entry.setdefault("seed_spread", {})[method] = {
                "seeds": [seed + TRAINING_SEED_STEP * k for k in range(cfg.training_seeds)],
                **{m: [float(sc[m]) for sc in spread] for m in ("psnr", "ssim")},
            }
    if cfg.judge_views == "held-out" and len(entry["judge"]) >= 2:
        blends = _judge_like_auto(cfg, entry, projections, theta, long_refs, reference_angles, input=input,
                                  seed=seed, open_beam_counts=open_beam_counts, read_noise=read_noise,
                                  long_open_beam_counts=long_open_beam_counts, mapper=mapper)  # fmt: skip
        for name, (weights, parts) in blends.items():  # scored like the methods
            volume = sum(w * volumes[m] for w, m in zip(weights, parts, strict=True))
            entry["scores"][name], entry["separation"][name] = scorer(volume)
            entry["seconds"][name] = sum(entry["seconds"][m] for m in parts)
            slices[name] = volume[mid].copy()
    return entry, slices


def learned(method: str) -> bool:
    """Whether a method trains a network (its result depends on the training seed).

    Parameters
    ----------
    method : str
        A key of :data:`bluesky_lowdose.pipeline.METHODS`.

    Returns
    -------
    bool
        True for a projection CNN or a Noise2Inverse slice step.
    """
    from bluesky_lowdose.pipeline import METHODS

    spec = METHODS[method]
    return spec.projection == "cnn" or spec.slices == "n2i"


def _judge_like_auto(
    cfg: EvaluationConfig,
    entry: dict[str, Any],
    projections: np.ndarray,
    theta: np.ndarray,
    long_refs: np.ndarray,
    reference_angles: np.ndarray,
    **kwargs: Any,
) -> dict[str, tuple[list[float], list[str]]]:
    """Judge the methods exactly as ``auto`` does: each run again on the scan without the frames on
    the long exposures' views (:func:`bluesky_lowdose.pipeline.select_method`, no time budget, no
    racing: every method's pooled score is reported, so a pair-trained one runs all its folds).

    The in-view judgement of the results on every frame stays as ``judge_in_view``. The blends
    ``auto`` judges (:func:`bluesky_lowdose.pipeline.auto.blends`) are judged too; returned are
    their weights and parts (name -> ``(weights, parts)``), for the caller to score them.
    """
    from bluesky_lowdose.pipeline.auto import select_method

    judged = list(entry["judge"])
    # the protocol's slab is cut from the phantom, as auto's from a detector: judged on its scored rows
    scored, slab = cfg.scored_rows(), cfg.slab_rows()
    _, record, _ = select_method(projections, theta, long_refs=long_refs, reference_angles=reference_angles,
                                 candidates=judged, budget_s=1e12, race_db=None,
                                 rows=slice(0, projections.shape[1]),
                                 judged_rows=slice(scored.start - slab.start, scored.stop - slab.start),
                                 projection_training=cfg.projection_training(), n2i_options=cfg.n2i_options(),
                                 progress=cfg.progress, **kwargs)  # fmt: skip
    entry["judge_in_view"] = entry["judge"]
    entry["judge"] = {}
    blends = {}
    for m, c in record["candidates"].items():
        if "judge" not in c or (m not in judged and "blend_of" not in c):
            continue
        if "blend_of" in c:
            blends[m] = (c["weights"], c["blend_of"])
        ceiling = entry["judge_in_view"][c.get("blend_of", [m])[0]]["ceiling_psnr_db"]  # the frames' own
        entry["judge"][m] = {"psnr_db": c["judge"]["psnr_db"], "ssim": c["judge"]["ssim"],
                             "raw_psnr_db": c["raw"]["psnr_db"], "raw_ssim": c["raw"]["ssim"],
                             "angles_deg": c["judge"]["angles_deg"], "held_out": c["held_out"],
                             "ceiling_psnr_db": ceiling}  # fmt: skip
    entry["judged_views"] = record["judged_views"]
    entry["judged_rows"] = record["judged_rows"]
    entry["auto_winner"] = record["winner"]
    entry["auto_why"] = record["why"]
    if record.get("noise_free") is not None:  # auto chose by the recorrupted scans: their estimates
        gains = {m: c["noise_free"]["gain_psnr_db"] for m, c in record["candidates"].items()
                 if "noise_free" in c}  # fmt: skip
        least = {m: [nf["at_scan_noise_db"], nf.get("at_scan_noise_se_db")]
                 for m, c in record["candidates"].items()
                 if "at_scan_noise_db" in (nf := c.get("noise_free", {}))}  # fmt: skip
        entry["noise_free_judge"] = {**record["noise_free"], "noise_share": record["noise"]["share"],
                                     "gain_psnr_db": gains, "at_scan_noise_db": least}  # fmt: skip
    return blends


def judge_agreement(entry: dict[str, Any]) -> dict[str, Any] | None:
    """How well the long exposures' judge ranks the methods of one case against the true reference.

    The judge's criterion is the gain over the raw reconstruction on the same angles
    (``psnr_db - raw_psnr_db``): methods held out of different pairs then compare.

    Parameters
    ----------
    entry : dict
        A level of :func:`run_evaluation` (``scores`` and ``judge`` per method).

    Returns
    -------
    dict or None
        ``spearman`` (rank correlation of the judge's gain and the true PSNR over the methods),
        ``picked`` (what ``auto`` chose where it judged the level, ``auto_winner``: its rule breaks
        ties within ``TIE_DB`` by SSIM; else the largest gain), ``best`` (the truly best by PSNR),
        ``regret_psnr_db`` (true PSNR lost by taking the pick); None with fewer than two judged
        methods.
    """
    judged = [m for m in entry.get("judge", {}) if m in entry["scores"]]
    if len(judged) < 2:
        return None
    gain = np.array([entry["judge"][m]["psnr_db"] - entry["judge"][m]["raw_psnr_db"] for m in judged])
    true = np.array([entry["scores"][m]["psnr"] for m in judged])
    best = judged[int(np.argmax(true))]
    # auto's own rule (pick_winner: ties within TIE_DB to SSIM, never below raw) where auto judged
    picked = entry.get("auto_winner")
    if picked not in entry["scores"]:
        picked = judged[int(np.argmax(gain))]
    out = {"spearman": _spearman(gain, true), "picked": picked, "best": best,
           "regret_psnr_db": float(true.max() - entry["scores"][picked]["psnr"]),
           "auto": {"method": picked, **entry["scores"][picked]},
           "judge_gain_db": {m: float(g) for m, g in zip(judged, gain, strict=True)}}  # fmt: skip
    estimated = {m: g for m, g in entry.get("noise_free_judge", {}).get("gain_psnr_db", {}).items()
                 if m in entry["scores"]}  # fmt: skip
    if len(estimated) >= 2:  # auto judged by recorrupted scans: how their estimates rank
        truth = np.array([entry["scores"][m]["psnr"] for m in estimated])
        out["noise_free_spearman"] = _spearman(np.array(list(estimated.values())), truth)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two score arrays (None where either has a single rank)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    sd = float(np.std(ra) * np.std(rb))
    return float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / sd) if sd > 0 else None


def _progress_line(name: str, score: dict[str, float], seconds: float, progress: bool) -> None:
    text = f"{name}: SSIM {score['ssim']:.3f}, PSNR {score['psnr']:.2f} dB ({seconds:.0f} s)"
    logger.info(text)
    if progress:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)


def _report_level(name: str, entry: dict[str, Any], mode: str, progress: bool) -> None:
    from .targets import target_check

    scores = entry["scores"]
    text = ", ".join(f"{m} {s['ssim']:.3f}/{s['psnr']:.1f} dB" for m, s in scores.items())
    agree = entry.get("judge_agreement")
    if agree:
        rho = "n/a" if agree["spearman"] is None else f"{agree['spearman']:.2f}"
        text += (f" | long-exposure judge picks {agree['picked']} (best {agree['best']}, "
                 f"regret {agree['regret_psnr_db']:.2f} dB, Spearman {rho})")  # fmt: skip
    check = target_check(scores, mode)
    if check is not None:
        text += (
            f" | {check['default']} - best baseline: {check['margin']['ssim']:+.3f} SSIM, "
            f"{check['margin']['psnr']:+.2f} dB: {'met' if check['met'] else 'missed'}"
        )
    logger.info("%s: SSIM/PSNR %s", name, text)
    if progress:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"{name}: SSIM/PSNR {text}", file=sys.stderr)


def _reference_indices(theta: np.ndarray, angles: Sequence[float]) -> np.ndarray:
    return np.array(sorted({int(np.argmin(np.abs(theta - a))) for a in angles}), dtype=np.int64)


def _gaussian(cfg: EvaluationConfig, result: dict[str, Any], clock: _Clock, mapper: Any = None) -> None:
    from tqdm.auto import tqdm

    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    t0 = time.perf_counter()
    phantom = _make_phantom(cfg)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    p_clean = phantom.project_many(theta)
    scale = float(p_clean.max())
    p_o = p_clean / scale
    labels = _labels(phantom, rows)
    ref_idx = _reference_indices(theta, cfg.train_angles)
    clock.add("simulate", t0)
    t0 = time.perf_counter()
    r_o = _plain(p_clean[:, slab], theta, input="line_integrals", mapper=mapper)
    clock.add("reference", t0)
    scorer = _Scorer(r_o, scored, labels)
    long_refs = p_clean[ref_idx][:, slab]
    result["train_angles_deg"] = [float(theta[i]) for i in ref_idx]
    result["line_integral_scale"] = scale
    result["levels"] = []
    figures: dict[str, Any] = {}
    mid = scored.start + (scored.stop - scored.start) // 2
    for level in tqdm(list(cfg.noise_levels), desc="noise levels", disable=not cfg.progress):
        tag = _tag(level)
        rng = np.random.default_rng([cfg.seed, tag, 1])
        t0 = time.perf_counter()
        p_n = (p_o + level * rng.standard_normal(p_o.shape)).astype(np.float32)
        proj = p_n[:, slab] * np.float32(scale)
        clock.add("simulate", t0)
        t0 = time.perf_counter()
        entry, slices = _run_methods(cfg, proj, theta, long_refs, theta[ref_idx], scorer,
                                     input="line_integrals", seed=cfg.seed + tag, mapper=mapper)  # fmt: skip
        clock.add("methods", t0)
        entry = {"level": float(level), **entry}
        paper = PAPER_SSIM.get(round(float(level), 2))
        if paper is not None:
            entry["paper_ssim"] = {"noisy": paper[0], "enhanced": paper[1]}
        result["levels"].append(entry)
        figures[f"{level:g}"] = {"slices": {"reference": r_o[mid].copy(), **slices}}
        entry["judge_agreement"] = judge_agreement(entry)
        _report_level(f"noise {100 * level:g} %", entry, cfg.mode, cfg.progress)
    result["_figures"] = figures


def _equivalent_dose(score: float, ladder: dict[float, float]) -> dict[str, Any]:
    """Dose (fraction of full) at which plain FBP scores ``score``, interpolated in log dose.

    ``ladder`` maps dose ratios (1: full dose) to plain-FBP scores.  Returns ``{"dose", "bound"}``:
    ``bound`` is ``"at least"`` when ``score`` reaches the full dose's, ``"below"`` when it is
    under the lowest dose's, else None.
    """
    points = sorted((1.0 / r, s) for r, s in ladder.items())
    dose = np.array([p[0] for p in points])
    vals = np.maximum.accumulate(np.array([p[1] for p in points]))  # more dose never scores worse
    if score >= vals[-1]:
        return {"dose": float(dose[-1]), "bound": "at least"}
    if score < vals[0]:
        return {"dose": float(dose[0]), "bound": "below"}
    return {"dose": float(np.exp(np.interp(score, vals, np.log(dose)))), "bound": None}


def poisson_physics(cfg: EvaluationConfig) -> Any:
    """The simulator of a Poisson-mode run: its phantom, detector (flux, blur, dead pixels) and seed.

    Parameters
    ----------
    cfg : EvaluationConfig
        The run.

    Returns
    -------
    bluesky_lowdose.physics.TXMPhysics
        The microscope; its clean projections are cached, so every scan sees the same sample.
    """
    from bluesky_lowdose.physics import DetectorModel, TXMPhysics

    detector = DetectorModel((cfg.size, cfg.size), flux=cfg.flux, psf_sigma=cfg.psf_sigma,
                             dead_pixels=cfg.dead_pixels)  # fmt: skip
    return TXMPhysics(_make_phantom(cfg), detector, seed=cfg.seed + 2, cache_size=cfg.angles + 8)


def reference_volume(
    cfg: EvaluationConfig, physics: Any, theta: np.ndarray, *, mapper: Any = None
) -> tuple[np.ndarray, str]:
    """``R_o`` of a Poisson-mode run on its slab: the noise-free projections as the detector records
    them (``reference="detector"``: its blur included) or the sample's exact line integrals.

    Parameters
    ----------
    cfg : EvaluationConfig
        The run (``reference``, slab).
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulator.
    theta : numpy.ndarray
        The scan's angles, degrees.
    mapper : callable, optional
        As for :func:`~bluesky_lowdose.pipeline.enhance_scan`.

    Returns
    -------
    tuple
        The volume of the slab's rows, and one line saying what it is.
    """
    if cfg.reference == "detector" and cfg.psf_sigma > 0:
        recorded = physics.recorded_line_integrals(theta)
    else:  # without blur the detector records the sample's line integrals
        recorded = physics.mu * physics.phantom.project_many(theta)
    volume = _plain(recorded[:, cfg.slab_rows()], theta, input="line_integrals", mapper=mapper)
    if cfg.reference == "detector":
        return volume, "R_o: FBP of the noise-free projections as the detector records them (blur included)"
    return volume, "R_o: FBP of the sample's exact line integrals (scores the detector's blur too)"


def poisson_scan(cfg: EvaluationConfig, physics: Any, theta: np.ndarray, ratio: float) -> dict[str, Any]:
    """One simulated scan of the Poisson protocol at ``exposure / ratio`` (see the module).

    Parameters
    ----------
    cfg : EvaluationConfig
        The run (seed, exposure, slab, progress).
    physics : bluesky_lowdose.physics.TXMPhysics
        The simulator; its noise stream is reseeded per ratio, so scans are independent and
        reproducible.
    theta : numpy.ndarray
        The scan's angles, degrees.
    ratio : float
        Long / short exposure ratio (1: the full-dose scan).

    Returns
    -------
    dict
        ``transmission`` (flat/dark-corrected, the slab's rows), ``open_beam_counts`` and
        ``read_noise`` (photon statistics of the long flats and darks), ``record``.
    """
    from tqdm.auto import tqdm

    from bluesky_lowdose.pipeline import flat_field, photon_statistics

    slab = cfg.slab_rows()
    exposure = cfg.exposure / ratio
    physics.rng = np.random.default_rng([cfg.seed, _tag(ratio), 2])  # scans are independent
    n = N_REFERENCE_FRAMES
    long_flats = np.stack([physics.frame(0.0, cfg.exposure, sample_offset_mm=10.0) for _ in range(n)])
    long_darks = np.stack([physics.frame(0.0, cfg.exposure, shutter_open=False) for _ in range(n)])
    darks = (
        long_darks
        if ratio == 1.0
        else np.stack([physics.frame(0.0, exposure, shutter_open=False) for _ in range(n)])
    )
    frames = np.stack([
        physics.frame(t, exposure)
        for t in tqdm(theta, desc=f"scan {exposure:g} s", leave=False, disable=not cfg.progress)
    ])  # fmt: skip
    ff = flat_field(None, darks, exposure=exposure, long_flats=long_flats, long_darks=long_darks,
                    long_exposure=cfg.exposure)  # fmt: skip
    stats = photon_statistics(long_flats, long_darks, exposure_ratio=exposure / cfg.exposure)
    return {
        "transmission": ff.correct(frames)[:, slab],
        "open_beam_counts": stats.open_beam_counts[slab],
        "read_noise": stats.read_noise,
        "record": {"exposure_s": exposure, "flat_field": ff.describe(), "photons": stats.describe()},
    }


def low_dose_scan(cfg: EvaluationConfig, ratio: float = 10.0) -> dict[str, Any]:
    """A Poisson-mode run's scan at ``1 / ratio`` of the dose with its long exposures, as ``auto``
    takes them (checks, benchmarks and tests of one case, outside :func:`run_evaluation`).

    Parameters
    ----------
    cfg : EvaluationConfig
        The run (size, angles, phantom, flux, blur, seed, slab).
    ratio : float
        Long / short exposure ratio of the low-dose scan.

    Returns
    -------
    dict
        ``theta`` (``cfg.angles`` over 180°), ``physics`` (:func:`poisson_physics`), ``full`` and
        ``low`` (:func:`poisson_scan` at full dose and at ``ratio``), ``pairs`` (``long_refs``,
        ``reference_angles``, ``long_open_beam_counts``: the full-dose frames at ``cfg.train_angles``)
        and ``counts`` (the low-dose scan's ``open_beam_counts`` and ``read_noise``): keyword
        arguments of :func:`~bluesky_lowdose.pipeline.enhance_scan`.
    """
    theta = np.linspace(0.0, 180.0, cfg.angles)
    physics = poisson_physics(cfg)
    ref = _reference_indices(theta, cfg.train_angles)
    full, low = poisson_scan(cfg, physics, theta, 1.0), poisson_scan(cfg, physics, theta, float(ratio))
    pairs = {"long_refs": full["transmission"][ref], "reference_angles": theta[ref],
             "long_open_beam_counts": full["open_beam_counts"]}  # fmt: skip
    counts = {"open_beam_counts": low["open_beam_counts"], "read_noise": low["read_noise"]}
    return {"theta": theta, "physics": physics, "full": full, "low": low, "pairs": pairs, "counts": counts}


def _poisson(cfg: EvaluationConfig, result: dict[str, Any], clock: _Clock, mapper: Any = None) -> None:
    from tqdm.auto import tqdm

    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    scored = slice(rows.start - slab.start, rows.stop - slab.start)
    t0 = time.perf_counter()
    physics = poisson_physics(cfg)
    phantom = physics.phantom
    theta = np.linspace(0.0, 180.0, cfg.angles)
    labels = _labels(phantom, rows)
    ref_idx = _reference_indices(theta, cfg.train_angles)
    clock.add("simulate", t0)

    t0 = time.perf_counter()
    full = poisson_scan(cfg, physics, theta, 1.0)
    clock.add("simulate", t0)
    t0 = time.perf_counter()
    r_o, result["reference"] = reference_volume(cfg, physics, theta, mapper=mapper)
    scorer = _Scorer(r_o, scored, labels)
    plain_kw = {"input": "transmission", "mapper": mapper}
    r_full = _plain(full["transmission"], theta, open_beam_counts=full["open_beam_counts"],
                    read_noise=full["read_noise"], **plain_kw)  # fmt: skip
    full_scores, full_sep = scorer(r_full)
    clock.add("reference", t0)
    long_refs = full["transmission"][ref_idx]
    ladder: dict[float, dict[str, float]] = {1.0: full_scores}
    result["train_angles_deg"] = [float(theta[i]) for i in ref_idx]
    result["attenuation_scale_mu"] = float(physics.mu)
    result["full_dose_scan"] = full["record"]
    result["levels"] = []
    figures: dict[str, Any] = {}
    mid = scored.start + (scored.stop - scored.start) // 2
    for ratio in tqdm(list(cfg.dose_ratios), desc="dose ratios", disable=not cfg.progress):
        tag = _tag(ratio)
        t0 = time.perf_counter()
        low = poisson_scan(cfg, physics, theta, float(ratio))
        clock.add("simulate", t0)
        t0 = time.perf_counter()
        entry, slices = _run_methods(cfg, low["transmission"], theta, long_refs, theta[ref_idx], scorer,
                                     input="transmission", seed=cfg.seed + tag,
                                     open_beam_counts=low["open_beam_counts"],
                                     read_noise=low["read_noise"],
                                     long_open_beam_counts=full["open_beam_counts"],
                                     mapper=mapper)  # fmt: skip
        clock.add("methods", t0)
        if "none" in entry["scores"]:
            ladder[float(ratio)] = entry["scores"]["none"]
        else:
            t0 = time.perf_counter()
            ladder[float(ratio)] = scorer(_plain(low["transmission"], theta,
                                                 open_beam_counts=low["open_beam_counts"],
                                                 read_noise=low["read_noise"], **plain_kw))[0]  # fmt: skip
            clock.add("dose ladder", t0)
        entry["scores"]["full-dose"] = full_scores
        entry["separation"]["full-dose"] = full_sep
        entry = {"dose_ratio": float(ratio), "scan": low["record"], **entry}
        result["levels"].append(entry)
        figures[f"{ratio:g}"] = {"slices": {"reference": r_o[mid].copy(), **slices, "full-dose": r_full[mid]}}
        entry["judge_agreement"] = judge_agreement(entry)
        _report_level(f"dose 1/{ratio:g}", entry, cfg.mode, cfg.progress)
    extra = sorted({float(r) for r in cfg.dose_ladder} - set(ladder))
    for ratio in tqdm(extra, desc="dose ladder", disable=not cfg.progress):
        t0 = time.perf_counter()
        sc = poisson_scan(cfg, physics, theta, ratio)
        clock.add("simulate", t0)
        t0 = time.perf_counter()
        ladder[ratio] = scorer(_plain(sc["transmission"], theta, open_beam_counts=sc["open_beam_counts"],
                                      read_noise=sc["read_noise"], **plain_kw))[0]  # fmt: skip
        clock.add("dose ladder", t0)
    result["dose_ladder"] = {f"{r:g}": ladder[r] for r in sorted(ladder)}
    for entry in result["levels"]:
        ratio = entry["dose_ratio"]
        entry["equivalent_dose"] = {}
        for method, sc in entry["scores"].items():
            if method == "full-dose":
                continue
            eq = {}
            for metric in ("ssim", "psnr"):
                e = _equivalent_dose(sc[metric], {r: s[metric] for r, s in ladder.items()})
                e["reduction"] = e["dose"] * ratio
                eq[metric] = e
            entry["equivalent_dose"][method] = eq
    result["_figures"] = figures


def source_digest() -> str:
    """SHA-256 over the source of the modules that compute the scores (pipeline, model, recon, metrics).

    Recorded at the start and the end of a run: a run whose code changed under it is flagged.

    Returns
    -------
    str
        Hex digest.
    """
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted(
        [*root.joinpath("pipeline").glob("*.py"), *root.joinpath("model").glob("*.py"),
         *root.joinpath("recon").glob("*.py"), root / "metrics.py", root / "physics" / "detector.py",
         root / "physics" / "phantom.py"]
    )  # fmt: skip
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_evaluation(cfg: EvaluationConfig) -> dict[str, Any]:
    """Run the protocol and return the scores.

    Parameters
    ----------
    cfg : EvaluationConfig
        What to run.

    Returns
    -------
    dict
        ``config``; ``methods`` run and ``default_method``; ``scored_slices`` and ``slab_rows``;
        ``levels`` (one entry per noise level or dose ratio: ``scores`` ``{method: {"psnr",
        "ssim"}}`` (Poisson: plus ``full-dose``), ``separation`` (phase separation per method),
        ``seconds`` per method, brief ``provenance`` per method, the paper's SSIM where it reports
        one; Poisson: ``equivalent_dose`` per method and metric); Poisson: ``dose_ladder``
        (scores of plain FBP per dose ratio); ``seconds`` per stage; ``software``;
        ``source_sha256`` (:func:`source_digest` at the start and the end).  Keys starting
        with ``_`` hold arrays for the figures (not JSON).

    Raises
    ------
    ValueError
        Inconsistent parameters (:meth:`EvaluationConfig.validate`).
    """
    cfg.validate()
    from bluesky_lowdose.pipeline import AUTO_WITH_PAIRS, N2I_OPTIONS, PROJECTION_TRAINING
    from bluesky_lowdose.recon import resolve_backend
    from bluesky_lowdose.versions import software_versions

    backend = resolve_backend()  # what enhance_scan uses by default

    clock = _Clock()
    started = time.perf_counter()
    digest = source_digest()
    rows, slab = cfg.scored_rows(), cfg.slab_rows()
    result: dict[str, Any] = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")},
        "methods": cfg.method_list(),
        "default_method": AUTO_WITH_PAIRS,
        "scored_slices": [rows.start, rows.stop],
        "slab_rows": [slab.start, slab.stop],
        "projection_training": {**PROJECTION_TRAINING, **cfg.projection_training()},
        "n2i_options": {**N2I_OPTIONS, **cfg.n2i_options()},
        "reconstruction": {"backend": backend, "filter": "parzen", "pipeline": "bluesky_lowdose.pipeline"},
        "scoring": "pipeline.score_volume inside metrics.object_mask(R_o), scored slices only",
    }
    engine = None
    if cfg.dask_scheduler:
        from bluesky_lowdose.engine import DaskEngine

        engine = DaskEngine(cfg.dask_scheduler)
    try:
        mapper = None if engine is None else engine.map
        if cfg.mode == "gaussian":
            _gaussian(cfg, result, clock, mapper)
        else:
            _poisson(cfg, result, clock, mapper)
        result["dask"] = None if engine is None else engine.report()
    finally:
        if engine is not None:
            engine.close()
    result["software"] = software_versions(backend)
    result["source_sha256"] = {"start": digest, "end": source_digest()}
    if digest != result["source_sha256"]["end"]:
        logger.warning("the pipeline's source changed during the run: its scores mix two versions")
    result["seconds"] = {k: round(v, 2) for k, v in clock.seconds.items()}
    per_method: dict[str, float] = {}
    for entry in result["levels"]:
        for m, s in entry["seconds"].items():
            per_method[m] = round(per_method.get(m, 0.0) + s, 2)
    result["seconds_per_method"] = per_method
    agreements = [e["judge_agreement"] for e in result["levels"] if e.get("judge_agreement")]
    if agreements:
        rhos = [a["spearman"] for a in agreements if a["spearman"] is not None]
        result["judge_summary"] = {
            "cases": len(agreements),
            "picked_the_best": sum(a["picked"] == a["best"] for a in agreements),
            "within_0_5_db": sum(a["regret_psnr_db"] <= 0.5 for a in agreements),
            "mean_spearman": float(np.mean(rhos)) if rhos else None,
        }
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    return result
