"""Classical denoisers with the enhancer's call shape: median, total variation, BM3D.

With reference pairs, the strength of each (median size, TV weight, BM3D sigma) is tuned by PSNR
against the long exposures, so the comparison with the CNN, which also sees the pairs, is fair.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._checks import as_frames

__all__ = [
    "BASELINES",
    "BM3D_PROFILE",
    "BM3D_WORKERS",
    "Baseline",
    "baseline",
    "bm3d_each",
    "bm3d_seconds_per_pixel",
    "bm3d_workers",
]

#: Names accepted by :func:`baseline` and the parameter each one tunes.
BASELINES = {"median": "size", "tv": "weight", "bm3d": "sigma"}

#: What differs from pip ``bm3d``'s default profile for :class:`Baseline` (BM3D on projections and
#: frames): the conventional BM3D (``nf=0``). The library's default refines its thresholds from the
#: noise PSD (``nf=32``, for correlated noise, given its PSD); with the white sigma given here it
#: costs ~0.3 s per call whatever the image's size (48²: 0.36 s instead of 0.03 s; 128²: 0.98 s
#: instead of 0.23 s), and on projections it gave 0.0-1.0 dB less PSNR and less SSIM than the
#: conventional BM3D on every realistic protocol measured (``benchmarks/bench_bm3d_modes.py``,
#: docs/evaluation.md). BM3D on slices keeps the library's profile (there it was 0.24-0.38 dB
#: better at 128³). Recorded in the provenance.
BM3D_PROFILE: dict[str, Any] = {"nf": 0}


def _median(frame: np.ndarray, size: float) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(frame, size=int(size), mode="reflect")


def _tv(frame: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(frame, weight=float(weight))


def _bm3d(frame: np.ndarray, sigma: float, changes: Mapping[str, Any] = BM3D_PROFILE) -> np.ndarray:
    import bm3d

    profile = bm3d.BM3DProfile()
    profile.num_threads = 1  # one thread per call: see bm3d_each
    for key, value in changes.items():
        setattr(profile, key, value)
    return np.asarray(bm3d.bm3d(np.asarray(frame, np.float64), sigma_psd=float(sigma), profile=profile))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: BM3D calls side by side at most (:func:`bm3d_each`), where the caller keeps cores for other work
#: (``auto`` runs BM3D while Noise2Inverse trains); None: one per core.
BM3D_WORKERS: ContextVar[int | None] = ContextVar("BM3D_WORKERS", default=None)


def bm3d_workers() -> int:
    """BM3D calls :func:`bm3d_each` runs side by side: :data:`BM3D_WORKERS`, else one per core."""
    return BM3D_WORKERS.get() or _cores()


def bm3d_seconds_per_pixel(profile: Mapping[str, Any] = BM3D_PROFILE, probe: int = 256) -> float:
    """BM3D's time per pixel of one call on this machine, timed on a ``probe`` x ``probe`` image.

    From 256 pixels up the time grows with the pixel count (measured on 2 cores: 3.5 s at 256²,
    13.8 s at 512² with the library's own profile), so this estimates larger images; below, the
    call's fixed cost dominates.

    Parameters
    ----------
    profile : mapping
        As for :func:`bm3d_each`.
    probe : int
        Edge of the noise image timed.

    Returns
    -------
    float
        Seconds per pixel of one single-threaded call.
    """
    image = np.random.default_rng(0).normal(0.5, 0.1, (probe, probe))
    t0 = time.perf_counter()
    _bm3d(image, 0.1, profile)
    return (time.perf_counter() - t0) / image.size


def bm3d_each(
    images: Sequence[np.ndarray],
    sigmas: float | Sequence[float],
    *,
    out: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "bm3d",
    profile: Mapping[str, Any] = BM3D_PROFILE,
) -> Any:
    """BM3D of every image (pip ``bm3d``), side by side on the cores this process may use.

    The library's compiled core releases the GIL, so images run in threads. Each call runs on one
    thread of its own (the profile's ``num_threads=1``): the result does not depend on how many
    threads there are, and a busy machine is not slowed by the library's own pool spinning on its
    locks (its pool doubled a call's time under load).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2-D images.
    sigmas : float or sequence of float
        Noise sigma, one for all or one per image.
    out : numpy.ndarray, optional
        ``(len(images), H, W)``: each result is written into it as it comes (a volume's slices
        are never all held twice).
    progress : bool
        A tqdm bar over images.
    desc : str
        The bar's label.
    profile : mapping
        Attributes of ``bm3d.BM3DProfile`` set for every call (default :data:`BM3D_PROFILE`;
        ``{}``: the library's own profile).

    Returns
    -------
    list of numpy.ndarray or numpy.ndarray
        The denoised images (float64) in order, or ``out``.
    """
    n = len(images)
    each = [float(sigmas)] * n if np.isscalar(sigmas) else [float(v) for v in sigmas]  # type: ignore[arg-type]
    if len(each) != n:
        raise ValueError(f"{len(each)} sigmas for {n} images")
    kept: list[np.ndarray] = []
    workers = max(min(bm3d_workers(), n), 1)
    with tqdm(total=n, desc=desc, unit="image", disable=not progress, leave=False) as bar, \
            ThreadPoolExecutor(workers, thread_name_prefix="bm3d") as pool:  # fmt: skip
        for i, den in enumerate(pool.map(_bm3d, images, each, [profile] * n)):
            if out is None:
                kept.append(den)
            else:
                out[i] = den
            bar.update()
    return kept if out is None else out


_FILTERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {"median": _median, "tv": _tv, "bm3d": _bm3d}


def _noise_sigma(frames: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(np.mean([estimate_sigma(f) for f in frames]))


def _psnr(test: np.ndarray, reference: np.ndarray) -> float:
    peak = float(reference.max() - reference.min())
    mse = float(np.mean((test - reference) ** 2))
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


class Baseline:
    """A classical denoiser applied frame by frame.

    Parameters
    ----------
    name : {"median", "tv", "bm3d"}
        The filter.
    value : float
        Its strength: median window size (pixels), TV weight or BM3D noise sigma, in the units of
        the frames.
    provenance : dict
        JSON-serialisable record of how the value was chosen.
    """

    #: Each frame is filtered on its own: a batch gives what its frames give one by one (so the
    #: pipeline may hand it whole blocks, which BM3D filters side by side).
    batch_invariant = True

    def __init__(self, name: str, value: float, provenance: dict[str, Any]) -> None:
        self.name = name
        self.value = float(value)
        self._provenance = copy.deepcopy(provenance)

    @property
    def provenance(self) -> dict[str, Any]:
        """A copy of the JSON-serialisable provenance record.

        Returns
        -------
        dict
            Filter name, parameter, value and, when tuned, candidates and their PSNR.
        """
        return copy.deepcopy(self._provenance)

    def __repr__(self) -> str:
        return f"<Baseline {self.name} {BASELINES[self.name]}={self.value:.4g}>"

    def enhance(self, frames: Any, *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Denoise one frame or a stack of frames.

        Parameters
        ----------
        frames : array_like
            ``(H, W)`` or ``(N, H, W)``, any real dtype.
        batch_size : int, optional
            Ignored (frames are filtered one at a time); accepted for the enhancer's call shape.
        progress : bool
            Show a tqdm bar over frames.

        Returns
        -------
        numpy.ndarray
            A float32 array of the input's shape, in the input's units.

        Raises
        ------
        TypeError
            Non-numeric data.
        ValueError
            Wrong ndim, empty, NaN or infinite values.
        """
        stack, single = as_frames(frames, "frames")
        out = np.empty(stack.shape, dtype=np.float32)
        if self.name == "bm3d":
            bm3d_each(stack, self.value, out=out, progress=progress, desc=self.name)
            return out[0] if single else out
        filt = _FILTERS[self.name]
        for i in tqdm(range(len(stack)), desc=self.name, disable=not progress, leave=False):
            out[i] = filt(stack[i].astype(np.float64), self.value)
        return out[0] if single else out


def baseline(
    name: str,
    short_refs: Any = None,
    long_refs: Any = None,
    *,
    candidates: Sequence[float] | None = None,
    **params: float,
) -> Baseline:
    """Make a classical denoiser, tuned on reference pairs when they are given.

    Parameters
    ----------
    name : {"median", "tv", "bm3d"}
        ``"median"`` (:func:`scipy.ndimage.median_filter`, parameter ``size``), ``"tv"``
        (:func:`skimage.restoration.denoise_tv_chambolle`, parameter ``weight``) or ``"bm3d"``
        (pip ``bm3d``, parameter ``sigma``).
    short_refs, long_refs : array_like, optional
        ``(n_pairs, H, W)`` reference pairs.  When given and the parameter is not, each candidate
        value is tried on the short frames and the one with the best mean PSNR against the long
        frames is kept.
    candidates : sequence of float, optional
        Values to try (defaults: sizes 3, 5, 7; TV weights and BM3D sigmas of 0.5 to 4 times the
        noise level that :func:`skimage.restoration.estimate_sigma` finds in the short frames).
    **params : float
        The filter's parameter, fixed (``size=5``, ``weight=0.05`` or ``sigma=0.02``): no tuning.

    Returns
    -------
    Baseline
        An object with ``.enhance(frames)`` and ``.provenance``.

    Raises
    ------
    ValueError
        Unknown name or parameter, only one of the reference stacks, mismatched pairs, or no
        parameter and no pairs for a filter that needs one.
    TypeError
        Non-numeric reference data.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    key = BASELINES[name]
    unknown = set(params) - {key}
    if unknown:
        raise ValueError(f"baseline {name!r} takes only the parameter {key!r}, got {sorted(unknown)}")
    started = time.perf_counter()
    record: dict[str, Any] = {"baseline": name, "parameter": key}
    if name == "bm3d":
        record["profile"] = dict(BM3D_PROFILE)
    if (short_refs is None) != (long_refs is None):
        raise ValueError("give both short_refs and long_refs, or neither")
    if key in params:
        value = float(params[key])
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{key} must be a positive number, got {params[key]!r}")
        record.update(value=value, tuned=False)
        return Baseline(name, value, record)
    if short_refs is None:
        if name != "median":
            raise ValueError(f"baseline {name!r} needs {key}=... or reference pairs to tune it on")
        record.update(value=3.0, tuned=False)
        return Baseline(name, 3.0, record)
    short, _ = as_frames(short_refs, "short_refs", allow_single=False)
    long, _ = as_frames(long_refs, "long_refs", allow_single=False)
    if short.shape != long.shape:
        raise ValueError(f"short_refs {short.shape} and long_refs {long.shape} must have the same shape")
    short = short.astype(np.float64)
    long = long.astype(np.float64)
    if candidates is None:
        if name == "median":
            candidates = [3, 5, 7]
        else:
            sigma = _noise_sigma(short)
            if not sigma > 0:
                raise ValueError("no noise found in short_refs to scale the candidates; pass candidates=")
            candidates = [sigma * f for f in (0.5, 1.0, 2.0, 4.0)]
    if name == "bm3d":  # every candidate on every pair, side by side
        flat = bm3d_each(
            [s for _ in candidates for s in short], [float(v) for v in candidates for _ in short]
        )
        tried = [flat[i * len(short) : (i + 1) * len(short)] for i in range(len(candidates))]
    else:
        tried = [[_FILTERS[name](s, float(value)) for s in short] for value in candidates]
    scores = []
    for den in tried:
        scores.append(float(np.mean([_psnr(d, lg) for d, lg in zip(den, long, strict=True)])))
    best = int(np.argmax(scores))
    value = float(candidates[best])
    record.update(
        value=value,
        tuned=True,
        candidates=[float(c) for c in candidates],
        psnr_db=scores,
        psnr_short_db=float(np.mean([_psnr(s, lg) for s, lg in zip(short, long, strict=True)])),
        n_pairs=len(short),
        tuning_time_s=round(time.perf_counter() - started, 3),
    )
    return Baseline(name, value, record)
