"""Scores of a reconstruction against a reference, inside the object (one definition for all)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["reference_pair_check", "score_volume"]


def score_volume(volume: Any, reference: Any, *, mask: Any = None) -> dict[str, float]:
    """PSNR and SSIM of ``volume`` against ``reference``, over the voxels inside the object.

    Parameters
    ----------
    volume, reference : array_like
        ``[z, y, x]`` volumes (or ``[y, x]`` slices) of one shape.
    mask : array_like of bool, optional
        The voxels to score; default :func:`bluesky_lowdose.metrics.object_mask` of the
        reference (the object and two pixels around it, not the air).

    Returns
    -------
    dict
        ``{"psnr": dB, "ssim": float}`` (data range of the whole reference, see
        :mod:`bluesky_lowdose.metrics`).
    """
    from ..metrics import compare, object_mask

    ref = np.asarray(reference)
    m = object_mask(ref) if mask is None else np.asarray(mask, bool)
    return compare(np.asarray(volume), ref, mask=m)


def reference_pair_check(short: Any, long: Any, enhanced: Any) -> tuple[float, float, str | None]:
    """PSNR of the short and of the enhanced reference frames against the long ones, and a verdict.

    One rule for the streaming enhancer (which marks its run partial) and ``enhance`` (which
    warns in its output and provenance): a projection model that does not improve even the pairs
    it was trained on is undertrained or diverged.

    Parameters
    ----------
    short, long, enhanced : array_like
        ``(k, rows, cols)`` short-exposure references, their long partners, and the short ones
        after the projection model.

    Returns
    -------
    tuple
        ``(psnr_short_db, psnr_enhanced_db, message)``; ``message`` is None when the model improves
        the pairs.
    """
    from ..metrics import psnr

    long_ = np.asarray(long)
    raw_db = float(psnr(np.asarray(short), long_))
    enh_db = float(psnr(np.asarray(enhanced), long_))
    if enh_db > raw_db:
        return raw_db, enh_db, None
    return (
        raw_db,
        enh_db,
        (
            "the model does not improve even its own reference pairs "
            f"({enh_db:.1f} dB vs {raw_db:.1f} dB raw): undertrained or diverged"
        ),
    )
