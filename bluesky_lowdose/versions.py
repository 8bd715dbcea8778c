"""Software versions recorded with every result (one list for every entry point)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["software_versions"]

#: Distributions whose versions go into provenance when installed.
DISTRIBUTIONS = (
    "bluesky-lowdose", "numpy", "scipy", "keras", "tensorflow-cpu", "tensorflow", "torch", "jax",
    "numba", "finufft", "scikit-image", "bm3d", "algotom", "tomopy", "h5py",
    "bluesky", "event-model", "ophyd", "tiled", "bluesky-tiled-plugins", "databroker",
)  # fmt: skip


def software_versions(reconstruction_backend: str | None = None) -> dict[str, str]:
    """Versions of the installed packages this result depends on, the Keras backend and Python.

    Parameters
    ----------
    reconstruction_backend : str, optional
        Recorded as ``reconstruction_backend``.

    Returns
    -------
    dict
        ``{distribution: version}`` of those installed, plus ``python`` and ``keras_backend``.
    """
    out: dict[str, str] = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass  # not installed: nothing to record
    out["keras_backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    if reconstruction_backend:
        out["reconstruction_backend"] = reconstruction_backend
    return out
