"""Pure-numpy physics of the simulated transmission X-ray microscope.

No ophyd, bluesky or tiled in here: the devices in :mod:`bluesky_lowdose.devices`
are thin wrappers that call these functions.

Geometry convention (shared with :mod:`bluesky_lowdose.recon`)
----------------------------------------------------------------
A volume is indexed ``vol[z, y, x]`` with voxel centres at ``i - (n - 1) / 2``.
The rotation axis is ``z`` through ``x = y = 0``, i.e. detector column
``(n - 1) / 2`` (the astra/algotom convention, not skimage's ``n // 2``).
A projection at angle ``theta`` (degrees) is indexed ``proj[v, u]`` with ``v``
along ``z`` and the detector coordinate ``u = x cos(theta) + y sin(theta)``.
"""

from .detector import DetectorModel, TXMPhysics
from .phantom import Phantom, make_phantom, make_textured_phantom

__all__ = ["DetectorModel", "Phantom", "TXMPhysics", "make_phantom", "make_textured_phantom"]
