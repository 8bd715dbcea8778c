"""Offline enhancement of Data Exchange files: match reference angles, correct, train, enhance.

Pure: numpy, h5py and (inside the functions) :mod:`bluesky_lowdose.recon` and
:mod:`bluesky_lowdose.model` (Keras).  No bluesky, ophyd or tiled.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .io import DataExchange, DataExchangeError, ThetaUnits, read_dxfile, write_enhanced

__all__ = [
    "DEFAULT_TOLERANCE",
    "EnhanceResult",
    "TrainingPairs",
    "angle_difference",
    "enhance_file",
    "match_angles",
    "training_pairs",
]

logger = logging.getLogger(__name__)

#: Default tolerance (degrees) when matching reference angles to projection angles.
DEFAULT_TOLERANCE = 0.05


def angle_difference(a: Any, b: Any) -> np.ndarray:
    """Signed difference ``a - b`` in degrees, wrapped into ``[-180, 180)``.

    Parameters
    ----------
    a, b : array_like
        Angles in degrees (broadcast together).

    Returns
    -------
    numpy.ndarray
        The wrapped difference.
    """
    return (np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0


def match_angles(wanted: Any, available: Any, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """For each wanted angle, the index of the nearest available angle within ``tolerance``.

    Angles are compared modulo 360 degrees (0 and 360 match; 0 and 180 do not: those are
    mirrored projections).

    Parameters
    ----------
    wanted, available : array_like
        1-D angles in degrees.
    tolerance : float
        Largest accepted difference in degrees.

    Returns
    -------
    numpy.ndarray
        An int array of ``len(wanted)``: index into ``available``, or -1 where nothing lies within
        ``tolerance``.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 degrees, got {tolerance}")
    w = np.atleast_1d(np.asarray(wanted, np.float64))
    a = np.atleast_1d(np.asarray(available, np.float64))
    if a.size == 0:
        return np.full(w.shape, -1, dtype=np.int64)
    dist = np.abs(angle_difference(w[:, None], a[None, :]))
    nearest = np.argmin(dist, axis=1)
    ok = dist[np.arange(len(w)), nearest] <= tolerance
    return np.where(ok, nearest, -1).astype(np.int64)


def _correct(frames: np.ndarray, flats: np.ndarray | None, darks: np.ndarray | None, what: str) -> np.ndarray:
    from ..recon import flat_dark_correct

    if flats is None or darks is None:
        missing = [n for n, v in (("flats", flats), ("darks", darks)) if v is None]
        raise DataExchangeError(f"{what}: no {' and no '.join(missing)} to flat/dark-correct with")
    return flat_dark_correct(frames, flats, darks)


def _transmission(dx: DataExchange) -> np.ndarray:
    """``/exchange/data`` as transmission (corrected with its own flats/darks unless already)."""
    if dx.corrected:
        return np.asarray(dx.data, np.float32)
    return _correct(dx.data, dx.data_white, dx.data_dark, "/exchange/data")


@dataclass
class TrainingPairs:
    """Flat/dark-corrected short/long frames at the same angles.

    Attributes
    ----------
    short, long : numpy.ndarray
        ``(m, rows, cols)`` float32 transmission.
    theta : numpy.ndarray
        ``(m,)`` angles of the long frames, degrees.
    source : str
        ``"extension"`` (``/exchange/reference_*`` of one file) or ``"long file"``.
    unmatched : list of float
        Long-exposure angles that had no short partner (skipped).
    """

    short: np.ndarray
    long: np.ndarray
    theta: np.ndarray
    source: str
    unmatched: list[float] = field(default_factory=list)


def training_pairs(
    short: DataExchange,
    long: DataExchange | None = None,
    *,
    short_transmission: np.ndarray | None = None,
    reference_angles: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TrainingPairs:
    """Pair short- and long-exposure frames at common angles, each corrected with its own flats/darks.

    With ``long`` given, its ``/exchange/data`` frames are the long references and the short
    partners are the projections of ``short`` at the same angles (within ``tolerance``);
    otherwise ``short`` must carry the ``bluesky_lowdose`` extension
    (``/exchange/reference_long`` etc.), whose short partners are ``/exchange/reference_short``
    (or, without it, the projections at the reference angles).

    Parameters
    ----------
    short : DataExchange
        The short-exposure file.
    long : DataExchange, optional
        A long-exposure file (its own flats/darks).
    short_transmission : numpy.ndarray, optional
        ``short.data`` already corrected (saves correcting it twice).
    reference_angles : sequence of float, optional
        Use only these reference angles (degrees; each must match one within ``tolerance``).
    tolerance : float
        Angle tolerance in degrees.

    Returns
    -------
    TrainingPairs
        The pairs.

    Raises
    ------
    DataExchangeError
        No common angle, a requested angle that is not a reference angle, missing flats/darks
        or mismatched frame shapes.
    """
    if long is not None:
        if long.frame_shape != short.frame_shape:
            raise DataExchangeError(
                f"long-exposure frames are {long.frame_shape} but short-exposure frames are "
                f"{short.frame_shape}"
            )
        long_frames = (
            long.data if long.corrected else _correct(long.data, long.data_white, long.data_dark, "long file")
        )
        long_theta = long.theta
        source = "long file"
        short_frames = None
    else:
        if not short.has_references:
            raise DataExchangeError(
                "the file holds no /exchange/reference_long (long-exposure references): give the "
                "long-exposure file with --long, or export the run with exposure='both'"
            )
        assert short.reference_long is not None and short.reference_theta is not None
        long_theta = short.reference_theta
        source = "extension"
        if short.corrected:
            long_frames = short.reference_long
        else:
            long_frames = _correct(
                short.reference_long, short.data_white_long, short.data_dark_long, "/exchange/reference_long"
            )
        short_frames = None
        if short.reference_short is not None:
            short_frames = (
                short.reference_short
                if short.corrected
                else _correct(
                    short.reference_short, short.data_white, short.data_dark, "/exchange/reference_short"
                )
            )
    long_theta = np.asarray(long_theta, np.float64)
    keep = np.arange(len(long_theta))
    if reference_angles is not None:
        requested = np.asarray(list(reference_angles), np.float64)
        idx = match_angles(requested, long_theta, tolerance)
        if np.any(idx < 0):
            raise DataExchangeError(
                f"reference angle(s) {requested[idx < 0].tolist()} not among the long-exposure angles "
                f"{long_theta.tolist()} (tolerance {tolerance} deg)"
            )
        keep = np.unique(idx)
    if short_frames is not None:
        pairs_short, pairs_long, theta = short_frames[keep], long_frames[keep], long_theta[keep]
        unmatched: list[float] = []
    else:
        idx = match_angles(long_theta[keep], short.theta, tolerance)
        found = idx >= 0
        unmatched = long_theta[keep][~found].tolist()
        if not np.any(found):
            raise DataExchangeError(
                f"none of the long-exposure angles {long_theta[keep].tolist()} is within {tolerance} deg of "
                f"a projection angle (projections span {short.theta.min():g} .. {short.theta.max():g} deg, "
                f"{len(short.theta)} angles): no training pairs"
            )
        if unmatched:
            logger.warning("long-exposure angles %s have no short-exposure projection; skipped", unmatched)
        trans = short_transmission if short_transmission is not None else _transmission(short)
        pairs_short = trans[idx[found]]
        pairs_long = long_frames[keep[found]]
        theta = long_theta[keep[found]]
    return TrainingPairs(
        short=np.asarray(pairs_short, np.float32),
        long=np.asarray(pairs_long, np.float32),
        theta=np.asarray(theta, np.float64),
        source=source,
        unmatched=unmatched,
    )


@dataclass
class EnhanceResult:
    """What :func:`enhance_file` did.

    Attributes
    ----------
    path : pathlib.Path
        The enhanced Data Exchange file.
    shape : tuple of int
        Shape of the enhanced stack.
    reference_theta : list of float
        Angles of the training (or comparison) pairs, degrees.
    mse_short, mse_enhanced : list of float
        Mean squared error against the long-exposure reference at those angles, of the corrected
        short frame and of its enhanced version (at training angles: optimistic).
    provenance : dict
        The record written to ``/process/bluesky_lowdose/provenance``.
    """

    path: Path
    shape: tuple[int, ...]
    reference_theta: list[float]
    mse_short: list[float]
    mse_enhanced: list[float]
    provenance: dict[str, Any]


def _describe_file(path: Path, dx: DataExchange) -> dict[str, Any]:
    data = np.ascontiguousarray(dx.data)
    return {
        "file": str(path.resolve()),
        "run_uid": dx.run_uid,
        "sample_name": dx.sample_name,
        "exposure_time_s": dx.exposure_time,
        "corrected": dx.corrected,
        "data_shape": list(data.shape),
        "data_dtype": data.dtype.str,
        "data_sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "notes": list(dx.notes),
    }


def enhance_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    long: str | os.PathLike[str] | None = None,
    reference_angles: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    model: str = "unet",
    epochs: int = 40,
    seed: int = 0,
    model_in: str | os.PathLike[str] | None = None,
    save_model: str | os.PathLike[str] | None = None,
    theta_units: ThetaUnits | None = None,
    progress: bool = True,
    overwrite: bool = False,
    train_options: dict[str, Any] | None = None,
) -> EnhanceResult:
    """Enhance every projection of a Data Exchange file with a CNN trained on its reference pairs.

    Reads ``path`` (and ``long``), flat/dark-corrects each exposure with its own flats and darks,
    trains an enhancer on the matched pairs (or loads ``model_in``), enhances the whole
    short-exposure stack and writes ``out`` with :func:`~bluesky_lowdose.dxchange.write_enhanced`:
    ``/exchange/data`` = enhanced **transmission** (no flats/darks, ``corrected=True``), the
    corrected long references for comparison, and the provenance.

    Parameters
    ----------
    path : str or os.PathLike
        Short-exposure Data Exchange file (with flats/darks, or corrected transmission).
    out : str or os.PathLike
        Output file.
    long : str or os.PathLike, optional
        Long-exposure Data Exchange file (projections at a few angles, its own flats/darks);
        without it ``path`` must carry ``/exchange/reference_long`` (``export_run(...,
        exposure="both")``) unless ``model_in`` is given.
    reference_angles : sequence of float, optional
        Train on these reference angles only (degrees).
    tolerance : float
        Angle matching tolerance in degrees.
    model : {"unet", "paper"}
        Network to train.
    epochs : int
        Maximum training epochs.
    seed : int
        Training seed.
    model_in : str or os.PathLike, optional
        A saved enhancer (``.keras``) to use instead of training.
    save_model : str or os.PathLike, optional
        Where to save the trained enhancer.
    theta_units : {"degrees", "radians"}, optional
        Units of angles stored without a ``units`` attribute.
    progress : bool
        Progress bars for training and enhancement.
    overwrite : bool
        Replace ``out`` if it exists.
    train_options : dict, optional
        Further keyword arguments of :func:`bluesky_lowdose.model.train` (e.g. ``patch_size``).

    Returns
    -------
    EnhanceResult
        The output path, shapes, reference-angle MSEs and the provenance.

    Raises
    ------
    DataExchangeError
        Bad or inconsistent input files, no common reference angle.
    FileExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    from .. import model as bm

    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if out.resolve() in {path.resolve(), Path(long).resolve() if long is not None else None}:
        raise ValueError(f"--out {out} would overwrite an input file")
    short_dx = read_dxfile(path, theta_units=theta_units, require_flat_dark=True)
    long_dx = read_dxfile(long, theta_units=theta_units, require_flat_dark=True) if long is not None else None
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
    transmission = _transmission(short_dx)
    pairs: TrainingPairs | None = None
    if model_in is None or long_dx is not None or short_dx.has_references:
        pairs = training_pairs(
            short_dx,
            long_dx,
            short_transmission=transmission,
            reference_angles=reference_angles,
            tolerance=tolerance,
        )
    if model_in is not None:
        enhancer = bm.load(model_in)
    else:
        assert pairs is not None
        enhancer = bm.train(
            pairs.short,
            pairs.long,
            model=model,
            epochs=epochs,
            seed=seed,
            progress=progress,
            **(train_options or {}),
        )
    if save_model is not None:
        enhancer.save(save_model)
    enhanced = enhancer.enhance(transmission, progress=progress)
    mse_short: list[float] = []
    mse_enhanced: list[float] = []
    if pairs is not None:
        pairs_enhanced = enhancer.enhance(pairs.short)
        for s, e, lg in zip(pairs.short, pairs_enhanced, pairs.long, strict=True):
            mse_short.append(float(np.mean((s.astype(np.float64) - lg) ** 2)))
            mse_enhanced.append(float(np.mean((e.astype(np.float64) - lg) ** 2)))
    provenance: dict[str, Any] = {
        "kind": "bluesky_lowdose.dxchange.enhance_file",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": "flat/dark-corrected transmission (I - D)/(F - D), CNN-enhanced",
        "input": _describe_file(path, short_dx),
        "long_input": None if long_dx is None or long is None else _describe_file(Path(long), long_dx),
        "correction": {
            "function": "bluesky_lowdose.recon.flat_dark_correct",
            "average": "median",
            "note": "each exposure corrected with flats/darks of its own exposure time",
        },
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
        "model_in": None if model_in is None else str(Path(model_in).resolve()),
        "saved_model": None if save_model is None else str(Path(save_model).resolve()),
        "enhancer": enhancer.provenance,
    }
    written = write_enhanced(
        out,
        enhanced,
        short_dx.theta,
        provenance,
        exposure_time=short_dx.exposure_time,
        reference_long=None if pairs is None else pairs.long,
        reference_theta=None if pairs is None else pairs.theta,
        sample_name=short_dx.sample_name,
        run_uid=short_dx.run_uid,
        metadata={"source": short_dx.metadata},
        overwrite=overwrite,
    )
    return EnhanceResult(
        path=written,
        shape=tuple(enhanced.shape),
        reference_theta=[] if pairs is None else pairs.theta.tolist(),
        mse_short=mse_short,
        mse_enhanced=mse_enhanced,
        provenance=provenance,
    )
