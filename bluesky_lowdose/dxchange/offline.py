"""Offline enhancement of Data Exchange files through the package's one scan pipeline.

:func:`enhance_file` reads the files, applies the flat/dark policy of
:func:`bluesky_lowdose.pipeline.flat_field`, measures the photon statistics
(:func:`bluesky_lowdose.pipeline.photon_statistics`), matches the long-exposure references to the
projections (:mod:`bluesky_lowdose.dxchange.pairs`) and hands everything to
:func:`bluesky_lowdose.pipeline.enhance_scan`; it only adds file handling and the file's
provenance.

Pure: numpy, h5py and (inside the functions) the pipeline, :mod:`bluesky_lowdose.recon` and
:mod:`bluesky_lowdose.model` (Keras).  No bluesky, ophyd or tiled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pipeline.angles import DEFAULT_TOLERANCE
from .io import DX_PATHS, DataExchange, DataExchangeError, ThetaUnits
from .pairs import (
    TrainingPairs,
    _apply,
    _long_flat_field,
    _long_flats_for,
    _photon_statistics,
    projection_flat_field,
    training_pairs,
)
from .read import read_dxfile
from .write import write_enhanced

if TYPE_CHECKING:
    from ..pipeline import ScanResult

__all__ = ["EnhanceResult", "enhance_file"]

logger = logging.getLogger(__name__)


# -- enhance_file ----------------------------------------------------------------------------------


@dataclass
class EnhanceResult:
    """What :func:`enhance_file` did.

    Attributes
    ----------
    path : pathlib.Path
        The output Data Exchange file.
    shape : tuple of int
        Shape of ``/exchange/data`` (the enhanced projections, or the corrected input for methods
        without a projection step).
    volume_shape : tuple of int
        Shape of the enhanced reconstruction (``/exchange_1/data``).
    method : str
        The method run (``"auto"`` resolved).
    projections_enhanced : bool
        Whether ``/exchange/data`` holds enhanced projections.
    reference_theta : list of float
        Angles of the training (or comparison) pairs, degrees.
    mse_short, mse_enhanced : list of float
        Mean squared error against the long-exposure reference at those angles, of the corrected
        short frame and of its enhanced version (at training angles: optimistic); empty for
        methods without a projection step.
    provenance : dict
        The record written to ``/process/bluesky_lowdose/provenance``.
    scan : ScanResult
        The pipeline's result (volumes, enhanced projections, models, its provenance).
    """

    path: Path
    shape: tuple[int, ...]
    volume_shape: tuple[int, ...]
    method: str
    projections_enhanced: bool
    reference_theta: list[float]
    mse_short: list[float]
    mse_enhanced: list[float]
    provenance: dict[str, Any]
    scan: ScanResult = field(repr=False)


def _describe_file(path: Path, dx: DataExchange) -> dict[str, Any]:
    data = np.ascontiguousarray(dx.data)
    return {
        "file": str(path.resolve()),
        "run_uid": dx.run_uid,
        "sample_name": dx.sample_name,
        "exposure_time_s": dx.exposure_time,
        "exposure_time_long_s": dx.exposure_time_long,
        "corrected": dx.corrected,
        "data_shape": list(data.shape),
        "data_dtype": data.dtype.str,
        "data_sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "notes": list(dx.notes),
    }


def _check_writable(path: Path, what: str, suffix: str | None = None) -> None:
    """Fail now, not after training, when ``path`` cannot be written."""
    if suffix is not None and path.suffix != suffix:
        raise ValueError(f"{what} {path} must end with {suffix}")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{what} {path}: directory {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise PermissionError(f"{what} {path}: cannot write in {parent} ({err.strerror or err})") from None


def _json_ready(value: Any) -> Any:
    """Numpy scalars/arrays to Python, non-finite floats to None (the file's JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def enhance_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "auto",
    long: str | os.PathLike[str] | None = None,
    reference_angles: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    model_in: str | os.PathLike[str] | None = None,
    save_model: str | os.PathLike[str] | None = None,
    save_slice_model: str | os.PathLike[str] | None = None,
    n2i_options: dict[str, Any] | None = None,
    theta_units: ThetaUnits | None = None,
    progress: bool = True,
    overwrite: bool = False,
    train_options: dict[str, Any] | None = None,
    allow_external: bool = False,
    mapper: Any = None,
    auto_budget_s: float | None = None,
) -> EnhanceResult:
    """Enhance and reconstruct a Data Exchange scan with :func:`bluesky_lowdose.pipeline.enhance_scan`.

    Reads ``path`` (and ``long``), corrects the projections under the pipeline's flat/dark policy
    (:func:`projection_flat_field`), measures the open beam's photon statistics when the raw
    flats/darks allow it, pairs the long-exposure references with the projections (methods that
    use pairs), runs the pipeline with ``input="transmission"`` and writes ``out`` with
    :func:`~bluesky_lowdose.dxchange.write_enhanced`: ``/exchange/data`` = the enhanced
    **transmission** (methods with a projection step) or the corrected, not enhanced, input
    (slice-only methods such as ``n2i``), the enhanced reconstruction in ``/exchange_1/data``,
    the corrected long references and the provenance.  The output location (and the model paths)
    are checked before anything is trained.

    Parameters
    ----------
    path : str or os.PathLike
        Short-exposure Data Exchange file (with flats/darks, or corrected transmission).
    out : str or os.PathLike
        Output file.
    method : str
        ``"auto"`` or a key of :data:`bluesky_lowdose.pipeline.METHODS`; ``"auto"`` is
        :data:`~bluesky_lowdose.pipeline.AUTO_WITH_PAIRS` with references (or ``model_in``),
        else :data:`~bluesky_lowdose.pipeline.AUTO_WITHOUT_PAIRS`.
    long : str or os.PathLike, optional
        Long-exposure Data Exchange file (projections at a few angles, its own flats/darks).
        Methods with pairs need it unless ``path`` carries ``/exchange/reference_long``
        (``export_run(..., exposure="both")``) or ``model_in`` is given.
    reference_angles : sequence of float, optional
        Use these reference angles only (degrees).
    tolerance : float
        Angle matching tolerance in degrees.
    model : {"unet", "paper"}, optional
        Projection network (default: :data:`~bluesky_lowdose.pipeline.PROJECTION_TRAINING`).
    epochs : int, optional
        Maximum training epochs of the projection network (default: ``PROJECTION_TRAINING``).
    seed : int
        Seeds every learned step.
    model_in : str or os.PathLike, optional
        A saved projection enhancer (``.keras``) to use instead of training (CNN methods).
    save_model : str or os.PathLike, optional
        Where to save the projection enhancer (``.keras``; CNN methods).
    save_slice_model : str or os.PathLike, optional
        Where to save the Noise2Inverse slice denoiser (``.keras``; ``n2i``, ``hybrid``).
    n2i_options : dict, optional
        Overrides of :data:`bluesky_lowdose.pipeline.N2I_OPTIONS` (``steps``, ``crop``, ...).
    theta_units : {"degrees", "radians"}, optional
        Units of angles stored without a ``units`` attribute.
    allow_external : bool
        Follow HDF5 external links and external storage in the input files (see
        :func:`~bluesky_lowdose.dxchange.read.read_dxfile`).
    mapper : callable, optional
        Runs the reconstruction slabs, e.g. :meth:`bluesky_lowdose.engine.DaskEngine.map`.
    auto_budget_s : float, optional
        ``method="auto"``: seconds its candidates may take together (default
        :data:`~bluesky_lowdose.pipeline.auto.AUTO_BUDGET_S`); the winner's whole scan should end by
        1.2 x it (:data:`~bluesky_lowdose.pipeline.choice.WHOLE_SCAN_SHARE`).
    progress : bool
        Progress bars.
    overwrite : bool
        Replace ``out`` if it exists.
    train_options : dict, optional
        Further overrides of the projection training (e.g. ``patch_size``, ``stride``).

    Returns
    -------
    EnhanceResult
        The output path, shapes, method, reference-angle MSEs, provenance and the pipeline's result.

    Raises
    ------
    DataExchangeError
        Bad or inconsistent input files, no common reference angle, a method that needs reference
        pairs without any.
    ValueError
        Unknown method, options that do not fit the method, bad model paths.
    OSError
        ``out`` exists (``FileExistsError``) and ``overwrite`` is false, or a path cannot be
        written (checked before training).
    """
    from .. import pipeline

    path, out = Path(path), Path(out)
    inputs = {path.resolve(), *([Path(long).resolve()] if long is not None else [])}
    if out.resolve() in inputs:
        raise ValueError(f"--out {out} would overwrite an input file")
    if out.exists() and not out.is_dir() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    _check_writable(out, "--out")
    if method != "auto" and method not in pipeline.METHODS:
        raise ValueError(f"unknown method {method!r}; choose 'auto' or one of {', '.join(pipeline.METHODS)}")

    opts = {"theta_units": theta_units, "require_flat_dark": True, "allow_external": allow_external}
    short_dx = read_dxfile(path, **opts)
    long_dx = read_dxfile(long, **opts) if long is not None else None
    if long_dx is not None and long_dx.frame_shape != short_dx.frame_shape:
        raise DataExchangeError(
            f"long-exposure frames are {long_dx.frame_shape} but short-exposure frames are "
            f"{short_dx.frame_shape}"
        )
    if (
        long_dx is not None
        and long_dx.exposure_time is not None
        and short_dx.exposure_time is not None
        and long_dx.exposure_time <= short_dx.exposure_time
    ):
        logger.warning(
            "the --long file's exposure (%g s) is not longer than the short file's (%g s)",
            long_dx.exposure_time,
            short_dx.exposure_time,
        )

    # the method, and what it needs
    has_refs = long_dx is not None or short_dx.has_references
    try:
        resolved = pipeline.resolve_method(method, has_refs or model_in is not None)
    except ValueError:
        raise DataExchangeError(
            f"method {method!r} needs long/short reference pairs: {path} holds no "
            f"{DX_PATHS['reference_long']} and no --long file (or --model-in) was given; without "
            f"references use --method auto, n2i or bm3d-slices"
        ) from None
    spec = pipeline.AUTO_SPEC if resolved == "auto" else pipeline.METHODS[resolved]
    if model_in is not None and spec.projection != "cnn":
        raise ValueError(f"--model-in is a projection CNN; method {resolved!r} has no CNN projection step")
    if save_model is not None:
        if spec.projection != "cnn":
            raise ValueError(f"--save-model saves the projection CNN; method {resolved!r} has none")
        _check_writable(Path(save_model), "--save-model", ".keras")
    if save_slice_model is not None:
        if spec.slices != "n2i":
            raise ValueError(
                f"--save-slice-model saves the Noise2Inverse slice denoiser; method {resolved!r} has none"
            )
        _check_writable(Path(save_slice_model), "--save-slice-model", ".keras")

    if not np.any(short_dx.data):
        raise ValueError(f"{DX_PATHS['data']} of {path} is all zeros: no data to reconstruct")
    # flat/dark policy and photon statistics (bluesky_lowdose.pipeline.flatfield)
    flat = projection_flat_field(short_dx, long_dx)
    transmission = _apply(flat, short_dx.data)
    stats, stats_record = _photon_statistics(short_dx, flat, long_dx)
    pairs: TrainingPairs | None = None
    if has_refs:  # pair methods learn from them; every method is judged by them (pipeline.judge)
        try:
            pairs = training_pairs(
                short_dx,
                long_dx,
                short_transmission=transmission,
                short_flat=flat,
                reference_angles=reference_angles,
                tolerance=tolerance,
            )
        except (ValueError, DataExchangeError) as exc:
            if spec.pairs or resolved == "auto":
                raise
            logger.warning("the long exposures cannot judge this scan: %s", exc)
    projection_model = None
    if model_in is not None:
        from .. import model as bm

        projection_model = bm.load(model_in)
    overrides = {
        **({"model": model} if model is not None else {}),
        **({"epochs": epochs} if epochs is not None else {}),
        **(train_options or {}),
    }
    scan = pipeline.enhance_scan(
        transmission,
        short_dx.theta,
        short_refs=None if pairs is None else pairs.short,
        long_refs=None if pairs is None else pairs.long,
        reference_angles=None if pairs is None else pairs.theta,
        input="transmission",
        method=resolved,
        open_beam_counts=None if stats is None else stats.open_beam_counts,
        read_noise=0.0 if stats is None else stats.read_noise,
        projection_model=projection_model,
        projection_training=overrides,
        n2i_options=n2i_options,
        keep_projections=True,
        tolerance=tolerance,
        progress=progress,
        seed=seed,
        mapper=mapper,
        auto_budget_s=auto_budget_s,
    )
    if flat is not None and flat.warnings:  # said in the output and in the provenance
        scan.warnings[:0] = list(flat.warnings)
        scan.provenance["warnings"] = list(scan.warnings)
    unused_budget = auto_budget_s is not None and "auto" not in scan.provenance
    ignored = _ignored_options(scan.method, overrides, n2i_options, model_in, auto_budget=unused_budget)
    if ignored:
        scan.warn(ignored)
    proj_model = scan.models.get("projection")
    slice_model = scan.models.get("slices")
    if save_model is not None and proj_model is not None:
        proj_model.save(save_model)
    if save_slice_model is not None and slice_model is not None:
        slice_model.save(save_slice_model)

    mse_short: list[float] = []
    mse_enhanced: list[float] = []
    if pairs is not None and proj_model is not None:
        pairs_enhanced = proj_model.enhance(pairs.short)
        for s, e, lg in zip(pairs.short, pairs_enhanced, pairs.long, strict=True):
            mse_short.append(float(np.mean((s.astype(np.float64) - lg) ** 2)))
            mse_enhanced.append(float(np.mean((e.astype(np.float64) - lg) ** 2)))
        # the streaming enhancer's rule (it marks the run partial): here a warning, in the output
        # and the provenance
        _, _, problem = pipeline.scoring.reference_pair_check(pairs.short, pairs.long, pairs_enhanced)
        if problem and problem not in scan.warnings:
            scan.warn(problem)
    enhanced = scan.projections is not None
    data = scan.projections if enhanced else transmission
    data_text = (
        "flat/dark-corrected transmission (I - D)/(F - D), enhanced by the projection step of "
        f"{scan.method!r}"
        if enhanced
        else f"flat/dark-corrected transmission (I - D)/(F - D), NOT enhanced: method {scan.method!r} has "
        "no projection step (its result is the reconstruction)"
    )
    long_flat = None
    if pairs is not None:
        long_flat = _long_flat_field(short_dx, long_dx)
    provenance: dict[str, Any] = {
        "kind": "bluesky_lowdose.dxchange.enhance_file",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": scan.method,
        "method_requested": method,
        "warnings": list(scan.warnings),
        "output": {
            DX_PATHS["data"]: data_text,
            DX_PATHS["reconstruction"]: (
                f"reconstruction enhanced by {scan.method!r} (pipeline.reconstruction below), attenuation "
                "per pixel, z:y:x"
            ),
            DX_PATHS["reference_long"]: None if pairs is None else "corrected long-exposure references",
        },
        "input": _describe_file(path, short_dx),
        "long_input": None if long_dx is None or long is None else _describe_file(Path(long), long_dx),
        "correction": {
            "function": "bluesky_lowdose.pipeline.flat_field",
            "projections": None if flat is None else {
                **flat.describe(),
                "long_flats": _long_flats_for(short_dx, long_dx)[1] if flat.exposure_ratio else None,
            },
            "long_references": None if long_flat is None else long_flat.describe(),
            "note": "darks of each exposure's own exposure time; the flat with the most photons "
            "(long flats scaled by the exposure ratio when available)",
        },
        "photon_statistics": stats_record,
        "reference": None
        if pairs is None
        else {
            "source": pairs.source,
            "theta_deg": pairs.theta.tolist(),
            "unmatched_long_theta_deg": pairs.unmatched,
            "tolerance_deg": tolerance,
            "mse_short": mse_short,
            "mse_enhanced": mse_enhanced,
            "mse_note": (
                "against the long-exposure frames at the reference angles; these are the training "
                "pairs unless model_in was given, so the numbers are optimistic"
            ),
        },
        "projection_training": None
        if spec.projection != "cnn" or model_in is not None
        else {**pipeline.PROJECTION_TRAINING, **overrides},
        "model_in": None if model_in is None else str(Path(model_in).resolve()),
        "saved_model": None if save_model is None else str(Path(save_model).resolve()),
        "saved_slice_model": None if save_slice_model is None else str(Path(save_slice_model).resolve()),
        "enhancer": None if proj_model is None else getattr(proj_model, "provenance", None),
        "slice_denoiser": None if slice_model is None else slice_model.provenance,
        "pipeline": scan.provenance,
    }  # fmt: skip
    provenance = _json_ready(provenance)
    written = write_enhanced(
        out,
        data,
        short_dx.theta,
        provenance,
        exposure_time=short_dx.exposure_time,
        reference_long=None if pairs is None else pairs.long,
        reference_theta=None if pairs is None else pairs.theta,
        sample_name=short_dx.sample_name,
        run_uid=short_dx.run_uid,
        metadata={"source": short_dx.metadata},
        reconstruction=scan.volume,
        data_description=None if enhanced else "projections, flat/dark-corrected, not enhanced",
        overwrite=overwrite,
    )
    return EnhanceResult(
        path=written,
        shape=tuple(np.shape(data)),
        volume_shape=tuple(scan.volume.shape),
        method=scan.method,
        projections_enhanced=enhanced,
        reference_theta=[] if pairs is None else pairs.theta.tolist(),
        mse_short=mse_short,
        mse_enhanced=mse_enhanced,
        provenance=provenance,
        scan=scan,
    )


def _ignored_options(
    method: str,
    training: dict[str, Any],
    n2i_options: dict[str, Any] | None,
    model_in: Any,
    auto_budget: bool = False,
) -> str | None:
    """A warning naming the options the method that ran did not use (None: all were used);
    ``auto_budget``: a budget was given and no candidates ran."""  # fmt: skip
    from ..pipeline import method_spec

    spec = method_spec(method)
    names: list[str] = []
    why: list[str] = []
    if training and (spec.projection != "cnn" or model_in is not None):
        names += [f"--{k.replace('_', '-')}" for k in training]
        why.append("--model-in is applied as it is" if spec.projection == "cnn"
                   else f"method {method!r} trains no projection CNN")  # fmt: skip
    if n2i_options and spec.slices != "n2i":
        names += [f"--n2i-{k}" for k in n2i_options]
        why.append(f"method {method!r} has no Noise2Inverse step")
    if auto_budget:
        names.append("--auto-budget")
        why.append(f"method {method!r} ran without choosing among candidates")
    if not names:
        return None
    return f"ignored: {', '.join(names)} ({'; '.join(why)})"
