"""Low-dose X-ray tomography with CNN enhancement for the Bluesky ecosystem.

Subpackages are imported lazily: ``import bluesky_lowdose`` loads nothing heavy
(no TensorFlow, no Tiled server, no ophyd).

- :mod:`bluesky_lowdose.physics` -- pure-numpy phantom, projector and detector model
- :mod:`bluesky_lowdose.devices` -- ophyd devices of the simulated TXM
- :mod:`bluesky_lowdose.plans` -- bluesky plans (``lowdose_tomo_scan``)
- :mod:`bluesky_lowdose.storage` -- embedded / remote Tiled server and writers
- :mod:`bluesky_lowdose.model` -- the CNN enhancer (Keras 3)
- :mod:`bluesky_lowdose.recon` -- flat/dark correction and reconstruction
- :mod:`bluesky_lowdose.callbacks` -- streaming enhancement during a scan
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bluesky-lowdose")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
