"""The flat/dark policy and the photon statistics of the open beam (pure numpy).

One policy for every entry point (streaming enhancer, ``lowdose-tomo enhance``, evaluation):

* every exposure is corrected with **darks of its own exposure time** (dark current and
  offset depend on it);
* the **flat** is the one with the most photons available: flats cost the sample no dose, so
  when long-exposure flats (with their darks) and both exposure times are known, the flat of a
  short exposure is the long one scaled by the exposure ratio plus the short darks.  Flats
  taken at the short exposure would imprint their own photon noise on every projection (the
  same pattern at every angle: rings).  Without long flats, the exposure's own flats are used.

The photon statistics (open-beam counts per pixel, read noise) come from the same frames by
the photon-transfer method: across repeated flats the variance of a pixel grows with its mean
by the gain (ADU per photon); darks give the read noise.

**Dead pixels** (an open beam below :data:`DEAD_FRACTION` of the median, e.g. a flat at or
below the dark) carry no information: their transmission is filled with the mean of their live
neighbours (3 x 3) in every corrected frame, their open-beam counts likewise, and their number
is recorded (``describe()["dead_pixels"]``).  Without the fill each would be a ring in every
slice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FlatField",
    "PhotonStatistics",
    "dead_pixel_mask",
    "fill_dead_pixels",
    "flat_field",
    "log_floor",
    "photon_statistics",
    "rows_of",
]

logger = logging.getLogger(__name__)

#: Transmission floor without photon statistics (line integrals are at most -log(1e-6) = 13.8).
DEFAULT_FLOOR = 1e-6
#: With photon statistics the transmission floor is this many photons of the open beam.
FLOOR_PHOTONS = 0.5


def log_floor(open_beam_counts: Any = None) -> Any:
    """The transmission floor under ``-log``: half a photon of the open beam, never above 0.5 (pixels
    that see no beam); :data:`DEFAULT_FLOOR` without photon statistics.

    Parameters
    ----------
    open_beam_counts : float or numpy.ndarray, optional
        Detected open-beam photons per pixel at the frames' exposure.

    Returns
    -------
    float or numpy.ndarray
        The floor, per pixel where the counts are per pixel.
    """
    if open_beam_counts is None:
        return DEFAULT_FLOOR
    return np.minimum(FLOOR_PHOTONS / np.maximum(np.asarray(open_beam_counts), 1e-3), 0.5)


#: A pixel whose open-beam signal is below this fraction of the median is dead.
DEAD_FRACTION = 0.05


def dead_pixel_mask(open_beam: Any) -> np.ndarray:
    """Pixels that see (almost) no open beam: signal below :data:`DEAD_FRACTION` of the median.

    Parameters
    ----------
    open_beam : array_like
        ``(rows, cols)`` open-beam signal above the dark (ADU or photons).

    Returns
    -------
    numpy.ndarray of bool
        True where dead.
    """
    sig = np.asarray(open_beam, dtype=np.float64)
    return ~(sig > DEAD_FRACTION * max(float(np.median(sig)), 0.0))


def rows_of(per_pixel: Any, rows: Any) -> Any:
    """A per-pixel detector array (open-beam counts, ``(rows, width)``) at some detector rows; a
    scalar or None as it is.

    Parameters
    ----------
    per_pixel : float, numpy.ndarray or None
        The array, the whole detector's height.
    rows : slice or array_like
        The rows.

    Returns
    -------
    float, numpy.ndarray or None
    """
    return per_pixel if per_pixel is None or np.ndim(per_pixel) < 2 else np.asarray(per_pixel)[rows]


def fill_dead_pixels(images: Any, dead: np.ndarray | None) -> np.ndarray:
    """Replace dead pixels by the mean of their live 3 x 3 neighbours (repeated until all are filled).

    Parameters
    ----------
    images : array_like
        ``(rows, cols)`` or ``(n, rows, cols)``.
    dead : numpy.ndarray of bool or None
        ``(rows, cols)`` mask; None or all False returns ``images`` unchanged.

    Returns
    -------
    numpy.ndarray
        Float32 images, dead pixels filled (a copy when any is dead).
    """
    arr = np.asarray(images, dtype=np.float32)
    if dead is None or not dead.any():
        return arr
    from scipy.ndimage import uniform_filter

    out = np.array(arr, dtype=np.float32, copy=True)
    live = (~dead).astype(np.float32)
    todo = dead.copy()
    size = (1, 3, 3) if out.ndim == 3 else (3, 3)
    for _ in range(max(dead.shape)):
        if not todo.any():
            break
        w = uniform_filter(live, 3, mode="nearest")
        num = uniform_filter(out * (live[None] if out.ndim == 3 else live), size, mode="nearest")
        ok = todo & (w > 0)
        out[..., ok] = num[..., ok] / w[ok]
        live[ok] = 1.0
        todo &= ~ok
    return out


def _stack(frames: Any, name: str) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be (k, rows, cols) with k >= 1, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


@dataclass(frozen=True)
class FlatField:
    """The open-beam and dark signal of one exposure, and how they were obtained.

    Attributes
    ----------
    flat, dark : numpy.ndarray
        ``(rows, cols)`` float32 signal (ADU) of the open beam (dark included) and of the dark.
    policy : str
        ``"own flats"`` or ``"long flats scaled by the exposure ratio"``.
    exposure_ratio : float or None
        ``exposure / long_exposure`` when the long flats were scaled.
    warnings : tuple of str
        What looks wrong with the flats and darks (e.g. swapped, or a shutter that never opened):
        the correction is still made, and these go into the result's warnings.
    """

    flat: np.ndarray
    dark: np.ndarray
    policy: str
    exposure_ratio: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def dead(self) -> np.ndarray:
        """Dead pixels (:func:`dead_pixel_mask` of ``flat - dark``).

        Returns
        -------
        numpy.ndarray of bool
            ``(rows, cols)``.
        """
        return dead_pixel_mask(self.flat - self.dark)

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape ``(rows, cols)``.

        Returns
        -------
        tuple of int
            The shape.
        """
        return (int(self.flat.shape[0]), int(self.flat.shape[1]))

    def correct(self, frames: Any, *, floor: float = DEFAULT_FLOOR) -> np.ndarray:
        """Transmission ``(I - D) / (F - D)`` of raw frames of this exposure.

        Parameters
        ----------
        frames : array_like
            ``(rows, cols)`` or ``(n, rows, cols)`` raw frames.
        floor : float
            Smallest transmission returned.

        Returns
        -------
        numpy.ndarray
            Float32 transmission of the frames' shape.
        """
        from ..recon import flat_dark_correct

        return fill_dead_pixels(flat_dark_correct(frames, self.flat[None], self.dark[None], floor=floor),
                                self.dead)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for provenance.

        Returns
        -------
        dict
            Policy, exposure ratio and the median open-beam signal in ADU.
        """
        return {
            "policy": self.policy,
            "exposure_ratio": self.exposure_ratio,
            "median_open_beam_adu": float(np.median(self.flat - self.dark)),
            "average": "median of the frames",
            "dead_pixels": int(self.dead.sum()),
            "dead_pixel_rule": f"open beam < {DEAD_FRACTION:g} x median; filled from live neighbours",
            "warnings": list(self.warnings),
        }


def flat_field(
    flats: Any,
    darks: Any,
    *,
    exposure: float | None = None,
    long_flats: Any = None,
    long_darks: Any = None,
    long_exposure: float | None = None,
) -> FlatField:
    """Build the flat field of one exposure under the package's policy (see the module).

    Parameters
    ----------
    flats, darks : array_like or None
        Flats and darks taken at ``exposure``; ``flats`` may be None when the long flats are
        given, ``darks`` is required.
    exposure : float, optional
        Exposure time of the frames to correct, seconds.
    long_flats, long_darks : array_like, optional
        Flats and darks at ``long_exposure``.
    long_exposure : float, optional
        Exposure time of the long flats, seconds.

    Returns
    -------
    FlatField
        The flat, the dark and the policy used.

    Raises
    ------
    ValueError
        No darks, no usable flats, shapes that differ, NaN/inf or non-positive exposure times.
    """
    if darks is None:
        raise ValueError("darks of the exposure are needed to correct it")
    d = np.median(_stack(darks, "darks"), axis=0).astype(np.float32)
    scalable = long_flats is not None and long_darks is not None and exposure and long_exposure
    if scalable:
        if not (np.isfinite(exposure) and np.isfinite(long_exposure) and exposure > 0 and long_exposure > 0):
            raise ValueError(f"exposure times must be positive, got {exposure} and {long_exposure}")
        lf = np.median(_stack(long_flats, "long flats"), axis=0)
        ld = np.median(_stack(long_darks, "long darks"), axis=0)
        if lf.shape != d.shape or ld.shape != d.shape:
            raise ValueError(f"long flats {lf.shape} / darks {ld.shape} and darks {d.shape} differ in shape")
        found = (
            _check_open_beam(lf, ld, "long flats", "long darks"),
            _check_saturation(long_flats, "long flats"),
        )
        ratio = float(exposure) / float(long_exposure)
        flat = ((lf - ld) * ratio + d).astype(np.float32)
        return FlatField(flat, d, "long flats scaled by the exposure ratio", ratio,
                         warnings=tuple(w for w in found if w))  # fmt: skip
    if flats is None:
        raise ValueError("no flats: give the exposure's own flats, or long flats with both exposure times")
    f = np.median(_stack(flats, "flats"), axis=0).astype(np.float32)
    if f.shape != d.shape:
        raise ValueError(f"flats {f.shape} and darks {d.shape} differ in shape")
    found = (_check_open_beam(f, d, "flats", "darks"), _check_saturation(flats, "flats"))
    return FlatField(f, d, "own flats", warnings=tuple(w for w in found if w))


#: Share of a flat's pixels at the detector's largest value from which it is called saturated.
SATURATED_SHARE = 0.001


def _check_saturation(frames: Any, name: str) -> str | None:
    """Why these integer frames look saturated (pixels at the dtype's maximum), or None.

    A saturated open beam is too dark by an unknown amount: every transmission and every long
    reference built from it is wrong there, and a network trained on such pairs learns the clip.
    """
    arr = np.asarray(frames)
    if not np.issubdtype(arr.dtype, np.integer):
        return None
    top = np.iinfo(arr.dtype).max
    share = float(np.mean(arr == top))
    if share < SATURATED_SHARE:
        return None
    warning = (f"{100 * share:.1f} % of the {name}' pixels are at the detector's largest value ({top}): "
               "saturated, so the open beam (and every reference built on it) is wrong there; "
               "shorten that exposure or lower the flux")  # fmt: skip
    logger.warning("flat field: %s", warning)
    return warning


def _check_open_beam(flat: np.ndarray, dark: np.ndarray, flat_name: str, dark_name: str) -> str | None:
    """Why the open beam does not look brighter than the dark on most of the detector, or None."""
    above = float(np.mean(flat > dark))
    if above >= 0.5:
        return None
    if not np.any(flat) and not np.any(dark):
        warning = f"{flat_name} and {dark_name} are all zero: the transmission means nothing"
    else:
        warning = (f"{flat_name} are not brighter than the {dark_name} on {100 * above:.0f} % of the pixels "
                   f"(median difference {float(np.median(flat - dark)):.3g} ADU): flats and darks swapped, "
                   "or a shutter that did not open?")  # fmt: skip
    logger.warning("flat field: %s", warning)
    return warning


@dataclass(frozen=True)
class PhotonStatistics:
    """Open-beam photon counts and read noise, measured from repeated flats and darks.

    Attributes
    ----------
    gain : float
        ADU per detected photon.
    read_noise : float
        Standard deviation of the additive noise (read noise and dark shot noise), in photons.
    open_beam_counts : numpy.ndarray
        ``(rows, cols)`` detected photons of the open beam per pixel at the exposure of interest.
    """

    gain: float
    read_noise: float
    open_beam_counts: np.ndarray

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for provenance.

        Returns
        -------
        dict
            Gain, read noise and the median open-beam count.
        """
        return {
            "gain_adu_per_photon": self.gain,
            "read_noise_photons": self.read_noise,
            "median_open_beam_photons": float(np.median(self.open_beam_counts)),
            "method": "photon transfer: (var(flats) - var(darks)) / (mean(flats) - mean(darks))",
        }


def photon_statistics(
    flats: Any, darks: Any, *, exposure_ratio: float = 1.0, read_noise_darks: Any = None
) -> PhotonStatistics:
    """Measure gain, read noise and open-beam counts from repeated flats and darks.

    Parameters
    ----------
    flats, darks : array_like
        ``(k, rows, cols)`` raw flats and darks of one exposure, ``k >= 2`` each.
    exposure_ratio : float
        Exposure of interest over the exposure of these flats (counts scale with it).
    read_noise_darks : array_like, optional
        ``(k, rows, cols)`` darks taken at the exposure of interest (``k >= 2``): the additive noise
        is measured on them (dark shot noise grows with the exposure); default ``darks``.

    Returns
    -------
    PhotonStatistics
        The statistics; ``open_beam_counts`` is at the exposure of interest.

    Raises
    ------
    ValueError
        Fewer than two flats or darks, or frames that show no photon noise.
    """
    f, d = _stack(flats, "flats").astype(np.float64), _stack(darks, "darks").astype(np.float64)
    if len(f) < 2 or len(d) < 2:
        raise ValueError(f"photon statistics need >= 2 flats and >= 2 darks, got {len(f)} and {len(d)}")
    if f.shape[1:] != d.shape[1:]:
        raise ValueError(f"flats {f.shape[1:]} and darks {d.shape[1:]} differ in shape")
    signal = f.mean(axis=0) - d.mean(axis=0)
    var_d = d.var(axis=0, ddof=1)
    excess = f.var(axis=0, ddof=1) - var_d
    live = ~dead_pixel_mask(signal)  # dead pixels would bias the gain
    if live.any():
        signal_live, excess_live = signal[live], excess[live]
    else:
        signal_live, excess_live = signal, excess
    if not (signal_live.sum() > 0 and excess_live.sum() > 0):
        raise ValueError("the flats show no photon noise above the darks: cannot measure the gain")
    gain = float(excess_live.sum() / signal_live.sum())
    if read_noise_darks is not None:
        rd = _stack(read_noise_darks, "read-noise darks").astype(np.float64)
        if len(rd) >= 2 and rd.shape[1:] == d.shape[1:]:
            var_d = rd.var(axis=0, ddof=1)
    read_noise = float(np.sqrt(max(float(np.mean(var_d)), 0.0)) / gain)
    counts = np.clip(signal / gain * float(exposure_ratio), 1e-3, None).astype(np.float32)
    counts = np.clip(fill_dead_pixels(counts, dead_pixel_mask(signal)), 1e-3, None)
    return PhotonStatistics(gain, read_noise, counts)
