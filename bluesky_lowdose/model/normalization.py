"""Normalisation of frames with statistics of the training pairs, and its exact inverse (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Normalization"]


@dataclass(frozen=True)
class Normalization:
    """The paper's z-score then min-max normalisation, with fixed statistics.

    ``forward(x) = ((x - mean) / std - z_low) / (z_high - z_low)`` with ``z_low``/``z_high`` the
    minimum/maximum of the z-scored training data widened by ``margin`` times their span on each
    side.  The same affine map is applied to every frame (never per-frame statistics, which would
    give each projection its own scale and break the sinogram), and :meth:`inverse` undoes it
    exactly, so enhanced frames come back in the input's units.

    Values outside the training range are not clipped: a frame brighter than anything in training
    maps above 1 and the network (linear output) still sees and returns it.  The margin keeps
    moderately brighter/darker frames inside ``[0, 1]``.

    Parameters
    ----------
    mean, std : float
        Z-score statistics of the training data.
    z_low, z_high : float
        Range of the z-scored data that maps onto ``[0, 1]`` (margin included).
    margin : float
        The margin used to widen the range (recorded for provenance).
    """

    mean: float
    std: float
    z_low: float
    z_high: float
    margin: float = 0.1

    def __post_init__(self) -> None:
        values = (self.mean, self.std, self.z_low, self.z_high, self.margin)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"normalisation statistics must be finite, got {self}")
        if self.std <= 0 or self.z_high <= self.z_low:
            raise ValueError(f"normalisation needs std > 0 and z_high > z_low, got {self}")

    @classmethod
    def fit(cls, *arrays: np.ndarray, margin: float = 0.1) -> Normalization:
        """Fit the statistics to the given arrays pooled together.

        Parameters
        ----------
        *arrays : numpy.ndarray
            Training data (short and long reference frames), any real dtype.
        margin : float
            Fraction of the data's span added below its minimum and above its maximum.

        Returns
        -------
        Normalization
            The fitted statistics.

        Raises
        ------
        ValueError
            No data, a negative margin, or constant data (no spread to normalise).
        """
        if not arrays:
            raise ValueError("Normalization.fit needs at least one array")
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a non-negative number, got {margin!r}")
        count = sum(a.size for a in arrays)
        total = sum(float(np.sum(a, dtype=np.float64)) for a in arrays)
        mean = total / count
        sq = sum(float(np.sum((np.asarray(a, dtype=np.float64) - mean) ** 2)) for a in arrays)
        std = float(np.sqrt(sq / count))
        lo = min(float(np.min(a)) for a in arrays)
        hi = max(float(np.max(a)) for a in arrays)
        if not std > 0 or hi <= lo:
            raise ValueError("training data is constant: it has no spread to normalise")
        z_lo, z_hi = (lo - mean) / std, (hi - mean) / std
        span = z_hi - z_lo
        return cls(mean=mean, std=std, z_low=z_lo - margin * span, z_high=z_hi + margin * span, margin=margin)

    @property
    def scale(self) -> float:
        """Input units per normalised unit.

        Returns
        -------
        float
            ``std * (z_high - z_low)``.
        """
        return self.std * (self.z_high - self.z_low)

    @property
    def offset(self) -> float:
        """The input value that maps to 0.

        Returns
        -------
        float
            ``mean + std * z_low``.
        """
        return self.mean + self.std * self.z_low

    def forward(self, x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Map data in input units to the network's units.

        Parameters
        ----------
        x : numpy.ndarray
            Data in input units, any real dtype.
        dtype : type
            Output dtype.

        Returns
        -------
        numpy.ndarray
            Normalised data (computed in float64, returned as ``dtype``).
        """
        return ((np.asarray(x, dtype=np.float64) - self.offset) / self.scale).astype(dtype, copy=False)

    def inverse(self, y: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Map network output back to input units (the exact inverse of :meth:`forward`).

        Parameters
        ----------
        y : numpy.ndarray
            Normalised data.
        dtype : type
            Output dtype.

        Returns
        -------
        numpy.ndarray
            Data in input units.
        """
        return (np.asarray(y, dtype=np.float64) * self.scale + self.offset).astype(dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns
        -------
        dict
            The fields as plain floats.
        """
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        data : dict
            Output of :meth:`to_dict`.

        Returns
        -------
        Normalization
            The statistics.
        """
        return cls(**{k: float(data[k]) for k in ("mean", "std", "z_low", "z_high", "margin")})
