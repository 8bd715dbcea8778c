"""Screenshots of the Tiled web UI for ``docs/ui``: a small scan into an embedded Tiled server, then
headless Chromium (Debian's ``chromium``) on the processed run, its live preview, its volume and
the model registry (the ``models`` container).

Run: ``.venv/bin/python docs/ui/screenshots.py OUT_DIR`` (needs ``chromium`` on PATH).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bluesky import RunEngine

from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
from bluesky_lowdose.devices import make_devices
from bluesky_lowdose.plans import lowdose_tomo_scan
from bluesky_lowdose.storage import TiledServer, make_raw_writer


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with TiledServer(out / "data") as server:
        client = server.client()
        txm = make_devices(server.layout.detector, size=64, seed=3)
        RE = RunEngine({})
        raw = ThreadedCallback(make_raw_writer(client, backup_directory=server.layout.backup))
        RE.subscribe(raw)
        # a second scan with a short Noise2Inverse training, so that the model registry has an entry
        learner = ProjectionEnhancer(client, method="n2i", n2i_options={"steps": 200, "crop": 32},
                                     backup_directory=server.layout.backup, preview_interval=None,
                                     volume_directory=server.layout.volumes)  # fmt: skip
        token = RE.subscribe(learner)
        RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage, num_angles=91))
        learner.wait(timeout=600)
        RE.unsubscribe(token)
        enhancer = ProjectionEnhancer(client, method="none", backup_directory=server.layout.backup,
                                      volume_directory=server.layout.volumes,
                                      preview_interval=0.0)  # fmt: skip
        RE.subscribe(enhancer)
        (uid,) = RE(lowdose_tomo_scan(txm.detector, txm.rotation, txm.shutter, txm.sample_stage,
                                      num_angles=91))  # fmt: skip
        enhancer.wait(timeout=600)
        raw.flush(timeout=60)
        res = enhancer.results[uid]
        print("processed run", res.processed_uid, res.status, res.reasons, flush=True)
        key, base = server.api_key, server.uri.rstrip("/")
        run = f"{base}/ui/browse/processed/{res.processed_uid}"
        pages = {
            "tiled-ui-processed-run": run,
            "tiled-ui-preview": f"{run}/preview/axial",
            "tiled-ui-volume": f"{run}/recon_enhanced/slice",
            "tiled-ui-models": f"{base}/ui/browse/models",
        }
        for name, url in pages.items():
            print(name, url, flush=True)
            # the key in the query is moved into a cookie by the server on the first visit
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--screenshot={out / (name + '.png')}", "--window-size=1400,1000",
                            "--virtual-time-budget=20000", f"{url}?api_key={key}"],
                           check=False, capture_output=True, timeout=120)  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
