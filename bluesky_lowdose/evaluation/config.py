"""What an evaluation runs: :class:`EvaluationConfig` and the protocol's constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_METHODS",
    "DOSE_LADDER",
    "N_REFERENCE_FRAMES",
    "OPTIONAL_METHODS",
    "PAPER_SSIM",
    "EvaluationConfig",
]


#: SSIM of R_n and R_e against R_o reported by Yang et al. (2018), Fig. 4, by noise level.
PAPER_SSIM: dict[float, tuple[float, float]] = {
    0.05: (0.39, 0.88),
    0.10: (0.09, 0.83),
    0.20: (0.03, 0.75),
    0.30: (0.02, 0.71),
}

#: Methods run by default (keys of :data:`bluesky_lowdose.pipeline.METHODS`), in report order.
DEFAULT_METHODS: tuple[str, ...] = ("none", "paper", "n2i", "hybrid", "bm3d", "bm3d-slices")
#: Further methods that can be selected.
OPTIONAL_METHODS: tuple[str, ...] = ("median", "tv")

#: Flats and darks per scan (Poisson mode).
N_REFERENCE_FRAMES = 10
#: Default dose ratios of the extra plain scans (Poisson mode, besides 1 and the levels).
DOSE_LADDER = (1.5, 2.0, 3.0, 5.0)


@dataclass
class EvaluationConfig:
    """Parameters of one evaluation run.

    Parameters
    ----------
    mode : {"gaussian", "poisson"}
        Additive Gaussian noise on normalised projections (the paper) or photon noise from the
        TXM simulator.
    size : int
        Phantom edge and detector width (paper: 512).
    angles : int
        Projections over [0, 180] degrees inclusive (paper: 721).
    noise_levels : sequence of float
        Gaussian mode: noise standard deviations as fractions of the maximum clean normalised
        projection (0.05 is 5 %).
    dose_ratios : sequence of float
        Poisson mode: long / short exposure ratios.
    exposure : float
        Poisson mode: the long (full-dose) exposure in seconds.
    dose_ladder : sequence of float
        Poisson mode: dose ratios of extra scans reconstructed without enhancement, for the
        equivalent dose of each method (1 and the levels are always included).
    train_angles : sequence of float
        Angles (degrees) of the reference pairs; the nearest scan angles are used.
    methods : sequence of str
        Keys of :data:`bluesky_lowdose.pipeline.METHODS` (``"auto"``: the default method with
        pairs, :data:`bluesky_lowdose.pipeline.AUTO_WITH_PAIRS`).
    epochs : int, optional
        Projection-CNN epochs; None: :data:`bluesky_lowdose.pipeline.PROJECTION_TRAINING`.
    model : str, optional
        Projection-CNN architecture; None: the pipeline's default.
    n2i_steps : int, optional
        Noise2Inverse optimisation steps; None: :data:`bluesky_lowdose.pipeline.N2I_OPTIONS`.
    slices : int or None
        Number of central slices scored; None: ``size // 8``; 0: all.
    margin : int
        Detector rows run on each side of the scored slices (not scored).
    seed : int
        Seeds the phantom, the noise and every learned step.
    progress : bool
        Show tqdm progress bars and a line per level.
    extra : dict
        Options for the benchmarks: ``"n2i_options"``, overrides of
        :data:`bluesky_lowdose.pipeline.N2I_OPTIONS` (``base_filters``, ``context``, ``seed``, ...).
    dask_scheduler : str, optional
        ``tcp://HOST:PORT`` (or ``"local"``): every method's reconstruction slabs and learned
        inference steps run as tasks on that Dask cluster (:class:`bluesky_lowdose.engine.DaskEngine`).
    phantom : {"spheres", "textured"}
        The paper's cube of spheres, or a fibre-reinforced porous matrix with cracks
        (:func:`bluesky_lowdose.physics.make_textured_phantom`).
    flux : float
        Poisson mode: detected photons per open-beam pixel per second (at the brightest part of
        the beam); with ``exposure`` 1 s, the quanta per pixel at full dose (300 by default;
        beamlines: hundreds to thousands).
    psf_sigma : float
        Poisson mode: detector blur (Gaussian sigma, pixels) of the signal and of its noise.
    dead_pixels : int
        Poisson mode: pixels that detect no light.
    reference : {"detector", "sample"}
        Poisson mode: ``R_o``, the volume every method is scored against, is the reconstruction of
        the noise-free projections as the detector records them (``"detector"``: its blur included,
        as a perfect long exposure gives them and as the paper defines ``R_o``) or of the sample's
        exact line integrals (``"sample"``: also scores the resolution the detector blur took away,
        which no denoiser restores). The same without ``psf_sigma``.
    training_seeds : int
        Runs of every learned method (a projection CNN or Noise2Inverse) with different training
        seeds on the same data: their spread (``seed_spread``) is in the report, the tables and
        the bar figure (min-max). The scores and slices shown are the first seed's.
    judge_views : {"held-out", "in-view"}
        How the long exposures judge the methods (``judge_agreement``): ``"held-out"`` as
        ``auto`` does (every method run again without the frames on the long exposures' views);
        ``"in-view"``: the results on every frame, projected at angles they were made from (biased
        towards smoothing; kept for comparison).
    """

    mode: str = "gaussian"
    size: int = 128
    angles: int = 181
    noise_levels: Sequence[float] = (0.05, 0.10, 0.20, 0.30)
    dose_ratios: Sequence[float] = (10.0,)
    exposure: float = 1.0
    dose_ladder: Sequence[float] = DOSE_LADDER
    train_angles: Sequence[float] = (0.0, 45.0, 90.0)
    methods: Sequence[str] = DEFAULT_METHODS
    epochs: int | None = None
    model: str | None = None
    n2i_steps: int | None = None
    slices: int | None = None
    margin: int = 8
    seed: int = 0
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    dask_scheduler: str | None = None
    phantom: str = "spheres"
    flux: float = 300.0
    psf_sigma: float = 0.0
    dead_pixels: int = 0
    judge_views: str = "held-out"
    training_seeds: int = 1
    reference: str = "detector"

    def validate(self) -> None:
        """Raise ValueError for inconsistent parameters (nothing heavy is imported)."""
        from bluesky_lowdose.pipeline import METHODS

        if self.mode not in ("gaussian", "poisson"):
            raise ValueError(f"mode must be 'gaussian' or 'poisson', got {self.mode!r}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        if self.angles < 8:
            raise ValueError(f"angles must be >= 8, got {self.angles}")
        if self.mode == "gaussian" and (not self.noise_levels or min(self.noise_levels) <= 0):
            raise ValueError("noise levels must be positive fractions (0.05 is 5 %)")
        if self.mode == "poisson" and (not self.dose_ratios or min(self.dose_ratios) <= 1):
            raise ValueError("dose ratios must be > 1 (long / short exposure)")
        if any(not r > 1 for r in self.dose_ladder):
            raise ValueError("dose ladder ratios must be > 1")
        if not self.exposure > 0:
            raise ValueError("exposure must be positive")
        if not self.train_angles or not all(0 <= a <= 180 for a in self.train_angles):
            raise ValueError("give at least one training angle in [0, 180] degrees")
        if not self.methods:
            raise ValueError("give at least one method")
        unknown = [m for m in self.methods if m != "auto" and m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose 'auto' or among {', '.join(METHODS)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.n2i_steps is not None and self.n2i_steps < 1:
            raise ValueError(f"n2i steps must be >= 1, got {self.n2i_steps}")
        if self.slices is not None and not 0 <= self.slices <= self.size:
            raise ValueError(f"slices must lie in [0, size], got {self.slices}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 rows, got {self.margin}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.phantom not in ("spheres", "textured"):
            raise ValueError(f"phantom must be 'spheres' or 'textured', got {self.phantom!r}")
        if not (np.isfinite(self.flux) and self.flux > 0):
            raise ValueError(
                f"flux must be a positive number of photons per pixel and second, got {self.flux}"
            )
        if not (np.isfinite(self.psf_sigma) and self.psf_sigma >= 0):
            raise ValueError(f"psf_sigma must be >= 0 pixels, got {self.psf_sigma}")
        if not (isinstance(self.training_seeds, int) and self.training_seeds >= 1):
            raise ValueError(f"training_seeds must be an int >= 1, got {self.training_seeds!r}")
        if self.reference not in ("detector", "sample"):
            raise ValueError(f"reference must be 'detector' or 'sample', got {self.reference!r}")
        if self.judge_views not in ("held-out", "in-view"):
            raise ValueError(f"judge_views must be 'held-out' or 'in-view', got {self.judge_views!r}")
        if not 0 <= self.dead_pixels < self.size * self.size:
            raise ValueError(f"dead_pixels must lie in [0, size^2), got {self.dead_pixels}")
        if self.slab_rows().stop - self.slab_rows().start < 8:
            raise ValueError("the slab (scored slices and margins) must be at least 8 detector rows")

    def method_list(self) -> list[str]:
        """The methods to run, ``"auto"`` resolved, without duplicates, in the given order.

        Returns
        -------
        list of str
            Keys of :data:`bluesky_lowdose.pipeline.METHODS`.
        """
        from bluesky_lowdose.pipeline import AUTO_WITH_PAIRS

        out: list[str] = []
        for m in self.methods:
            m = AUTO_WITH_PAIRS if m == "auto" else m
            if m not in out:
                out.append(m)
        return out

    def scored_rows(self) -> slice:
        """Return the detector rows (= volume slices) that are scored.

        Returns
        -------
        slice
            Rows of the projections and slices of the volume.
        """
        k = self.size // 8 if self.slices is None else self.slices
        if k == 0 or k >= self.size:
            return slice(0, self.size)
        start = (self.size - k) // 2
        return slice(start, start + k)

    def slab_rows(self) -> slice:
        """Return the detector rows every method runs on: the scored rows and the margins.

        Returns
        -------
        slice
            Rows of the full projections.
        """
        rows = self.scored_rows()
        return slice(max(rows.start - self.margin, 0), min(rows.stop + self.margin, self.size))

    def projection_training(self) -> dict[str, Any]:
        """Overrides of :data:`bluesky_lowdose.pipeline.PROJECTION_TRAINING` for this run.

        Returns
        -------
        dict
            ``epochs``/``model`` when set; ``patch_size`` when the slab is thinner than the
            default patch (32 rows).
        """
        out: dict[str, Any] = {}
        if self.epochs is not None:
            out["epochs"] = int(self.epochs)
        if self.model is not None:
            out["model"] = self.model
        rows = self.slab_rows().stop - self.slab_rows().start
        if rows < 32:
            out["patch_size"] = rows // 8 * 8
        return out

    def n2i_options(self) -> dict[str, Any]:
        """Overrides of :data:`bluesky_lowdose.pipeline.N2I_OPTIONS` for this run.

        Returns
        -------
        dict
            ``steps`` when set, and ``extra["n2i_options"]`` (e.g. ``base_filters``, ``context``,
            ``seed``: the benchmarks' variants).
        """
        out = dict(self.extra.get("n2i_options", {}))
        if self.n2i_steps is not None:
            out["steps"] = int(self.n2i_steps)
        return out
