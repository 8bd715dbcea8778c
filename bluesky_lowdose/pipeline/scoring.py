"""Scores of a reconstruction against a reference, inside the object (one definition for all)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["score_volume"]


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
