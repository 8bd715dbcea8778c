"""The result of one scan: its provenance, the long exposures' judgement, and the warm start's
choice between the registered model's first result and the fine-tuned one (used by
:class:`~bluesky_lowdose.pipeline.scan.ScanPipeline`)."""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .flatfield import DEFAULT_FLOOR

if TYPE_CHECKING:
    from .scan import ScanPipeline

__all__ = ["ScanResult", "blend_results", "build_result", "first_result", "judge_volumes", "keep_better"]

logger = logging.getLogger("bluesky_lowdose.pipeline.scan")  # the pipeline's messages, one logger

#: True while ``auto`` runs a candidate (in this thread): the run's judge warnings are about a
#: volume that is not the result (auto's record holds every candidate's score), so they are logged
#: at INFO, not as warnings about the scan.
AUTO_CANDIDATE: contextvars.ContextVar[bool] = contextvars.ContextVar("auto_candidate", default=False)


@dataclass
class ScanResult:
    """The outcome of :func:`enhance_scan` / :meth:`ScanPipeline.finish`.

    Attributes
    ----------
    volume : numpy.ndarray or StoredArray
        ``[z, y, x]`` reconstruction of the enhanced scan (geometry of :func:`recon.reconstruct`);
        a :class:`~bluesky_lowdose.recon.stored.StoredArray` on disk when the pipeline has a
        ``workdir`` (``numpy.asarray`` reads it).
    raw_volume : numpy.ndarray or StoredArray
        The same reconstruction without enhancement (plain ``-log``, no bias correction).
    projections : numpy.ndarray or None
        Enhanced projections (input units) when the method has a projection step and they were
        kept, else None.
    method : str
        The method run (``"auto"`` resolved).
    provenance : dict
        JSON-ready record: method, inputs, models (hashes, hyper-parameters, loss curves),
        reconstruction, log and bias correction, software versions, timings.
    models : dict
        ``"projection"``: the pair-trained :class:`~bluesky_lowdose.model.Enhancer` (or baseline);
        ``"slices"``: the Noise2Inverse :class:`~bluesky_lowdose.model.Enhancer`.
    timings : dict
        Seconds per stage.
    quality : dict or None
        The long exposures' judgement (:mod:`bluesky_lowdose.pipeline.judge`): ``enhanced`` and
        ``raw`` scores (``psnr_db``, ``ssim``, ``angles_deg``), ``held_out``, ``in_sample``,
        ``ceiling_psnr_db``, ``noise_rms``, ``worse_than_raw``; None without long exposures.
    warnings : list of str
        What the user must know about this result (also in ``provenance["warnings"]``).
    """

    volume: Any
    raw_volume: Any
    projections: np.ndarray | None
    method: str
    provenance: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Add a warning to the result and to its provenance (the caller logs it where it should)."""
        self.warnings.append(message)
        self.provenance["warnings"] = list(self.warnings)


def build_result(
    pipe: ScanPipeline,
    volume: Any,
    raw: Any,
    slice_record: dict[str, Any] | None,
    models: dict[str, Any] | None = None,
    raw_score: dict[str, Any] | None = None,
) -> ScanResult:
    """Provenance, the long exposures' judgement and the :class:`ScanResult` of ``volume``.

    Parameters
    ----------
    pipe : ScanPipeline
        The scan's pipeline (its method, inputs, models, timings and judge).
    volume, raw : numpy.ndarray or StoredArray
        The enhanced and the raw reconstruction.
    slice_record : dict or None
        What the slice step did (model hash, provenance), if it ran.
    models : dict, optional
        The models to report (default: the pipeline's).
    raw_score : dict, optional
        The judge's score of ``raw`` when it is known already (the raw volume is not read and
        projected again).

    Returns
    -------
    ScanResult
        With ``provenance``, ``quality`` and ``warnings``.
    """
    projections = np.concatenate(pipe._frames) if pipe._frames else None
    backend = pipe.backend
    prov: dict[str, Any] = {
        "method": pipe.method,
        "description": pipe.spec.description,
        "input": pipe.input,
        "n_projections": pipe.n_frames,
        "theta_range_deg": [float(min(pipe._theta)), float(max(pipe._theta))],
        "pairs": pipe.pairs_record,
        "log": None if pipe.input == "line_integrals" else {
            "floor": "half a photon of each pixel's open beam" if pipe.open_beam_counts is not None
            else f"transmission {DEFAULT_FLOOR:g}",
            "bias_correction": None if not pipe.debias else {
                "function": "bluesky_lowdose.pipeline.logbias.debias_line_integrals",
                "median_open_beam_photons": float(np.median(pipe.open_beam_counts)),
                "read_noise_photons": pipe.read_noise,
            },
        },
        "projection_step": _model_record(pipe.models.get("projection"), pipe.spec.projection,
                                         pipe.projection_model is not None),
        "slice_step": slice_record,
        "reconstruction": {"backend": backend, "filter": "parzen",
                           "center": (pipe.shape[1] - 1) / 2.0 if pipe.center is None else pipe.center,
                           "angle_subsets": pipe.subsets,
                           "subset_rule": "binomial split of each frame's photons (two half-dose scans)"
                           if pipe.spec.split == "counts" else "frame i -> subset i % K"},
        "seed": pipe.seed,
    }  # fmt: skip
    from ..versions import software_versions

    quality, warnings = judge_volumes(pipe, volume, raw, raw_score)
    prov["quality"] = quality
    prov["warnings"] = warnings
    prov["software"] = software_versions(backend)
    prov["timings"] = {k: round(v, 3) for k, v in pipe.timings.items()}
    return ScanResult(volume=volume, raw_volume=raw, projections=projections, method=pipe.method,
                      provenance=prov, models=dict(pipe.models if models is None else models),
                      timings=dict(pipe.timings), quality=quality, warnings=warnings)  # fmt: skip


def judge_volumes(
    pipe: ScanPipeline, volume: Any, raw: Any, raw_score: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """The long exposures' scores of the enhanced and raw volumes (``raw_score`` when known), and
    the warnings they call for."""
    if pipe.judge is None:
        return None, []
    t0 = time.perf_counter()
    in_sample = pipe.spec.pairs and pipe.held_out is None and pipe.projection_model is None
    enhanced = pipe.judge.score(volume, held_out=pipe.held_out)
    if volume is raw:
        plain = enhanced
    else:
        plain = raw_score if raw_score is not None else pipe.judge.score(raw, held_out=pipe.held_out)
    worse = enhanced["psnr_db"] < plain["psnr_db"] or enhanced["ssim"] < plain["ssim"]
    quality = {"enhanced": enhanced, "raw": plain, "held_out": pipe.held_out is not None,
               "in_sample": bool(in_sample), "worse_than_raw": bool(worse and pipe.method != "none"),
               **pipe.judge.describe()}  # fmt: skip
    where = None
    if quality["worse_than_raw"] and enhanced["psnr_db"] < plain["psnr_db"]:
        quality["where_worse"] = where = pipe.judge.where_worse(volume, raw, held_out=pipe.held_out)
    pipe.timings["judge_s"] = time.perf_counter() - t0
    warnings = []
    if quality["worse_than_raw"]:
        warnings.append(
            f"method {pipe.method!r} scores below the raw reconstruction against the long exposures "
            f"({enhanced['psnr_db']:.2f} dB / SSIM {enhanced['ssim']:.3f} vs {plain['psnr_db']:.2f} dB / "
            f"{plain['ssim']:.3f}){_where(where)}: compare with the raw reconstruction (kept beside it)"
        )
    if in_sample:
        warnings.append(
            f"the score of {pipe.method!r} is on the pairs it trained on (fewer than 3 pairs: none held "
            "out): optimistic"
        )
    for w in warnings:
        if AUTO_CANDIDATE.get():
            logger.info("auto candidate: %s", w)
        else:
            logger.warning(w)
    return quality, warnings


def blend_results(pipe: ScanPipeline, results: list[ScanResult], weights: list[float]) -> ScanResult:
    """One result from the weighted mean of the parts' volumes (``auto``'s blend), judged.

    Parameters
    ----------
    pipe : ScanPipeline
        The scan's pipeline: its method is the blend's name
        (:func:`~bluesky_lowdose.pipeline.methods.blend_name`), its judge and ``held_out`` judge it.
    results : list of ScanResult
        Each part's result on the whole scan (the same frames: one raw volume).
    weights : list of float
        Each part's weight.

    Returns
    -------
    ScanResult
        The blend, judged by the long exposures as a part that learns from the pairs is (on the
        pair none of its parts saw), with each part's steps and score in ``provenance["blend"]``.
        The parts' own volume files (with a work directory) are replaced by the blend's.
    """
    from ..recon.stored import StoredArray, volume_writer
    from .methods import METHODS, method_description

    name = pipe.method
    first = results[0]
    shape = tuple(first.volume.shape)
    out = Path(first.volume.path).with_name("blend.h5") if isinstance(first.volume, StoredArray) else None
    writer = volume_writer(out, shape)
    for start in range(0, shape[0], 16):
        stop = min(start + 16, shape[0])
        block = sum(
            w * np.asarray(r.volume[start:stop], np.float32) for w, r in zip(weights, results, strict=True)
        )
        writer.write(start, np.asarray(block, np.float32))
    volume = writer.close()
    for r in results:  # one volume and one raw volume remain
        for v in (r.volume, *([r.raw_volume] if r is not first else [])):
            if isinstance(v, StoredArray) and v is not first.raw_volume:
                Path(v.path).unlink(missing_ok=True)
    # a part's score of the raw volume where it was judged on the same pairs as the blend is
    held = pipe.held_out is not None
    same = [r.quality["raw"] for r in results if r.quality and r.quality["held_out"] == held]
    raw_score = same[0] if same else None
    quality, warnings = judge_volumes(pipe, volume, first.raw_volume, raw_score)
    prov = dict(first.provenance)
    step = {k: next((r.provenance.get(k) for r in results if r.provenance.get(k)), None)
            for k in ("projection_step", "slice_step")}  # fmt: skip
    # the pairs as the part that learned from them used them
    step["pairs"] = next((r.provenance.get("pairs") for r in results if METHODS[r.method].pairs),
                         first.provenance.get("pairs"))  # fmt: skip
    prov.update(method=name, description=method_description(name), quality=quality, warnings=warnings, **step,
                blend={"of": [r.method for r in results], "weights": list(weights),
                       "parts": {r.method: {"projection_step": r.provenance.get("projection_step"),
                                            "slice_step": r.provenance.get("slice_step"),
                                            "pairs": r.provenance.get("pairs"), "quality": r.quality}
                                 for r in results}})  # fmt: skip
    models: dict[str, Any] = {}
    for r in results:  # a trained network before a tuned filter where both parts have the step
        for kind, model in r.models.items():
            if kind not in models or (hasattr(model, "to_bytes") and not hasattr(models[kind], "to_bytes")):
                models[kind] = model
    stages = {k for r in results for k in r.timings}
    timings = {k: sum(r.timings.get(k, 0.0) for r in results) for k in stages}
    prov["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return ScanResult(volume=volume, raw_volume=first.raw_volume, projections=None, method=name,
                      provenance=prov, models=models, timings=timings, quality=quality,
                      warnings=warnings)  # fmt: skip


def _where(where: dict[str, Any] | None) -> str:
    """The warning's words for :meth:`~.judge.LongExposureJudge.where_worse`'s answer."""
    if not where or not where["concentrated"]:
        return ""
    rows = ", ".join(str(r) for r in sorted(where["rows"]))
    n, of = len(where["rows"]), where["object_rows"]
    return (f"; all of the excess is in {n} of {of} slices ({rows}: look at them), without which it "
            f"scores {where['psnr_db']:.2f} dB vs {where['raw_psnr_db']:.2f} dB")  # fmt: skip


def first_result(pipe: ScanPipeline, initial: Any, parts: list[Any], raw: Any, t0: float) -> ScanResult:
    """The registered denoiser's volume, judged and handed to ``on_first_result``."""
    volume, record = pipe._denoise(initial, parts, "first.h5")
    pipe.timings["first_result_s"] = time.perf_counter() - t0
    first = build_result(pipe, volume, raw, record, models={**pipe.models, "slices": initial})
    first.provenance["first_result"] = True
    if pipe.on_first_result is not None:
        try:
            pipe.on_first_result(first)
        except Exception:  # a early look: the scan's result does not depend on it
            logger.exception("on_first_result failed")
    return first


def keep_better(pipe: ScanPipeline, first: ScanResult, tuned: ScanResult) -> ScanResult:
    """The fine-tuned result, unless the long exposures score it below the raw reconstruction
    where the registered model's first result is not; the other volume's file is deleted.

    The two are not ranked by the judge's score: judged on views both were made from, it favours
    the smoother of two denoisers (at 128^3, 1/10 dose, a fine-tuned model scored 0.46 dB below the
    registered one by the long exposures and 0.33 dB above it against the truth, docs/benchmarks.md).
    """
    fq, tq = first.quality, tuned.quality
    f, t = (None if q is None else q["enhanced"] for q in (fq, tq))
    raw = None if tq is None else tq.get("raw")

    def below_raw(score: dict[str, Any] | None) -> bool:
        return score is not None and raw is not None and score["psnr_db"] < raw["psnr_db"]

    worse = below_raw(t) and f is not None and not below_raw(f)
    record = {"first": f, "fine_tuned": t, "kept": "first" if worse else "fine_tuned",
              "rule": "the fine-tuned result unless the long exposures score it below the raw reconstruction "
                      "and the first result not (two denoisers judged in view: the smoother scores higher)",
              "first_result_s": round(pipe.timings.get("first_result_s", 0.0), 3)}  # fmt: skip
    keep, drop = (first, tuned) if worse else (tuned, first)
    from ..recon.stored import StoredArray

    if isinstance(drop.volume, StoredArray) and drop.volume is not keep.volume:
        Path(drop.volume.path).unlink(missing_ok=True)
    if worse:
        msg = (f"fine-tuning the registered denoiser scored below the raw reconstruction against the long "
               f"exposures ({t['psnr_db']:.2f} vs {raw['psnr_db']:.2f} dB), the registered one did not "
               f"({f['psnr_db']:.2f} dB): its first result is kept")  # fmt: skip
        logger.warning(msg)
        keep.warn(msg)
        pipe.models["slices"] = first.models["slices"]
    keep.provenance["first_result"] = False
    keep.provenance["warm_start"] = record
    keep.models = dict(pipe.models)
    keep.timings = dict(pipe.timings)
    return keep


def _model_record(model: Any, kind: str | None, reused: bool) -> dict[str, Any] | None:
    if kind is None:
        return None
    import json

    record: dict[str, Any] = {"kind": kind, "reused_model": reused}
    prov = getattr(model, "provenance", None)
    if prov is not None:
        record["model"] = json.loads(json.dumps(prov, default=str))
    if hasattr(model, "model_hash"):
        record["model_hash"] = model.model_hash
    return record
