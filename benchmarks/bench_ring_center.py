"""Why the 1/10-dose Poisson slices of the evaluation have a ring at the centre (docs/evaluation.md).

Builds the evaluation's Poisson scan (128^3, 181 angles, 1/10 dose) for the central detector row and
prints, per column near the rotation axis, the corrected line integrals' error against the
noise-free ones, averaged over every angle (an error common to all angles is what filtered
back-projection turns into a ring about the axis): with the darks measured as the protocol
measures them, and with the exact dark level; and the photons the axis pixels receive.

Run: ``python benchmarks/bench_ring_center.py`` (a few seconds).
"""

from __future__ import annotations

import numpy as np

from bluesky_lowdose.evaluation import protocol
from bluesky_lowdose.evaluation.config import N_REFERENCE_FRAMES, EvaluationConfig
from bluesky_lowdose.physics import DetectorModel, TXMPhysics
from bluesky_lowdose.pipeline import flat_field


def main() -> None:
    cfg = EvaluationConfig(mode="poisson", size=128, angles=181)
    phantom = protocol._make_phantom(cfg)
    det = DetectorModel((cfg.size, cfg.size), flux=cfg.flux)
    physics = TXMPhysics(phantom, det, seed=3)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    row, n = cfg.size // 2, N_REFERENCE_FRAMES
    exposure = cfg.exposure / 10.0
    long_flats = np.stack([physics.frame(0.0, cfg.exposure, sample_offset_mm=10.0) for _ in range(n)])
    long_darks = np.stack([physics.frame(0.0, cfg.exposure, shutter_open=False) for _ in range(n)])
    darks = np.stack([physics.frame(0.0, exposure, shutter_open=False) for _ in range(n)])
    frames = np.stack([physics.frame(t, exposure) for t in theta])
    ideal = np.stack([physics.ideal_frame(t, exposure) for t in theta])
    truth = (physics.mu * phantom.project_many(theta))[:, row]
    dark_level = det.bias + det.dark_rate * exposure
    long_dark_level = det.bias + det.dark_rate * cfg.exposure

    def column_error(d: np.ndarray, ld: np.ndarray) -> np.ndarray:
        ff = flat_field(None, d, exposure=exposure, long_flats=long_flats, long_darks=ld,
                        long_exposure=cfg.exposure)  # fmt: skip
        return (-np.log(ff.correct(frames)[:, row]) - truth).mean(axis=0)

    measured = column_error(darks, long_darks)
    exact = column_error(np.full(darks.shape, dark_level), np.full(long_darks.shape, long_dark_level))
    c = cfg.size // 2
    cols = slice(c - 8, c + 8)
    np.set_printoptions(precision=2, suppress=True, linewidth=120)
    print(f"photons above the dark at the axis (columns {c - 4}..{c + 3}), mean over angles:",
          (ideal[:, row, c - 4 : c + 4] - dark_level).mean(axis=0))  # fmt: skip
    print(f"angle-averaged line-integral error, columns {cols.start}..{cols.stop - 1}:")
    print("  darks measured (10 frames):", measured[cols])
    print("  exact dark level:          ", exact[cols])
    wide = slice(c - 20, c + 20)
    print(f"  column-to-column sd over {wide.start}..{wide.stop - 1}: measured {measured[wide].std():.2f}, "
          f"exact {exact[wide].std():.2f}")  # fmt: skip
    dark_error = np.median(darks, axis=0)[row] - dark_level
    print(f"dark estimate error on the row (ADU), sd: {dark_error.std():.2f}")


if __name__ == "__main__":
    main()
