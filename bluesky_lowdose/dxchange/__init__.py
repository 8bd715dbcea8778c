"""Data Exchange HDF5 (APS/TomoBank layout): read/write, export of runs, offline enhancement.

Importing this package loads numpy only: h5py, Tiled, bluesky and Keras are imported inside
the functions that need them.

- :class:`DataExchange`, :func:`read_dxfile`, :func:`write_dxfile`, :func:`write_enhanced`,
  :class:`DataExchangeError` -- the file format (``io``: the schema; ``read``, ``write``: h5py)
- :func:`export_run`, :func:`run_to_dataexchange` -- a raw run from Tiled to a file (``runs``)
- :func:`enhance_file` -- offline enhancement through
  :func:`bluesky_lowdose.pipeline.enhance_scan` (``offline``); :func:`training_pairs`,
  :func:`projection_flat_field` -- the file's references and flat/dark policy (``pairs``).
  Angle matching is :mod:`bluesky_lowdose.pipeline.angles`'s (one import path per name).
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from .io import DX_PATHS, DataExchange, DataExchangeError
from .read import read_dxfile
from .write import write_dxfile, write_enhanced

__all__ = [
    "DX_PATHS",
    "DataExchange",
    "DataExchangeError",
    "EnhanceResult",
    "enhance_file",
    "export_run",
    "projection_flat_field",
    "read_dxfile",
    "run_to_dataexchange",
    "training_pairs",
    "write_dxfile",
    "write_enhanced",
]

_LAZY = {
    "export_run": "runs",
    "run_to_dataexchange": "runs",
    "enhance_file": "offline",
    "EnhanceResult": "offline",
    "training_pairs": "pairs",
    "projection_flat_field": "pairs",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
