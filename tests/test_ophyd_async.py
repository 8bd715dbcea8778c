"""The plan and the streaming enhancer on stock, unmodified ophyd-async devices.

``ophyd_async.sim.SimMotor`` for both stages, ``SimBlobDetector`` (HDF5 files, StreamResource/
StreamDatum, images declared ``[1, H, W]``, exposure through ``prepare(TriggerInfo(livetime))``)
and a soft signal as the shutter. The blob images are not projections of anything: these tests
check that the documents flow, not image quality.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from plan_helpers import SMALL

from bluesky_lowdose.callbacks import ProjectionEnhancer, ThreadedCallback
from bluesky_lowdose.callbacks.frames import FrameResolver
from bluesky_lowdose.plans import PRIMARY, lowdose_tomo_scan
from bluesky_lowdose.storage import PROCESSED, RAW, make_raw_writer, stream_array

SCAN = {**SMALL, "num_angles": 9, "short_exposure": 0.1, "long_exposure": 0.5, "flat_position": 5.0}


def _devices(directory):
    from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices, soft_signal_rw
    from ophyd_async.sim import SimBlobDetector, SimMotor

    directory.mkdir(parents=True, exist_ok=True)
    with init_devices():  # after the RunEngine exists: it owns the event loop
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), directory))
        rot = SimMotor(units="deg")
        samx = SimMotor()
        shutter = soft_signal_rw(str, "close")
    return det, rot, samx, shutter


def _collect(RE):
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def test_plan_sets_the_exposure_through_prepare_and_records_every_frame(RE, tmp_path) -> None:
    det, rot, samx, shutter = _devices(tmp_path / "det")
    docs = _collect(RE)
    RE(lowdose_tomo_scan(det, rot, shutter, samx, **SCAN))
    assert docs[-1][1]["exit_status"] == "success"
    assert docs[0][1]["lowdose"]["exposure_control"] == "prepare"
    descs = {d["uid"]: d for n, d in docs if n == "descriptor"}
    assert descs and all(d["data_keys"]["det"]["shape"] == [1, 240, 320] for d in descs.values())
    counts = Counter(descs[d["descriptor"]]["name"] for n, d in docs if n == "event")
    assert counts[PRIMARY] == 9 and counts["reference_long"] == 2 and counts["dark_short"] == 2
    long_sum = [d["data"] for n, d in docs if n == "event" and descs[d["descriptor"]]["name"] == "flat_long"]
    assert long_sum == [{}] * 3  # every value is in the file (external), none inline
    # the livetime reached the detector: the blob generator scales its counts with the exposure
    # (floored to integers, which adds ~10 % to the ratio at these short exposures; an exposure
    # that did not arrive gives 1)
    resolver, means = FrameResolver(), {}
    for name, doc in docs:
        if name in ("descriptor", "stream_resource", "stream_datum"):
            getattr(resolver, name)(doc)
        elif name == "event":
            for frame in resolver.events(name, doc):
                means.setdefault(frame.stream, []).append(float(frame.image.mean()))
    assert np.mean(means["flat_long"]) / np.mean(means["flat_short"]) == pytest.approx(5.0, rel=0.2)


def test_enhancer_reads_1xHxW_stream_frames_and_writes_the_processed_run(RE, tiled_server, tiled_client):
    det, rot, samx, shutter = _devices(tiled_server.layout.detector / "ophyd-async")
    raw_writer = ThreadedCallback(make_raw_writer(tiled_client, backup_directory=None))
    # method "none": the blobs ignore shutter and sample stage (flats equal darks), so there is
    # nothing to learn; the documents, the correction and the reconstruction are what is tested
    enhancer = ProjectionEnhancer(
        tiled_client, method="none", reconstruct=True, volume_directory=tiled_server.layout.volumes
    )
    RE.subscribe(raw_writer)
    RE.subscribe(enhancer)
    (uid,) = RE(lowdose_tomo_scan(det, rot, shutter, samx, **SCAN))
    assert enhancer.wait(timeout=300) and raw_writer.flush(timeout=60)
    raw = tiled_client[RAW][uid]
    assert raw.metadata["stop"]["exit_status"] == "success"
    frames = stream_array(raw, PRIMARY, "det").read()
    assert frames.shape[0] == 9 and frames.shape[-2:] == (240, 320)
    res = enhancer.results[uid]
    assert res.status == "complete", res.reasons
    # the blobs ignore the shutter, so the flats are no brighter than the darks: said, not silent
    assert any("flats and darks swapped, or a shutter that did not open" in w for w in res.warnings), (
        res.warnings
    )
    processed = tiled_client[PROCESSED][res.processed_uid]
    assert {"recon_raw", "recon_enhanced", "metrics", "provenance"} <= set(processed)
    volume = stream_array(processed, "recon_raw", "slice").read()
    assert volume.shape == (240, 320, 320) and np.isfinite(volume).all()  # rows are slices, width the field
    assert processed.metadata["stop"]["exit_status"] == "success"


def test_pause_closes_a_soft_signal_shutter(RE, tmp_path) -> None:
    import bluesky.preprocessors as bpp
    from bluesky.run_engine import call_in_bluesky_event_loop
    from bluesky.utils import Msg

    det, rot, samx, shutter = _devices(tmp_path / "det")
    docs = _collect(RE)
    seen = {"n": 0}
    states: list[str] = []

    async def watch_shutter() -> None:  # ophyd-async subscriptions live on the RunEngine's loop
        shutter.subscribe_reading(lambda reading: states.append(reading[shutter.name]["value"]))

    call_in_bluesky_event_loop(watch_shutter())

    def pause_in_rotation(msg):
        if msg.command == "save":
            seen["n"] += 1
            if seen["n"] == 2 * (2 + 3 + 2) + 4:  # the 4th rotation frame

                def then_pause():
                    yield msg
                    yield Msg("pause", defer=False)

                return then_pause(), None
        return None, None

    with pytest.raises(RunEngineInterrupted):
        RE(bpp.plan_mutator(lowdose_tomo_scan(det, rot, shutter, samx, **SCAN), pause_in_rotation))
    assert RE.state == "paused"
    assert call_in_bluesky_event_loop(shutter.get_value()) == "close"
    at_pause = len(states)
    RE.resume()
    assert docs[-1][1]["exit_status"] == "success"
    descs = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    primary = {d["seq_num"] for n, d in docs if n == "event" and descs[d["descriptor"]] == PRIMARY}
    assert primary == set(range(1, 10))  # the frame after the pause is re-taken (same seq_num)
    # closed for the pause, reopened for the rest of the rotation, closed at the end
    assert states[at_pause - 2 : at_pause] == ["open", "close"]
    assert states[at_pause:] == ["open", "close"]


def test_default_shutter_values_match_an_enum_shutter_without_regard_to_case(RE, tmp_path) -> None:
    """An enum shutter spelled ``Open``/``Close`` (as EPICS shutters often are) takes the plan's
    defaults ``"open"``/``"close"``: the plan uses the shutter's own states and records them."""
    from bluesky.run_engine import call_in_bluesky_event_loop
    from ophyd_async.core import StrictEnum, init_devices, soft_signal_rw

    class ShutterState(StrictEnum):
        CLOSE = "Close"
        OPEN = "Open"

    det, rot, samx, _ = _devices(tmp_path / "det")
    with init_devices():
        shutter = soft_signal_rw(ShutterState, ShutterState.CLOSE)
    docs = _collect(RE)
    RE(lowdose_tomo_scan(det, rot, shutter, samx, **SCAN))
    assert docs[-1][1]["exit_status"] == "success", docs[-1][1]
    args = docs[0][1]["plan_args"]
    assert (args["shutter_open"], args["shutter_close"]) == ("Open", "Close")
    assert call_in_bluesky_event_loop(shutter.get_value()) == ShutterState.CLOSE
    # a value that is no state of the shutter is still refused before anything moves
    with pytest.raises(ValueError, match="not a state"):
        RE(lowdose_tomo_scan(det, rot, shutter, samx, shutter_open="opened", **SCAN))
