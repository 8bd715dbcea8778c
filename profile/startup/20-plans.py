"""The plans: ``lowdose_tomo_scan`` (annotated for the queueserver), ``count``, ``mv``."""

from bluesky_lowdose.beamline import setup_plans

globals().update(setup_plans(txm))  # noqa: F821 - defined by 10-devices.py
