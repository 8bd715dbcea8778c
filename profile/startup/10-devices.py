"""The simulated TXM: ``txm`` and ``txm_cam``, ``rotation``, ``shutter``, ``sample_x``."""

from bluesky_lowdose.beamline import setup_devices

globals().update(setup_devices(beamline_config))  # noqa: F821 - defined by 00-setup.py
