"""BM3D on reconstructed slices, its sigma tuned on the angle subsets (no reference needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bm3d_slices"]

#: Multiples of the measured noise level tried when tuning sigma.
FACTORS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
#: Slices used for tuning.
TUNING_SLICES = 6


def _inside(shape: tuple[int, ...]) -> np.ndarray:
    w = shape[-1]
    c = np.arange(w) - (w - 1) / 2.0
    return c[None, :] ** 2 + c[:, None] ** 2 <= (0.9 * w / 2.0) ** 2


def bm3d_slices(
    parts: list[np.ndarray], full: np.ndarray, *, progress: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Denoise every slice of ``full`` with BM3D, sigma chosen from two subsets' reconstructions.

    The noise of the two subsets is independent, so the sigma for which BM3D of one subset's
    slice is closest to the other subset's slice is the one closest to the clean slice (the
    Noise2Noise argument); the full reconstruction has half the noise variance of a subset's.

    Parameters
    ----------
    parts : list of numpy.ndarray
        At least two subset reconstructions ``(Z, Y, X)``.
    full : numpy.ndarray
        The reconstruction of the whole scan.
    progress : bool
        Progress bar over slices.

    Returns
    -------
    tuple
        The denoised volume and a provenance record (sigma, factor, tuning losses).
    """
    import bm3d
    from tqdm.auto import tqdm

    if len(parts) < 2:
        raise ValueError("BM3D on slices is tuned on two angle subsets: give at least two")
    a, b = parts[0], parts[1]
    inside = _inside(a.shape)
    sigma_half = float(np.std((a - b)[:, inside]) / np.sqrt(2.0))
    sigma_full = sigma_half / np.sqrt(len(parts))
    spread = full[:, inside].std(axis=1)
    tune = np.sort(np.argsort(spread)[::-1][: min(TUNING_SLICES, len(full))])
    losses = []
    for f in FACTORS:
        err = 0.0
        for z in tune:
            den = np.asarray(bm3d.bm3d(a[z], sigma_psd=f * sigma_half))
            err += float(np.mean((den - b[z])[inside] ** 2))
        losses.append(err / len(tune))
    best = FACTORS[int(np.argmin(losses))]
    out = np.empty_like(full)
    for z in tqdm(range(len(full)), desc="bm3d slices", unit="slice", disable=not progress, leave=False):
        out[z] = bm3d.bm3d(full[z], sigma_psd=best * sigma_full)
    record = {
        "kind": "bm3d",
        "sigma": best * sigma_full,
        "factor": best,
        "noise_sigma_full": sigma_full,
        "tuning": "sigma minimising ||BM3D(subset A) - subset B||^2 over the most structured slices",
        "tuning_losses": dict(zip([str(f) for f in FACTORS], losses, strict=True)),
    }
    return out.astype(np.float32), record
