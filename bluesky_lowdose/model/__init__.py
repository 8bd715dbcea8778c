"""The CNN enhancer of low-dose projections (Yang et al., Sci. Rep. 8:2575, 2018), Keras 3.

Importing this package loads only numpy: Keras and the backend are imported on first use of
:func:`train`, :func:`load`, :func:`from_bytes`, :class:`Enhancer` or :func:`baseline`.

The public API:

- :func:`train` -- fit a network on pairs of short/long exposure reference frames
- :class:`Enhancer` -- a trained network with its normalisation and provenance
- :func:`load`, :func:`from_bytes` -- restore an :class:`Enhancer` saved with ``save``/``to_bytes``
- :func:`baseline` -- classical denoisers (median, total variation, BM3D) with the same ``enhance`` call
- :class:`Normalization`, :func:`extract_patches`, :func:`reassemble_patches`, :func:`patch_starts` --
  the pure-numpy data handling
- :class:`TrainingError` -- raised when training diverges
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._checks import TrainingError
from .normalization import Normalization
from .patches import extract_patches, patch_starts, reassemble_patches

__all__ = [
    "ARCHITECTURES",
    "Enhancer",
    "Normalization",
    "TrainingError",
    "baseline",
    "extract_patches",
    "from_bytes",
    "load",
    "patch_starts",
    "reassemble_patches",
    "train",
]

#: Names of the networks :func:`train` builds.
ARCHITECTURES = ("unet", "paper")

_LAZY = {
    "train": "training",
    "Enhancer": "enhancer",
    "load": "enhancer",
    "from_bytes": "enhancer",
    "baseline": "baselines",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
