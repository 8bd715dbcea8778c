"""The references of a Data Exchange scan: flat/dark policy, photon statistics, long/short pairs.

:func:`projection_flat_field` applies the policy of :func:`bluesky_lowdose.pipeline.flat_field` to a
file's flats and darks (long-exposure flats scaled by the exposure ratio where the file has them);
:func:`training_pairs` matches the long-exposure references to the projections
(:func:`bluesky_lowdose.pipeline.angles.match_angles`). :func:`~bluesky_lowdose.dxchange.offline.enhance_file`
hands both to the scan pipeline.

Pure: numpy and (inside the functions) the pipeline. No bluesky, ophyd or tiled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pipeline.angles import DEFAULT_TOLERANCE, match_angles
from .io import DX_PATHS, DataExchange, DataExchangeError

if TYPE_CHECKING:
    from ..pipeline import FlatField, PhotonStatistics

__all__ = ["TrainingPairs", "projection_flat_field", "training_pairs"]

logger = logging.getLogger(__name__)


# -- flat/dark policy ------------------------------------------------------------------------------


def _flat(what: str, flats: Any, darks: Any, **long: Any) -> FlatField:
    """:func:`pipeline.flat_field` with file-specific messages."""
    from ..pipeline import flat_field

    missing = [n for n, v in (("flats", flats), ("darks", darks)) if v is None]
    if darks is None or (flats is None and long.get("long_flats") is None):
        raise DataExchangeError(f"{what}: no {' and no '.join(missing)} to flat/dark-correct with")
    try:
        return flat_field(flats, darks, **long)
    except ValueError as err:
        raise DataExchangeError(f"{what}: {err}") from None


def _long_flats_for(short: DataExchange, long: DataExchange | None) -> tuple[dict[str, Any], str | None]:
    """Long-exposure flats/darks/exposure for the short exposure's flat, and where they come from."""
    if short.data_white_long is not None and short.data_dark_long is not None and short.exposure_time_long:
        return {
            "long_flats": short.data_white_long,
            "long_darks": short.data_dark_long,
            "long_exposure": short.exposure_time_long,
        }, f"{DX_PATHS['data_white_long']} and {DX_PATHS['data_dark_long']} of FILE"
    if (
        long is not None
        and not long.corrected
        and long.data_white is not None
        and long.data_dark is not None
        and long.exposure_time
        and long.frame_shape == short.frame_shape
    ):
        return {
            "long_flats": long.data_white,
            "long_darks": long.data_dark,
            "long_exposure": long.exposure_time,
        }, f"{DX_PATHS['data_white']} and {DX_PATHS['data_dark']} of the --long file"
    return {}, None


def projection_flat_field(short: DataExchange, long: DataExchange | None = None) -> FlatField | None:
    """The flat field of the short-exposure projections under the pipeline's policy.

    Darks of the short exposure always; the flat is the long-exposure flat scaled by the
    exposure ratio when long flats and darks (``/exchange/data_white_long`` etc. of ``short``, or
    the flats/darks of the ``long`` file) and both exposure times are known, else the short
    flats (see :mod:`bluesky_lowdose.pipeline.flatfield`).

    Parameters
    ----------
    short : DataExchange
        The short-exposure file.
    long : DataExchange, optional
        A long-exposure file (its flats/darks are used when ``short`` has no long ones).

    Returns
    -------
    FlatField or None
        None when ``short`` holds corrected transmission already.

    Raises
    ------
    DataExchangeError
        No darks, no usable flats, or shapes that differ.
    """
    if short.corrected:
        return None
    long_kw, _ = _long_flats_for(short, long)
    return _flat(DX_PATHS["data"], short.data_white, short.data_dark, exposure=short.exposure_time, **long_kw)


def _long_flat_field(short: DataExchange, long: DataExchange | None) -> FlatField | None:
    """Flat field of the long-exposure references (their own flats and darks)."""
    if long is not None:
        if long.corrected:
            return None
        return _flat("long file", long.data_white, long.data_dark)
    if short.corrected:
        return None
    return _flat(DX_PATHS["reference_long"], short.data_white_long, short.data_dark_long)


def _apply(ff: FlatField | None, frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, np.float32) if ff is None else ff.correct(frames)


def _photon_statistics(
    short: DataExchange, ff: FlatField | None, long: DataExchange | None
) -> tuple[PhotonStatistics | None, dict[str, Any]]:
    """Photon statistics of the projections' open beam, from the frames that made their flat."""
    from ..pipeline import photon_statistics

    if ff is None:
        return None, {"available": False, "reason": "the input is corrected transmission: no raw flats/darks"}
    candidates: list[tuple[Any, Any, float, str]] = []
    if ff.exposure_ratio is not None:
        long_kw, source = _long_flats_for(short, long)
        candidates.append((long_kw["long_flats"], long_kw["long_darks"], ff.exposure_ratio, str(source)))
    candidates.append(
        (short.data_white, short.data_dark, 1.0, f"{DX_PATHS['data_white']} and {DX_PATHS['data_dark']}")
    )
    reasons = []
    for flats, darks, ratio, source in candidates:
        if flats is None or darks is None or len(flats) < 2 or len(darks) < 2:
            n_f, n_d = (0 if a is None else len(a) for a in (flats, darks))
            reasons.append(f"{source}: {n_f} flats and {n_d} darks (>= 2 each needed)")
            continue
        try:
            stats = photon_statistics(flats, darks, exposure_ratio=ratio)
        except ValueError as err:
            reasons.append(f"{source}: {err}")
            continue
        return stats, {"available": True, "source": source, "exposure_ratio": ratio, **stats.describe()}
    return None, {
        "available": False,
        "reason": "; ".join(reasons),
        "consequence": "transmission floor 1e-6 and no low-count -log bias correction",
    }


# -- training pairs --------------------------------------------------------------------------------


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
    short_flat: FlatField | None = None,
    reference_angles: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TrainingPairs:
    """Pair short- and long-exposure frames at common angles, corrected under the pipeline's policy.

    With ``long`` given, its ``/exchange/data`` frames are the long references and the short
    partners are the projections of ``short`` at the same angles (within ``tolerance``, see
    :func:`bluesky_lowdose.pipeline.match_angles`); otherwise ``short`` must carry the
    ``bluesky_lowdose`` extension (``/exchange/reference_long`` etc.), whose short partners are
    ``/exchange/reference_short`` (or, without it, the projections at the reference angles).
    The long frames are corrected with their own flats and darks, the short ones with the flat
    field of the projections (:func:`projection_flat_field`).

    Parameters
    ----------
    short : DataExchange
        The short-exposure file.
    long : DataExchange, optional
        A long-exposure file (its own flats/darks).
    short_transmission : numpy.ndarray, optional
        ``short.data`` already corrected (saves correcting it twice).
    short_flat : FlatField, optional
        The flat field of the short exposure (default: :func:`projection_flat_field`).
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
        long_raw, long_theta, source = long.data, long.theta, "long file"
        short_raw = None
    else:
        if not short.has_references:
            raise DataExchangeError(
                "the file holds no /exchange/reference_long (long-exposure references): give the "
                "long-exposure file with --long, export the run with exposure='both', or use a method "
                "without reference pairs (--method n2i)"
            )
        assert short.reference_long is not None and short.reference_theta is not None
        long_raw, long_theta, source = short.reference_long, short.reference_theta, "extension"
        short_raw = short.reference_short
    long_flat = _long_flat_field(short, long)
    if short_flat is None and (short_raw is not None or short_transmission is None):
        short_flat = projection_flat_field(short, long)
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
    if short_raw is not None:
        pairs_short = _apply(short_flat, short_raw[keep])
        pairs_long = _apply(long_flat, long_raw[keep])
        theta = long_theta[keep]
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
        if short_transmission is not None:
            pairs_short = np.asarray(short_transmission, np.float32)[idx[found]]
        else:
            pairs_short = _apply(short_flat, short.data[idx[found]])
        pairs_long = _apply(long_flat, long_raw[keep[found]])
        theta = long_theta[keep[found]]
    return TrainingPairs(
        short=np.asarray(pairs_short, np.float32),
        long=np.asarray(pairs_long, np.float32),
        theta=np.asarray(theta, np.float64),
        source=source,
        unmatched=unmatched,
    )
