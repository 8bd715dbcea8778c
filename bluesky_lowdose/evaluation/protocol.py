"""The synthetic evaluation protocol of Yang et al. (2018), Gaussian and Poisson variants (pure).

Gaussian mode (the paper's protocol)
    1. The cube-of-spheres phantom is projected exactly at ``angles`` equally spaced angles over
       [0, 180] degrees inclusive: line integrals ``P``.  ``P_o = P / max(P)`` are the clean,
       normalised projections (values in [0, 1]).
    2. ``P_n = P_o + N(0, sigma^2)`` with ``sigma = level * max(P_o) = level``: a noise level of
       10 % is a standard deviation of 10 % of the brightest clean projection value.  One noise
       realisation per level (seeded).
    3. A CNN is trained per level on the pairs ``(P_n, P_o)`` at the training angles only (the
       "long" references are the clean projections, as in the paper) and enhances every
       projection: ``P_e``.  Median, TV and BM3D baselines are tuned on the same pairs
       (:func:`bluesky_lowdose.model.baseline`) and applied the same way.
    4. Every projection set is scaled back to line integrals and reconstructed identically
       (:func:`bluesky_lowdose.recon.reconstruct`, FBP with a Parzen filter): ``R_o``, ``R_n``,
       ``R_e``, ``R_median``, ``R_tv``, ``R_bm3d``.
    5. PSNR and SSIM of each against ``R_o`` (:mod:`bluesky_lowdose.metrics`; data range of
       ``R_o``; SSIM per slice averaged).

Poisson mode (physically realistic)
    The TXM simulator (:class:`bluesky_lowdose.physics.TXMPhysics`) records a full-dose scan at the
    long exposure and a low-dose scan at ``long / ratio``, each with its own flats and darks.
    The CNN and the baselines are trained/tuned on short/long pairs of flat/dark-corrected
    transmission at the training angles and enhance the low-dose transmission, which is then
    ``-log``-ed and reconstructed (transmission floored at half a detected photon of the open beam,
    so a pixel that caught no photon does not become an outlier).  The reference ``R_o`` is the
    noise-free reconstruction; the full-dose reconstruction ``R_full`` is scored too: a dose
    reduction by ``ratio`` holds when ``R_e`` scores at least as well as ``R_full``.

Scored slices: by default the central ``size // 8`` slices (through the middle of the cube),
where every method is reconstructed; BM3D, the slow baseline, denoises only the projection
rows of those slices plus a margin of 8 rows on each side (its output on the scored rows is then
that of a full-frame run up to edge effects in the margin).  ``slices=0`` scores every slice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PAPER_SSIM",
    "EvaluationConfig",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

#: SSIM of R_n and R_e against R_o reported by Yang et al. (2018), Fig. 4, by noise level.
PAPER_SSIM: dict[float, tuple[float, float]] = {
    0.05: (0.39, 0.88),
    0.10: (0.09, 0.83),
    0.20: (0.03, 0.75),
    0.30: (0.02, 0.71),
}

#: Rows of context around the scored rows given to BM3D.
BM3D_MARGIN = 8


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
    train_angles : sequence of sequence of float
        One CNN per set of training angles (degrees; the nearest scan angles are used).
    model : str
        Network architecture for :func:`bluesky_lowdose.model.train`.
    epochs : int
        Training epochs (no early stopping).
    train_stride : int
        Step between training patches (smaller: more patches per epoch).
    patch_size : int or None
        Training patch edge; None: 64, or ``size // 2`` rounded down to a multiple of 8 for small
        phantoms.
    baselines : sequence of str
        Classical denoisers to compare (``"median"``, ``"tv"``, ``"bm3d"``).
    slices : int or None
        Number of central slices scored; None: ``size // 8``; 0: all.
    seed : int
        Seeds the phantom, the noise and the training.
    progress : bool
        Show tqdm progress bars.
    """

    mode: str = "gaussian"
    size: int = 128
    angles: int = 181
    noise_levels: Sequence[float] = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)
    dose_ratios: Sequence[float] = (10.0, 15.0)
    exposure: float = 1.0
    train_angles: Sequence[Sequence[float]] = ((0.0, 45.0, 90.0),)
    model: str = "unet"
    epochs: int = 25
    train_stride: int = 8
    patch_size: int | None = None
    baselines: Sequence[str] = ("median", "tv", "bm3d")
    slices: int | None = None
    seed: int = 0
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError for inconsistent parameters."""
        if self.mode not in ("gaussian", "poisson"):
            raise ValueError(f"mode must be 'gaussian' or 'poisson', got {self.mode!r}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        if self.angles < 8:
            raise ValueError(f"angles must be >= 8, got {self.angles}")
        if self.mode == "gaussian" and (not self.noise_levels or min(self.noise_levels) <= 0):
            raise ValueError("noise levels must be positive fractions (0.05 is 5 %)")
        if self.mode == "poisson" and (not self.dose_ratios or min(self.dose_ratios) < 1):
            raise ValueError("dose ratios must be >= 1")
        if self.exposure <= 0:
            raise ValueError("exposure must be positive")
        if not self.train_angles or any(len(a) < 1 for a in self.train_angles):
            raise ValueError("give at least one set of training angles")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.train_stride < 1:
            raise ValueError("train_stride must be >= 1")
        unknown = set(self.baselines) - {"median", "tv", "bm3d"}
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}")
        if self.slices is not None and not 0 <= self.slices <= self.size:
            raise ValueError(f"slices must lie in [0, size], got {self.slices}")

    def training_patch(self) -> int:
        """Return the patch edge used for training.

        Returns
        -------
        int
            Pixels.
        """
        if self.patch_size is not None:
            return self.patch_size
        return int(min(64, max(8, (self.size // 2) // 8 * 8)))

    def scored_rows(self) -> slice:
        """Return the detector rows (= volume slices) that are reconstructed and scored.

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


def cnn_label(angles: Sequence[float]) -> str:
    """Return the method name of the CNN trained at ``angles``.

    Parameters
    ----------
    angles : sequence of float
        Training angles.

    Returns
    -------
    str
        ``cnn-2`` for two angles, etc.
    """
    return f"cnn-{len(angles)}"


def _nearest_indices(theta: np.ndarray, angles: Sequence[float]) -> list[int]:
    idx = sorted({int(np.argmin(np.abs(theta - a))) for a in angles})
    return idx


def _tag(value: float) -> int:
    """Integer seed component of a noise level or dose ratio (runs are reproducible per level)."""
    return round(1000 * float(value))


def _labels(phantom: Any, rows: slice) -> np.ndarray:
    """Phase of each voxel of the scored slices: 0 background, 1 cube, 2 spheres."""
    vol = phantom.voxelize()[rows]
    lab = np.zeros(vol.shape, dtype=np.int8)
    lab[np.isclose(vol, phantom.cube_value)] = 1
    lab[np.isclose(vol, phantom.sphere_value)] = 2
    return lab


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, key: str, t0: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0


def _score(
    volumes: dict[str, np.ndarray], reference: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    from bluesky_lowdose.metrics import compare, phase_histograms

    scores = {}
    separation = {}
    for name, vol in volumes.items():
        scores[name] = compare(vol, reference)
        separation[name] = phase_histograms(vol, labels, bins=64)["separation"]
    return scores, separation


def _keep_for_figures(
    volumes: dict[str, np.ndarray], store: dict[str, Any], key: str, labels: np.ndarray
) -> None:
    mid = next(iter(volumes.values())).shape[0] // 2
    store[key] = {
        "slices": {name: vol[mid].copy() for name, vol in volumes.items()},
        "values": {name: vol[labels >= 0].ravel()[::7].copy() for name, vol in volumes.items()},
    }


def _report_level(name: str, scores: dict[str, dict[str, float]], progress: bool) -> None:
    text = ", ".join(f"{m} {s['ssim']:.3f}/{s['psnr']:.1f} dB" for m, s in scores.items())
    logger.info("%s: SSIM/PSNR %s", name, text)
    if progress:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"{name}: SSIM/PSNR {text}", file=sys.stderr)


def _denoise_all(
    short_refs: np.ndarray,
    long_refs: np.ndarray,
    frames: np.ndarray,
    rows: slice,
    cfg: EvaluationConfig,
    clock: _Clock,
    post: Callable[[np.ndarray], np.ndarray],
    info: dict[str, Any],
    seed: int,
) -> dict[str, np.ndarray]:
    """Enhance ``frames`` with each CNN and baseline; return line integrals of the scored rows."""
    from bluesky_lowdose.model import baseline, train

    out: dict[str, np.ndarray] = {}
    theta_refs = info["train_sets"]
    for label, idx in theta_refs.items():
        t0 = time.perf_counter()
        enhancer = train(
            short_refs[idx],
            long_refs[idx],
            model=cfg.model,
            epochs=cfg.epochs,
            stride=min(cfg.train_stride, cfg.training_patch() // 2),
            patch_size=cfg.training_patch(),
            patience=None,
            seed=seed,
            progress=cfg.progress,
        )
        clock.add(f"train {label}", t0)
        t0 = time.perf_counter()
        enhanced = enhancer.enhance(frames, progress=cfg.progress)
        clock.add(f"enhance {label}", t0)
        out[label] = post(enhanced[:, rows, :])
    # baselines are tuned on the pairs of the largest training set
    idx = max(theta_refs.values(), key=len)
    bm3d_rows = slice(max(rows.start - BM3D_MARGIN, 0), min(rows.stop + BM3D_MARGIN, frames.shape[1]))
    for name in cfg.baselines:
        t0 = time.perf_counter()
        if name == "bm3d":
            sub = slice(rows.start - bm3d_rows.start, rows.stop - bm3d_rows.start)
            b = baseline(name, short_refs[idx][:, bm3d_rows], long_refs[idx][:, bm3d_rows])
            den = b.enhance(frames[:, bm3d_rows, :], progress=cfg.progress)[:, sub, :]
        else:
            b = baseline(name, short_refs[idx], long_refs[idx])
            den = b.enhance(frames, progress=cfg.progress)[:, rows, :]
        info.setdefault("baseline_parameters", {})[name] = b.provenance.get("value")
        clock.add(f"baseline {name}", t0)
        out[name] = post(den)
    return out


def _reconstruct_all(
    sinos: dict[str, np.ndarray], theta: np.ndarray, clock: _Clock, progress: bool
) -> dict[str, np.ndarray]:
    from bluesky_lowdose.recon import reconstruct

    vols = {}
    t0 = time.perf_counter()
    for name, p in sinos.items():
        vols[name] = reconstruct(p, theta, progress=False)
    clock.add("reconstruct", t0)
    return vols


def _gaussian(cfg: EvaluationConfig, result: dict[str, Any], clock: _Clock) -> None:
    from tqdm.auto import tqdm

    from bluesky_lowdose.physics import make_phantom
    from bluesky_lowdose.recon import reconstruct

    rows = cfg.scored_rows()
    t0 = time.perf_counter()
    phantom = make_phantom(cfg.size, seed=cfg.seed)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    p_clean = phantom.project_many(theta)
    scale = float(p_clean.max())
    p_o = p_clean / scale
    labels = _labels(phantom, rows)
    clock.add("simulate", t0)
    t0 = time.perf_counter()
    r_o = reconstruct(p_clean[:, rows, :], theta)
    clock.add("reconstruct", t0)
    train_sets = {cnn_label(a): _nearest_indices(theta, a) for a in cfg.train_angles}
    result["train_angles_deg"] = {k: [float(theta[i]) for i in v] for k, v in train_sets.items()}
    result["line_integral_scale"] = scale
    result["levels"] = []
    figures: dict[str, Any] = {}
    levels = list(cfg.noise_levels)
    for level in tqdm(levels, desc="noise levels", disable=not cfg.progress):
        tag = _tag(level)
        rng = np.random.default_rng([cfg.seed, tag, 1])
        t0 = time.perf_counter()
        p_n = (p_o + level * rng.standard_normal(p_o.shape)).astype(np.float32)
        clock.add("simulate", t0)
        info: dict[str, Any] = {"train_sets": train_sets}
        sinos = {"noisy": p_n[:, rows, :] * scale}
        sinos.update(_denoise_all(p_n, p_o, p_n, rows, cfg, clock, lambda x: x * scale, info, cfg.seed + tag))
        vols = _reconstruct_all(sinos, theta, clock, cfg.progress)
        t0 = time.perf_counter()
        scores, sep = _score(vols, r_o, labels)
        clock.add("metrics", t0)
        entry = {
            "level": float(level),
            "scores": scores,
            "separation": sep,
            "baseline_parameters": info.get("baseline_parameters", {}),
        }
        paper = PAPER_SSIM.get(round(float(level), 2))
        if paper is not None:
            entry["paper_ssim"] = {"noisy": paper[0], "enhanced": paper[1]}
        result["levels"].append(entry)
        _keep_for_figures({"reference": r_o, **vols}, figures, f"{level:g}", labels)
        _report_level(f"noise {100 * level:g} %", scores, cfg.progress)
    result["_figures"] = figures
    result["_labels"] = labels


def _poisson(cfg: EvaluationConfig, result: dict[str, Any], clock: _Clock) -> None:
    from tqdm.auto import tqdm

    from bluesky_lowdose.physics import TXMPhysics, make_phantom
    from bluesky_lowdose.recon import flat_dark_correct, reconstruct, transmission_to_line_integrals

    rows = cfg.scored_rows()
    t0 = time.perf_counter()
    phantom = make_phantom(cfg.size, seed=cfg.seed)
    physics = TXMPhysics(phantom, seed=cfg.seed + 2)
    theta = np.linspace(0.0, 180.0, cfg.angles)
    p_clean = phantom.project_many(theta)
    labels = _labels(phantom, rows)
    n_ref = 10

    def scan(exposure: float, tag: int) -> tuple[np.ndarray, float]:
        """Flat/dark-corrected transmission and its floor: half a detected photon of the open beam.

        Flats cost the sample no dose, so they are always taken at the long exposure and scaled
        to the scan's exposure (with darks at the scan's exposure): short-exposure flats would
        imprint their own photon noise on every projection (stripes, i.e. rings).
        """
        physics.rng = np.random.default_rng([cfg.seed, tag, 2])  # each scan independent of the others
        flats = np.stack([physics.frame(0.0, cfg.exposure, sample_offset_mm=10.0) for _ in range(n_ref)])
        darks_long = np.stack([physics.frame(0.0, cfg.exposure, shutter_open=False) for _ in range(n_ref)])
        darks = np.stack([physics.frame(0.0, exposure, shutter_open=False) for _ in range(n_ref)])
        frames = np.stack(
            [
                physics.frame(t, exposure)
                for t in tqdm(theta, desc=f"scan {exposure:g} s", leave=False, disable=not cfg.progress)
            ]
        )
        beam = (np.median(flats, axis=0) - np.median(darks_long, axis=0)) * (exposure / cfg.exposure)
        flat = beam + np.median(darks, axis=0)
        floor = 0.5 * physics.detector.gain / max(float(np.median(beam)), 1.0)
        return flat_dark_correct(frames, flat, darks, floor=floor), floor

    t_long, floor_long = scan(cfg.exposure, 0)
    clock.add("simulate", t0)
    t0 = time.perf_counter()
    r_o = reconstruct(physics.mu * p_clean[:, rows, :], theta)
    r_full = reconstruct(transmission_to_line_integrals(t_long[:, rows, :], floor=floor_long), theta)
    clock.add("reconstruct", t0)
    train_sets = {cnn_label(a): _nearest_indices(theta, a) for a in cfg.train_angles}
    result["train_angles_deg"] = {k: [float(theta[i]) for i in v] for k, v in train_sets.items()}
    result["attenuation_scale_mu"] = float(physics.mu)
    result["levels"] = []
    figures: dict[str, Any] = {}
    for ratio in tqdm(list(cfg.dose_ratios), desc="dose ratios", disable=not cfg.progress):
        tag = _tag(ratio)
        t0 = time.perf_counter()
        t_short, floor = scan(cfg.exposure / ratio, tag)
        clock.add("simulate", t0)
        info: dict[str, Any] = {"train_sets": train_sets}

        def to_li(t: np.ndarray, floor: float = floor) -> np.ndarray:
            return transmission_to_line_integrals(t, floor=floor)

        sinos = {"noisy": to_li(t_short[:, rows, :])}
        sinos.update(_denoise_all(t_short, t_long, t_short, rows, cfg, clock, to_li, info, cfg.seed + tag))
        vols = _reconstruct_all(sinos, theta, clock, cfg.progress)
        vols["full-dose"] = r_full
        t0 = time.perf_counter()
        scores, sep = _score(vols, r_o, labels)
        clock.add("metrics", t0)
        result["levels"].append(
            {
                "dose_ratio": float(ratio),
                "short_exposure_s": cfg.exposure / ratio,
                "transmission_floor": floor,
                "scores": scores,
                "separation": sep,
                "baseline_parameters": info.get("baseline_parameters", {}),
            }
        )
        _keep_for_figures({"reference": r_o, **vols}, figures, f"{ratio:g}", labels)
        _report_level(f"dose 1/{ratio:g}", scores, cfg.progress)
    result["_figures"] = figures
    result["_labels"] = labels


def run_evaluation(cfg: EvaluationConfig) -> dict[str, Any]:
    """Run the protocol and return the scores.

    Parameters
    ----------
    cfg : EvaluationConfig
        What to run.

    Returns
    -------
    dict
        ``config``, ``levels`` (one entry per noise level or dose ratio with ``scores``:
        ``{method: {"psnr", "ssim"}}`` for ``noisy``, each ``cnn-<k>``, each baseline and, in
        Poisson mode, ``full-dose``; ``separation``: phase separation per method; the paper's
        SSIM where it reports one), ``seconds`` per stage, ``backend`` of the reconstruction.
        Keys starting with ``_`` hold arrays for the figures (not JSON).
    """
    cfg.validate()
    from bluesky_lowdose.recon import resolve_backend

    clock = _Clock()
    started = time.perf_counter()
    rows = cfg.scored_rows()
    result: dict[str, Any] = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")},
        "scored_slices": [rows.start, rows.stop],
        "reconstruction": {"backend": resolve_backend(None), "filter": "parzen"},
    }
    if cfg.mode == "gaussian":
        _gaussian(cfg, result, clock)
    else:
        _poisson(cfg, result, clock)
    result["seconds"] = {k: round(v, 2) for k, v in clock.seconds.items()}
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    return result
