"""Ramp filters of filtered back-projection (pure numpy/scipy).

The ramp is the band-limited spatial-domain kernel of Kak & Slaney (ch. 3, eq. 61):
``h[0] = 1/4``, ``h[k] = -1/(pi k)^2`` for odd ``k`` and 0 for even ``k``, whose discrete
Fourier transform has no DC offset (unlike sampling ``|f|`` directly).  It is multiplied by
an apodisation window of the normalised frequency ``t = |f| / f_Nyquist``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FILTERS", "filter_sinogram", "filtered_spectrum", "ramp_response", "shift_rows", "window"]

#: Apodisation windows accepted by :func:`ramp_response`.
FILTERS = ("parzen", "hann", "hamming", "shepp-logan", "cosine", "ramp")


def window(name: str, t: np.ndarray) -> np.ndarray:
    """Apodisation window at normalised frequencies ``t = |f| / f_Nyquist`` in [0, 1].

    Parameters
    ----------
    name : str
        One of :data:`FILTERS`.  ``"parzen"`` is the cubic B-spline window used by TomoPy's
        gridrec and in Yang et al. (2018); ``"ramp"`` applies no apodisation (Ram-Lak).
    t : numpy.ndarray
        Normalised absolute frequencies.

    Returns
    -------
    numpy.ndarray
        The window, same shape as ``t``.
    """
    a = np.clip(np.abs(np.asarray(t, dtype=np.float64)), 0.0, 1.0)
    if name == "parzen":
        # scipy.signal.windows.parzen(M) at |n| / (M / 2) = t: 1 at DC, 0 at Nyquist
        x = a
        return np.where(x <= 0.5, 1.0 - 6.0 * x**2 * (1.0 - x), 2.0 * (1.0 - x) ** 3)
    if name == "hann":
        return 0.5 * (1.0 + np.cos(np.pi * a))
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * a)
    if name == "shepp-logan":
        return np.sinc(a / 2.0)
    if name == "cosine":
        return np.cos(np.pi * a / 2.0)
    if name == "ramp":
        return np.ones_like(a)
    raise ValueError(f"unknown filter {name!r}; choose one of {', '.join(FILTERS)}")


def padded_length(width: int) -> int:
    """Return the FFT length for a detector ``width``: a power of two >= 2 * width (no circular wrap).

    Parameters
    ----------
    width : int
        Detector width in pixels.

    Returns
    -------
    int
        The padded length (at least 64).
    """
    return int(max(64, 2 ** int(np.ceil(np.log2(2 * width)))))


def ramp_response(length: int, name: str = "parzen") -> np.ndarray:
    """Real frequency response of the windowed ramp for an ``rfft`` of ``length`` samples.

    Parameters
    ----------
    length : int
        FFT length (even).
    name : str
        Apodisation window, see :func:`window`.

    Returns
    -------
    numpy.ndarray
        The ``length // 2 + 1`` float64 values.
    """
    k = np.arange(length)
    k = np.where(k > length // 2, k - length, k)  # circular, symmetric kernel
    h = np.zeros(length)
    h[k == 0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    resp = np.real(np.fft.rfft(h))
    t = np.fft.rfftfreq(length) / 0.5
    return resp * window(name, t)


def filter_sinogram(sino: np.ndarray, name: str = "parzen", *, workers: int | None = None) -> np.ndarray:
    """Apply the windowed ramp filter along the last axis (detector ``u``).

    The rows are edge-padded symmetrically to :func:`padded_length` before the FFT, which
    suppresses truncation artefacts when the sample touches the field of view.

    Parameters
    ----------
    sino : numpy.ndarray
        ``(..., width)`` line integrals.
    name : str
        Apodisation window.
    workers : int, optional
        Threads used by ``scipy.fft``.

    Returns
    -------
    numpy.ndarray
        Float32 array of the same shape.
    """
    length = padded_length(sino.shape[-1])
    return _apply(sino, ramp_response(length, name), workers)


def apodize(sino: np.ndarray, name: str = "parzen", *, workers: int | None = None) -> np.ndarray:
    """Apply only the apodisation window along ``u`` (no ramp): the resolution that a
    reconstruction with this filter, projected again, gives the data.

    Parameters
    ----------
    sino : numpy.ndarray
        ``(..., width)`` line integrals.
    name : str
        Apodisation window (:data:`FILTERS`).
    workers : int, optional
        Threads used by ``scipy.fft``.

    Returns
    -------
    numpy.ndarray
        Float32 array of the same shape.
    """
    length = padded_length(sino.shape[-1])
    return _apply(sino, window(name, np.fft.rfftfreq(length) * 2.0), workers)


def filtered_spectrum(
    sino: np.ndarray, name: str = "parzen", *, workers: int | None = None
) -> tuple[np.ndarray, int]:
    """The ``rfft`` of the edge-padded rows times the windowed ramp: the filtered projections
    in Fourier space, as :func:`filter_sinogram` computes them before its inverse FFT.

    Parameters
    ----------
    sino : numpy.ndarray
        ``(..., width)`` line integrals.
    name : str
        Apodisation window (:data:`FILTERS`).
    workers : int, optional
        Threads used by ``scipy.fft``.

    Returns
    -------
    spectrum : numpy.ndarray
        Complex64 ``(..., length // 2 + 1)`` for ``length = padded_length(width)``.
    left : int
        Padding before detector pixel 0: pixel ``u`` is sample ``u + left`` of the padded row.
    """
    return _spectrum(sino, ramp_response(padded_length(sino.shape[-1]), name), workers)


def _spectrum(sino: np.ndarray, response: np.ndarray, workers: int | None) -> tuple[np.ndarray, int]:
    from scipy import fft

    width = sino.shape[-1]
    length = padded_length(width)
    left = (length - width) // 2
    pad = [(0, 0)] * (sino.ndim - 1) + [(left, length - width - left)]
    padded = np.pad(np.asarray(sino, dtype=np.float32), pad, mode="edge")
    spec = fft.rfft(padded, axis=-1, workers=workers)
    spec *= response.astype(np.complex64 if np.iscomplexobj(response) else np.float32)
    return spec, left


def _apply(sino: np.ndarray, response: np.ndarray, workers: int | None) -> np.ndarray:
    """Multiply the spectrum of edge-padded rows by ``response`` (rfft of :func:`padded_length`)."""
    from scipy import fft

    width = sino.shape[-1]
    spec, left = _spectrum(sino, response, workers)
    out = fft.irfft(spec, n=padded_length(width), axis=-1, workers=workers)
    return np.ascontiguousarray(out[..., left : left + width], dtype=np.float32)


def shift_rows(sino: np.ndarray, shift: float, *, workers: int | None = None) -> np.ndarray:
    """Shift every row along ``u`` by ``shift`` pixels (a Fourier phase ramp on the edge-padded
    rows: no interpolation blur), e.g. to move the rotation axis to the detector's centre for a
    library that assumes it there.

    Parameters
    ----------
    sino : numpy.ndarray
        ``(..., width)`` rows.
    shift : float
        Pixels; positive moves the content towards higher ``u``.
    workers : int, optional
        Threads used by ``scipy.fft``.

    Returns
    -------
    numpy.ndarray
        Float32 array of the same shape.
    """
    length = padded_length(sino.shape[-1])
    k = np.fft.rfftfreq(length)
    return _apply(sino, np.exp(-2j * np.pi * k * shift), workers)
