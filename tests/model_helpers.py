"""Shared helpers of the model tests: flat/dark-corrected frames from the simulated TXM."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bluesky_lowdose.physics import TXMPhysics, make_phantom

SHORT_S = 2.0
LONG_S = 30.0


def make_physics(size: int = 48, *, seed: int = 3) -> TXMPhysics:
    """The simulated microscope with the paper's phantom."""
    return TXMPhysics(make_phantom(size, seed=0), seed=seed)


def corrected(ph: TXMPhysics, theta: float, exposure: float) -> np.ndarray:
    """A noisy frame flat/dark-corrected with the simulator's ideal flat and dark: ``(I-D)/(F-D)``."""
    frame = ph.frame(theta, exposure).astype(np.float64)
    flat = ph.detector.expected_counts(None, exposure)
    dark = ph.detector.expected_counts(None, exposure, shutter_open=False)
    return ((frame - dark) / (flat - dark)).astype(np.float32)


def pairs(ph: TXMPhysics, thetas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Short and long corrected frames at each angle, ``(n, H, W)`` float32 each."""
    short = np.stack([corrected(ph, t, SHORT_S) for t in thetas])
    long = np.stack([corrected(ph, t, LONG_S) for t in thetas])
    return short, long


def psnr(test: np.ndarray, truth: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of ``test`` against ``truth`` with a fixed peak (transmission: 1)."""
    mse = float(np.mean((np.asarray(test, np.float64) - truth) ** 2))
    return 10.0 * np.log10(peak**2 / mse)
