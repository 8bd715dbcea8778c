"""RunEngine and Tiled (shared by the IPython profile and the queueserver RE Manager).

Configured by ``LOWDOSE_*`` environment variables; see ``bluesky_lowdose.beamline``.
"""

from bluesky_lowdose.beamline import BeamlineConfig, setup_run_engine

beamline_config = BeamlineConfig.from_env()
globals().update(setup_run_engine(beamline_config))
