"""Flat/dark correction, rotation centre and tomographic reconstruction (pure; no bluesky).

Heavy dependencies (numba, algotom, scikit-image, TomoPy) are imported inside the functions
that need them.

Geometry: :func:`reconstruct` inverts :meth:`bluesky_lowdose.physics.Phantom.project_many`;
the volume comes back indexed ``[z, y, x]`` like
:meth:`bluesky_lowdose.physics.Phantom.voxelize`.
"""

from .backends import BACKENDS, available_backends, resolve_backend
from .center import find_center
from .core import reconstruct
from .correction import flat_dark_correct, remove_stripes, to_line_integrals, transmission_to_line_integrals
from .filters import FILTERS

__all__ = [
    "BACKENDS",
    "FILTERS",
    "available_backends",
    "find_center",
    "flat_dark_correct",
    "reconstruct",
    "remove_stripes",
    "resolve_backend",
    "to_line_integrals",
    "transmission_to_line_integrals",
]
