"""Detector model of the simulated TXM: Beer-Lambert, Poisson photons, dark current, read noise.

Counts in one pixel for an exposure ``t`` (seconds)::

    photons ~ Poisson(flux * t * flat(v, u) * exp(-mu * line_integral))   (shutter open)
    dark    ~ Poisson(dark_rate * t)
    light   = psf * photons                                   (scintillator + optics blur)
    adu     = round(gain * (light + dark) + bias + Normal(0, read_noise))

The point-spread function (``psf_sigma``, a Gaussian of that many pixels) acts on the detected
photons, so it blurs the signal *and* its noise, which is then correlated between neighbouring
pixels, as a scintillator does; dark current and read noise arise after it, in the camera.
Dead pixels (``dead_pixels``) record no light: only dark current and read noise.

so a long exposure has a higher SNR than a short one by ``sqrt(t_long / t_short)`` in the
photon-limited regime, exactly as counting statistics say.  Frames are ``uint16`` and
saturate at 65535 like a real 16-bit camera (a warning is logged when they do).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .phantom import Phantom

__all__ = ["DetectorModel", "TXMPhysics", "flat_field_profile"]

logger = logging.getLogger(__name__)

ADU_MAX = 65535


def flat_field_profile(shape: tuple[int, int], *, seed: int = 1, strength: float = 1.0) -> np.ndarray:
    """A realistic, non-uniform beam profile normalised to a maximum near 1.

    Combines a Gaussian-like beam falloff (about 25 % at the corners), horizontal bands
    from the monochromator/scintillator (a few %, smooth along ``u``), and fixed-pattern
    pixel gain variation (1 %).

    Parameters
    ----------
    shape : tuple of int
        ``(rows, columns)`` of the detector.
    seed : int
        Seed of the fixed pattern.
    strength : float
        Scales every non-uniformity (0 gives a perfectly flat beam).

    Returns
    -------
    numpy.ndarray
        float64 array of the relative intensity per pixel.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y = np.linspace(-1.0, 1.0, ny)[:, None]
    x = np.linspace(-1.0, 1.0, nx)[None, :]
    beam = np.exp(-0.15 * strength * (x**2 + 1.5 * y**2))
    k = np.arange(1, 6)[:, None]
    phases = rng.uniform(0, 2 * np.pi, (5, 1))
    amps = rng.uniform(0.002, 0.01, (5, 1)) * strength
    bands = 1.0 + np.sum(amps * np.sin(np.pi * k * 3 * y.T + phases), axis=0)[:, None]
    pixel_gain = 1.0 + 0.01 * strength * rng.standard_normal(shape)
    return beam * bands * pixel_gain


@dataclass
class DetectorModel:
    """Noise and gain model of a 16-bit X-ray camera behind a scintillator.

    Parameters
    ----------
    shape : tuple of int
        ``(rows, columns)``.
    flux : float
        Detected photons per pixel per second in the brightest part of the open beam.
    dark_rate : float
        Dark-current electrons per pixel per second.
    bias : float
        Constant offset in ADU.
    read_noise : float
        Standard deviation of the Gaussian read noise, in ADU.
    gain : float
        ADU per detected photon.
    flat_strength : float
        Non-uniformity of the beam (0: flat).
    seed : int
        Seed of the fixed-pattern flat field.
    psf_sigma : float
        Standard deviation (pixels) of the Gaussian blur of the scintillator and optics, applied
        to the photons (signal and noise); 0: none.
    dead_pixels : int
        Pixels (at seeded random places) that detect no light.
    """

    shape: tuple[int, int]
    flux: float = 300.0
    dark_rate: float = 2.0
    bias: float = 100.0
    read_noise: float = 2.5
    gain: float = 1.0
    flat_strength: float = 1.0
    seed: int = 1
    psf_sigma: float = 0.0
    dead_pixels: int = 0
    flat: np.ndarray = field(init=False, repr=False)
    live: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.flux <= 0 or self.gain <= 0:
            raise ValueError("flux and gain must be positive")
        if self.dark_rate < 0 or self.read_noise < 0 or self.bias < 0:
            raise ValueError("dark_rate, read_noise and bias must be non-negative")
        if not (np.isfinite(self.psf_sigma) and self.psf_sigma >= 0):
            raise ValueError(f"psf_sigma must be >= 0 pixels, got {self.psf_sigma!r}")
        n_pix = int(np.prod(self.shape))
        if not 0 <= self.dead_pixels < n_pix:
            raise ValueError(f"dead_pixels must lie in [0, {n_pix}), got {self.dead_pixels}")
        self.flat = flat_field_profile(tuple(self.shape), seed=self.seed, strength=self.flat_strength)
        self.live = np.ones(self.shape, np.float64)
        if self.dead_pixels:
            rng = np.random.default_rng([self.seed, 3])
            self.live.ravel()[rng.choice(n_pix, self.dead_pixels, replace=False)] = 0.0

    def _blur(self, image: np.ndarray) -> np.ndarray:
        """Scintillator/optics blur, then the camera's dead pixels."""
        if self.psf_sigma > 0:
            from scipy.ndimage import gaussian_filter

            image = gaussian_filter(np.asarray(image, np.float64), self.psf_sigma, mode="nearest")
        return image * self.live if self.dead_pixels else image

    def expected_counts(
        self, transmission: np.ndarray | None, exposure: float, *, shutter_open: bool = True
    ) -> np.ndarray:
        """Noise-free mean signal in ADU (float64) for a transmission map."""
        self._check_exposure(exposure)
        dark = self.gain * self.dark_rate * exposure + self.bias
        if not shutter_open:
            return np.full(self.shape, dark, dtype=np.float64)
        t = 1.0 if transmission is None else transmission
        return self.gain * self._blur(self.flux * exposure * self.flat * t) + dark

    def expose(
        self,
        transmission: np.ndarray | None,
        exposure: float,
        *,
        shutter_open: bool = True,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """One noisy frame in ADU.

        Parameters
        ----------
        transmission : numpy.ndarray or None
            Beer-Lambert transmission per pixel; None for an empty beam (flat field).
        exposure : float
            Exposure time in seconds (> 0).
        shutter_open : bool
            A closed shutter gives a dark frame.
        rng : numpy.random.Generator
            Source of the Poisson and read noise.

        Returns
        -------
        numpy.ndarray
            ``uint16`` frame of ``shape``.
        """
        self._check_exposure(exposure)
        if shutter_open:
            t = 1.0 if transmission is None else np.clip(transmission, 0.0, 1.0)
            photons = self._blur(rng.poisson(self.flux * exposure * self.flat * t))
        else:
            photons = 0
        dark = rng.poisson(self.dark_rate * exposure, self.shape)
        adu = self.gain * (photons + dark) + self.bias + self.read_noise * rng.standard_normal(self.shape)
        adu = np.rint(adu)
        if adu.max() > ADU_MAX:
            logger.warning("detector saturated: %d pixels above %d ADU", int((adu > ADU_MAX).sum()), ADU_MAX)
        return np.clip(adu, 0, ADU_MAX).astype(np.uint16)

    @staticmethod
    def _check_exposure(exposure: float) -> None:
        if not np.isfinite(exposure) or exposure <= 0:
            raise ValueError(f"exposure time must be a positive number of seconds, got {exposure!r}")


class TXMPhysics:
    """Phantom + attenuation scale + detector: what the simulated microscope sees.

    Parameters
    ----------
    phantom : Phantom
        The sample.
    detector : DetectorModel, optional
        Defaults to a ``DetectorModel`` of the phantom's size.
    max_attenuation : float
        ``mu * line_integral`` at the most attenuating pixel of the 0 and 45 degree
        projections; sets the attenuation scale (2.5 means 8 % transmission there).
    pixel_size_mm : float
        Detector pixel size projected into the sample plane, in mm; converts the sample
        stage position to a shift on the detector.
    seed : int
        Seed of the photon and read noise stream.
    cache_size : int
        Number of clean projections kept (reference angles are revisited).
    """

    def __init__(
        self,
        phantom: Phantom,
        detector: DetectorModel | None = None,
        *,
        max_attenuation: float = 2.5,
        pixel_size_mm: float = 0.001,
        seed: int = 2,
        cache_size: int = 8,
    ) -> None:
        if max_attenuation <= 0:
            raise ValueError("max_attenuation must be positive")
        if pixel_size_mm <= 0:
            raise ValueError("pixel_size_mm must be positive")
        self.phantom = phantom
        self.detector = detector or DetectorModel((phantom.size, phantom.size))
        if tuple(self.detector.shape) != (phantom.size, phantom.size):
            raise ValueError(
                f"detector shape {self.detector.shape} does not match the phantom size {phantom.size}"
            )
        thickest = max(float(phantom.project(a).max()) for a in (0.0, 45.0))
        self.mu = max_attenuation / max(thickest, 1e-12)
        self.pixel_size_mm = pixel_size_mm
        self.rng = np.random.default_rng(seed)
        self._cache: OrderedDict[tuple[float, float], np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape ``(rows, columns)``."""
        return (int(self.detector.shape[0]), int(self.detector.shape[1]))

    def transmission(self, theta_deg: float, sample_offset_mm: float = 0.0) -> np.ndarray | None:
        """Beer-Lambert transmission at an angle; None when the sample is out of the beam."""
        shift = sample_offset_mm / self.pixel_size_mm
        reach = self.phantom.size * np.sqrt(2.0)  # the sample's extent at any angle
        if abs(shift) >= reach:
            return None
        key = (round(float(theta_deg), 9), round(float(shift), 6))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t = np.exp(-self.mu * self.phantom.project(theta_deg, shift=shift).astype(np.float64))
        self._cache[key] = t
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return t

    def frame(
        self, theta_deg: float, exposure: float, *, shutter_open: bool = True, sample_offset_mm: float = 0.0
    ) -> np.ndarray:
        """A noisy ``uint16`` frame for the current state of the microscope."""
        t = self.transmission(theta_deg, sample_offset_mm) if shutter_open else None
        return self.detector.expose(t, exposure, shutter_open=shutter_open, rng=self.rng)

    def recorded_line_integrals(self, theta_deg: np.ndarray) -> np.ndarray:
        """Noise-free line integrals as the detector records them: ``-log`` of the blurred beam
        through the sample over the blurred open beam (its point-spread function included; dead
        pixels, which the flat policy fills, are not).

        Without blur these are ``mu`` times the exact line integrals. With blur they are what a
        perfect long exposure of this instrument would give: the reference of a dose comparison
        (a denoiser cannot undo the scintillator's blur, a full-dose scan has it too).

        Parameters
        ----------
        theta_deg : numpy.ndarray
            Angles, degrees.

        Returns
        -------
        numpy.ndarray
            ``(len(theta), rows, columns)`` float32.
        """
        theta = np.atleast_1d(np.asarray(theta_deg, np.float64))
        sigma = self.detector.psf_sigma
        if sigma <= 0:
            return np.stack([self.mu * self.phantom.project(float(a)) for a in theta]).astype(np.float32)
        from scipy.ndimage import gaussian_filter

        flat = self.detector.flat.astype(np.float64)
        beam = gaussian_filter(flat, sigma, mode="nearest")
        # the transmissions the scans used (cached): the projections are not computed again
        out = [
            -np.log(gaussian_filter(flat * self.transmission(a), sigma, mode="nearest") / beam) for a in theta
        ]
        return np.stack(out).astype(np.float32)

    def ideal_frame(
        self, theta_deg: float, exposure: float, *, shutter_open: bool = True, sample_offset_mm: float = 0.0
    ) -> np.ndarray:
        """The noise-free mean frame (float64, ADU): the simulator's perfect reference."""
        t = self.transmission(theta_deg, sample_offset_mm) if shutter_open else None
        return self.detector.expected_counts(t, exposure, shutter_open=shutter_open)
