"""Recorrupted scans: a judge of the noise-free reconstruction from the scan's own noise.

Where the long exposures cannot see the noise (a real scan's counts: thousands of quanta per pixel,
:func:`~bluesky_lowdose.pipeline.auto.noise_bound`), ``auto`` chooses by this judge instead.
It needs no reference, only the frames' noise statistics (Recorrupted-to-Recorrupted, Pang et al.,
CVPR 2021, here on line integrals):

- draw a noise ``z`` with the frames' own covariance (line integrals: ``(N + r²) / N²`` per pixel
  for ``N = T·N0`` detected quanta and read noise ``r``, correlated across pixels as the detector
  correlates it, :func:`noise_kernel`);
- make two scans of the same views, ``p1 = p + α z`` and ``p2 = p − z / α``. For Gaussian noise of
  that covariance their noises are independent, ``p1``'s is ``1 + α²`` times the scan's;
- run each candidate on ``p1`` and reconstruct ``p2`` plainly. Then
  ``E‖V(p1) − FBP(p2)‖² = E‖V(p1) − R‖² + E‖FBP(p2) − R‖²``, with ``R`` the reconstruction of the
  noise-free projections on the same views (what ``lowdose-tomo evaluate`` scores against): the last
  term is the same for every candidate and is estimated from one more noise draw.

So every candidate gets an unbiased estimate of its PSNR against the noise-free reconstruction, at
``1 + α²`` times the scan's noise. Photon noise at thousands of quanta is Gaussian to a good
approximation; at tens of quanta it is not (the log of a few counts), and there the long exposures
judge well: measured in ``docs/evaluation.md``, "A judge of the noise-free reconstruction".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ALPHA",
    "JACKKNIFE_BLOCKS",
    "KERNEL_RADIUS",
    "VARIANCE_RANGE",
    "NoiseFreeJudge",
    "Recorrupted",
    "noise_kernel",
    "recorrupt",
    "recorrupted_slab",
]

#: The recorruption's strength: the candidates see ``1 + ALPHA²`` times the scan's noise variance.
ALPHA = 0.5
#: Pixels of the detector's noise correlation measured and reproduced on each side.
KERNEL_RADIUS = 3
#: Frames of white noise drawn per random stream (the draws depend on it: kept fixed).
_CHUNK = 64
#: The pairs' noise, measured over what the photon statistics predict, must lie in this range for the
#: recorrupted scans to be made: outside it the statistics do not describe the frames (pairs that moved
#: between exposures, a wrong gain) and the estimate would be biased.
VARIANCE_RANGE = (0.5, 2.0)
#: Blocks of contiguous judged slices the estimates' standard errors are computed over (a jackknife:
#: one block left out at a time). Slices a few rows apart have independent noise.
JACKKNIFE_BLOCKS = 8


def _line_integral_std(transmission: np.ndarray, counts: Any, read_noise: float) -> np.ndarray:
    """The standard deviation of ``-log`` of a transmission from its detected quanta and read noise."""
    quanta = np.maximum(np.asarray(transmission, np.float32) * np.asarray(counts, np.float32), 1.0)
    return np.sqrt(quanta + np.float32(read_noise) ** 2) / quanta


def noise_kernel(
    short: Any,
    long_: Any,
    open_beam_counts: Any,
    read_noise: float = 0.0,
    long_open_beam_counts: Any = None,
    radius: int = KERNEL_RADIUS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The detector's noise correlation, measured on the pairs.

    At the same view a short and a long frame differ by their noises only: ``log(long / short)``,
    divided by the standard deviation their photon statistics predict, is a unit-variance noise
    field with the detector's correlation (a scintillator's blur makes neighbours agree). Its
    autocorrelation within ``radius`` pixels gives the kernel that makes white noise correlate the
    same way (the square root of its power spectrum).

    Parameters
    ----------
    short, long_ : array_like
        ``(k, rows, width)`` flat/dark-corrected transmission of the pairs.
    open_beam_counts : float or array_like
        Open-beam quanta per pixel of the short frames (scalar or ``(rows, width)``).
    read_noise : float
        Read noise, quanta rms.
    long_open_beam_counts : float or array_like, optional
        The long frames' (default: ``open_beam_counts`` scaled by the frames' mean ratio).
    radius : int
        Pixels of correlation kept on each side.

    Returns
    -------
    tuple
        The kernel, ``(2 radius + 1, 2 radius + 1)`` with unit sum of squares (unit variance out of
        unit white noise), and a record: the neighbours' correlation along rows and columns, and the
        measured variance over the predicted one (1 where the photon statistics are right).

    Raises
    ------
    ValueError
        Pairs of different shapes, or no pixel with light in both frames.
    """
    s, lg = np.asarray(short, np.float64), np.asarray(long_, np.float64)
    if s.shape != lg.shape or s.ndim != 3:
        raise ValueError(f"pairs of shapes {s.shape} and {lg.shape}: both must be (k, rows, width)")
    live = (s > 0) & (lg > 0) & np.isfinite(s) & np.isfinite(lg)
    if not live.any():
        raise ValueError("no pixel has light in both frames of a pair: cannot measure the noise")
    counts = np.broadcast_to(np.asarray(open_beam_counts, np.float64), s.shape[1:])
    lcounts = np.broadcast_to(np.asarray(long_open_beam_counts, np.float64), s.shape[1:]) if (
        long_open_beam_counts is not None) else counts * 10.0  # fmt: skip
    var = (_line_integral_std(np.where(live, s, 1), counts, read_noise) ** 2
           + _line_integral_std(np.where(live, lg, 1), lcounts, read_noise) ** 2)  # fmt: skip
    d = np.where(live, np.log(np.where(live, lg, 1) / np.where(live, s, 1)) / np.sqrt(var), 0.0)
    n_live = np.maximum(live.sum(axis=(1, 2), keepdims=True), 1)
    d = np.where(live, d - d.sum(axis=(1, 2), keepdims=True) / n_live, 0.0)  # each pair's offset removed
    shape = (2 * d.shape[1], 2 * d.shape[2])  # zero-padded: no wrap-around

    def autocorrelation(a: np.ndarray) -> np.ndarray:
        spec = np.fft.rfft2(a, s=shape)
        return np.fft.irfft2((spec * spec.conj()).sum(axis=0), s=shape)

    # per lag, the mean over the pixel pairs that both have light
    acf = autocorrelation(d) / np.maximum(autocorrelation(live.astype(np.float64)), 1.0)
    r = int(radius)
    window = np.roll(np.roll(acf, r, axis=0), r, axis=1)[: 2 * r + 1, : 2 * r + 1]
    measured_var = float(window[r, r])
    window = window / window[r, r]
    grid = np.zeros((8 * r + 4, 8 * r + 4))
    grid[: 2 * r + 1, : 2 * r + 1] = window
    grid = np.roll(np.roll(grid, -r, axis=0), -r, axis=1)  # centred on (0, 0)
    psd = np.clip(np.fft.fft2(grid).real, 0.0, None)
    kernel = np.fft.fftshift(np.fft.ifft2(np.sqrt(psd)).real)
    c = grid.shape[0] // 2
    kernel = kernel[c - r : c + r + 1, c - r : c + r + 1]
    kernel /= np.sqrt((kernel**2).sum())
    record = {"neighbour_correlation": {"along_rows": round(float(window[r, r + 1]), 4),
                                        "along_columns": round(float(window[r + 1, r]), 4)},
              "variance_over_predicted": round(measured_var, 4), "pixels": int(live.sum()),
              "radius": r}  # fmt: skip
    return kernel.astype(np.float32), record


def _correlated_noise(
    rows: np.ndarray, frames: range, width: int, kernel: np.ndarray, seed: int
) -> np.ndarray:
    """Unit-variance noise ``(len(frames), len(rows), width)`` correlated by ``kernel``, the same at a
    detector row and frame whichever rows are asked for (white noise drawn per row and block of
    :data:`_CHUNK` frames, then convolved); ``frames`` lies within one such block."""
    from scipy.ndimage import convolve

    r = kernel.shape[0] // 2
    block, first = divmod(frames.start, _CHUNK)
    if (frames.stop - 1) // _CHUNK != block:
        raise ValueError(f"frames {frames.start}-{frames.stop - 1} span more than one block of {_CHUNK}")
    out = np.empty((len(frames), len(rows), width), np.float32)
    rows = np.asarray(rows, np.int64)
    starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)  # contiguous runs of rows
    for i, j in zip(starts, [*starts[1:], len(rows)], strict=True):
        span = np.arange(rows[i] - r, rows[j - 1] + r + 1)
        white = np.empty((len(frames), len(span), width), np.float32)
        for q, row in enumerate(span):
            rng = np.random.default_rng([seed, int(row) + 2**20, block])
            white[:, q] = rng.standard_normal((_CHUNK, width), np.float32)[first : first + len(frames)]
        out[:, i:j] = convolve(white, kernel[None], mode="wrap")[:, r : len(span) - r]
    return out


def recorrupt(
    transmission: Any,
    rows: Any,
    open_beam_counts: Any,
    read_noise: float,
    kernel: np.ndarray,
    *,
    seed: int = 0,
    alpha: float = ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """Two scans of the same views whose noises are independent: ``(p + α z, p − z / α)``.

    Parameters
    ----------
    transmission : array_like
        ``(n, len(rows), width)`` flat/dark-corrected transmission.
    rows : array_like
        Their detector rows: a row's noise is the same in every call with the same seed, so a slab
        and rows sampled over the height agree where they share rows.
    open_beam_counts : float or array_like
        Open-beam quanta per pixel at these rows (scalar or ``(len(rows), width)``).
    read_noise : float
        Read noise, quanta rms.
    kernel : numpy.ndarray
        The detector's noise correlation (:func:`noise_kernel`).
    seed : int
        Seeds ``z``.
    alpha : float
        The recorruption's strength.

    Returns
    -------
    tuple of numpy.ndarray
        The two scans as transmission, ``T·exp(−α z)`` and ``T·exp(z / α)``.
    """
    t = np.asarray(transmission)
    first, second = np.empty(t.shape, np.float32), np.empty(t.shape, np.float32)
    for c0 in range(0, t.shape[0], _CHUNK):  # bounded temporaries on large detectors
        frames = range(c0, min(c0 + _CHUNK, t.shape[0]))
        block = np.asarray(t[c0 : frames.stop], np.float32)
        z = _correlated_noise(np.asarray(rows), frames, t.shape[2], kernel, seed)
        z *= _line_integral_std(block, open_beam_counts, read_noise)
        first[c0 : frames.stop] = block * np.exp(-alpha * z)
        second[c0 : frames.stop] = block * np.exp(z / alpha)
    return first, second


@dataclass
class NoiseFreeJudge:
    """Scores volumes made from the first recorrupted scan against the plain reconstruction of the
    second: an estimate of their PSNR against the noise-free reconstruction (see the module).

    Attributes
    ----------
    second : numpy.ndarray
        The plain reconstruction of the second scan, the judged slices.
    offset : float
        Its expected mean squared noise inside the mask (subtracted from every score).
    mask : numpy.ndarray
        The voxels scored (the object, from the raw reconstruction).
    data_range : float
        The PSNR's range (the raw reconstruction's).
    rows : slice
        The slab's slices judged (volumes are cut to them).
    noise_slices : numpy.ndarray
        Per judged slice, the sum inside the mask of the squared reconstruction of the scan's noise
        alone (one draw): the raw reconstruction's noise at the scan's own level.
    alpha : float
        The recorruption's strength.
    """

    second: np.ndarray
    offset: float
    mask: np.ndarray
    data_range: float
    rows: slice
    noise_slices: np.ndarray
    alpha: float = ALPHA

    @classmethod
    def from_volumes(
        cls, raw: Any, second: Any, noise_only: Any, alpha: float = ALPHA, rows: slice | None = None
    ) -> NoiseFreeJudge:
        """The judge from three plain reconstructions of the slab.

        Parameters
        ----------
        raw : array_like
            Of the scan itself (its object mask and data range).
        second : array_like
            Of the second recorrupted scan.
        noise_only : array_like
            Of the scan's noise alone (the reconstruction of one more draw minus ``raw``).
        alpha : float
            The recorruption's strength.
        rows : slice, optional
            The slices judged (default all).

        Returns
        -------
        NoiseFreeJudge

        Raises
        ------
        ValueError
            No object in the raw reconstruction (nothing to score).
        """
        from ..metrics import object_mask

        cut = rows or slice(None)
        raw = np.asarray(raw, np.float32)[cut]
        mask = object_mask(raw)
        if not mask.any():
            raise ValueError("the raw reconstruction shows no object to judge")
        noise = np.where(mask, np.asarray(noise_only, np.float64)[cut] ** 2, 0.0).sum(axis=(1, 2))
        offset = (1 + 1 / alpha**2) * float(noise.sum() / mask.sum())
        return cls(np.asarray(second, np.float32)[cut], offset, mask, float(raw.max() - raw.min()), cut,
                   noise, alpha)  # fmt: skip

    def slice_totals(self, volume: Any) -> np.ndarray:
        """Per judged slice, the sum inside the mask of the squared difference from :attr:`second`.

        Parameters
        ----------
        volume : array_like
            A reconstruction of the slab from the first recorrupted scan (cut to :attr:`rows` here).

        Returns
        -------
        numpy.ndarray
            One sum per judged slice.
        """
        v = np.asarray(volume, np.float32)[self.rows]
        if v.shape != self.second.shape:
            raise ValueError(f"a volume of {v.shape} judged against {self.second.shape}")
        return np.where(self.mask, (v.astype(np.float64) - self.second) ** 2, 0.0).sum(axis=(1, 2))

    def score(self, volume: Any) -> dict[str, float]:
        """The estimated PSNR (dB) and mean squared error against the noise-free reconstruction.

        Parameters
        ----------
        volume : array_like
            As for :meth:`slice_totals`.

        Returns
        -------
        dict
            ``psnr_db``, ``mse``, and ``total_mse`` before the noise offset was subtracted.
        """
        return self.score_totals(self.slice_totals(volume))

    def score_totals(self, totals: np.ndarray) -> dict[str, float]:
        """:meth:`score` from a volume's :meth:`slice_totals`."""
        total = float(totals.sum() / self.mask.sum())
        mse = max(total - self.offset, 1e-12 * self.data_range**2)
        return {"psnr_db": float(10 * np.log10(self.data_range**2 / mse)), "mse": mse, "total_mse": total}

    def gain_at_scan_noise(self, totals: np.ndarray, raw_totals: np.ndarray) -> dict[str, float | None]:
        """A lower bound of a candidate's PSNR gain over the raw reconstruction at the scan's own noise,
        and its standard error.

        The candidates ran on a scan with ``1 + α²`` times the noise, and a raw reconstruction's error
        falls by the noise taken away (``α²`` times :attr:`noise_slices`' mean). A denoiser's error
        falls too, unless it was all bias: keeping the candidate's error as it is gives the least gain
        it can have at the scan's noise. Whether it is above 0 does not depend on :attr:`offset` (the
        one estimate that every score shares): ``totals`` must be below ``raw_totals`` by the noise
        taken away. The standard error is a jackknife over :data:`JACKKNIFE_BLOCKS` blocks of
        contiguous slices (none with fewer than two slices).

        Parameters
        ----------
        totals, raw_totals : numpy.ndarray
            :meth:`slice_totals` of the candidate's volume and of the raw reconstruction of the first
            recorrupted scan.

        Returns
        -------
        dict
            ``at_scan_noise_db`` and ``at_scan_noise_se_db`` (None with fewer than two slices).
        """
        counts = self.mask.sum(axis=(1, 2)).astype(np.float64)
        floor = 1e-12 * self.data_range**2
        a2, off = self.alpha**2, 1 + 1 / self.alpha**2

        def bound(keep: np.ndarray) -> float:
            n = counts[keep].sum()
            noise = self.noise_slices[keep].sum() / n
            candidate = totals[keep].sum() / n - off * noise
            raw = raw_totals[keep].sum() / n - off * noise - a2 * noise
            return float(10 * np.log10(max(raw, floor) / max(candidate, floor)))

        every = counts > 0
        est = bound(every)
        judged = np.flatnonzero(every)
        blocks = [b for b in np.array_split(judged, min(JACKKNIFE_BLOCKS, judged.size)) if b.size]
        if len(blocks) < 2:
            return {"at_scan_noise_db": est, "at_scan_noise_se_db": None}
        left = []
        for b in blocks:
            keep = every.copy()
            keep[b] = False
            left.append(bound(keep))
        k = len(left)
        se = float(np.sqrt((k - 1) / k * np.sum((np.asarray(left) - np.mean(left)) ** 2)))
        return {"at_scan_noise_db": est, "at_scan_noise_se_db": se}


@dataclass
class Recorrupted:
    """What ``auto`` runs its candidates on where it judges by :class:`NoiseFreeJudge`.

    Attributes
    ----------
    frames : numpy.ndarray
        The slab's first recorrupted scan (the candidates' input).
    short : numpy.ndarray
        The pairs' short frames at the slab, recorrupted (independently of ``frames``).
    training : tuple or None
        ``(frames, rows)``: the rows Noise2Inverse trains on, recorrupted as the slab where they
        share rows.
    judge : NoiseFreeJudge
        The judge.
    record : dict
        JSON-ready: the noise's measured correlation, ``alpha``, the offset, and ``raw_psnr_db``, the
        estimate of the raw reconstruction of ``frames`` (every candidate's gain is over it).
    raw_totals : numpy.ndarray
        :meth:`NoiseFreeJudge.slice_totals` of that raw reconstruction.
    """

    frames: np.ndarray
    short: np.ndarray
    training: tuple[np.ndarray, np.ndarray] | None
    judge: NoiseFreeJudge
    record: dict[str, Any]
    raw_totals: np.ndarray

    def estimate(self, volume: Any) -> dict[str, float | None]:
        """A slab volume made from :attr:`frames`: its estimated PSNR against the noise-free
        reconstruction and its gain over the raw one (dB), ``psnr_db`` and ``gain_psnr_db``, both at
        the recorrupted scan's noise; and the least gain it has at the scan's own noise with its
        standard error (:meth:`NoiseFreeJudge.gain_at_scan_noise`)."""
        totals = self.judge.slice_totals(volume)  # once: the score and the bound both need them
        psnr = self.judge.score_totals(totals)["psnr_db"]
        at_scan = self.judge.gain_at_scan_noise(totals, self.raw_totals)
        return {"psnr_db": psnr, "gain_psnr_db": psnr - self.record["raw_psnr_db"], **at_scan}


def recorrupted_slab(
    frames: np.ndarray,
    rows: slice,
    theta_deg: np.ndarray,
    *,
    short: np.ndarray,
    long_: np.ndarray,
    open_beam_counts: Any,
    read_noise: float,
    long_open_beam_counts: Any = None,
    training: tuple[np.ndarray, np.ndarray] | None = None,
    judged_rows: slice | None = None,
    seed: int = 0,
    alpha: float = ALPHA,
    **options: Any,
) -> Recorrupted:
    """Recorrupt a slab, its pairs' short frames and Noise2Inverse's training rows, and make the judge.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(n, rows, width)`` transmission of the slab.
    rows : slice
        Its detector rows.
    theta_deg : numpy.ndarray
        Their angles.
    short, long_ : numpy.ndarray
        The pairs at the slab's rows.
    open_beam_counts : float or numpy.ndarray
        Open-beam quanta per pixel, the whole detector's height (or a scalar).
    read_noise : float
        Read noise, quanta rms.
    long_open_beam_counts : float or numpy.ndarray, optional
        The long frames' (the whole height).
    training : tuple, optional
        ``(frames, rows)`` Noise2Inverse trains on (the same frames as ``frames``).
    judged_rows : slice, optional
        The slab's rows judged.
    seed : int
        Seeds the noise.
    alpha : float
        The recorruption's strength.
    **options
        Passed to :func:`~bluesky_lowdose.pipeline.enhance_scan` (``center``, ``backend``, ...).

    Returns
    -------
    Recorrupted

    Raises
    ------
    ValueError
        The pairs' noise is outside :data:`VARIANCE_RANGE` of what the photon statistics predict.
    """
    from .flatfield import rows_of
    from .stack import enhance_scan

    t0 = time.perf_counter()
    kernel, measured = noise_kernel(short, long_, rows_of(open_beam_counts, rows), read_noise,
                                    rows_of(long_open_beam_counts, rows))  # fmt: skip
    ratio = measured["variance_over_predicted"]
    if not VARIANCE_RANGE[0] <= ratio <= VARIANCE_RANGE[1]:
        raise ValueError(f"the pairs' noise is {ratio:.2f} times what the photon statistics predict "
                         "(short against long at the same view): they do not describe these frames' "
                         "noise")  # fmt: skip
    idx = np.arange(rows.start, rows.stop)
    counts = rows_of(open_beam_counts, rows)
    first, second = recorrupt(frames, idx, counts, read_noise, kernel, seed=seed, alpha=alpha)
    noisy = recorrupt(frames, idx, counts, read_noise, kernel, seed=seed + 1, alpha=1.0)[0]
    short1 = recorrupt(short, idx, counts, read_noise, kernel, seed=seed + 2, alpha=alpha)[0]
    if training is not None:
        sampled = recorrupt(training[0], training[1], rows_of(open_beam_counts, training[1]), read_noise,
                            kernel, seed=seed, alpha=alpha)[0]  # fmt: skip
        training = (sampled, training[1])

    def plain(t: np.ndarray) -> np.ndarray:
        return enhance_scan(t, theta_deg, method="none", keep_projections=False, judge=False,
                            open_beam_counts=counts, read_noise=read_noise, **options).volume  # fmt: skip

    raw = plain(np.asarray(frames, np.float32))
    judge = NoiseFreeJudge.from_volumes(raw, plain(second), plain(noisy) - raw, alpha, judged_rows)
    raw_first = plain(first)
    record = {"alpha": alpha, "noise": measured, "offset_mse": judge.offset,
              "raw_psnr_db": judge.score_totals(raw_totals := judge.slice_totals(raw_first))["psnr_db"],
              "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return Recorrupted(first, short1, training, judge, record, raw_totals)
