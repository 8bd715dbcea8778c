"""IPython profile of bluesky-lowdose: ``ipython --profile-dir=profile/ipython``.

The startup files are those of the queueserver (``startup`` is a link to ``../startup``).
"""

c = get_config()  # noqa: F821 - provided by IPython when it loads this file
c.TerminalIPythonApp.display_banner = True
c.InteractiveShell.banner2 = (
    "bluesky-lowdose: RE, txm_cam, rotation, shutter, sample_x, lowdose_tomo_scan, tiled_client, raw\n"
    "  RE(lowdose_tomo_scan(txm_cam, rotation, shutter, sample_x))\n"
)
c.HistoryManager.hist_file = ":memory:"  # keep the repository clean
