"""Helpers shared by the plan and streaming tests (imported as a top-level module)."""

from __future__ import annotations

import bluesky.preprocessors as bpp
from bluesky.utils import Msg

#: A small scan: 7 angles, 2 darks and 3 flats per exposure, 2 reference angles.
SMALL = {"num_angles": 7, "num_darks": 2, "num_flats": 3, "reference_angles": (30.0, 120.0)}


def pause_after_primary_trigger(plan, txm, nth: int, small: dict | None = None, *, command: str = "trigger"):
    """Inject an immediate pause right after the nth detector ``command`` message counted from
    the first rotation frame: ``"trigger"`` (mid-exposure) or ``"read"`` (between the read that
    collects the frame's StreamDatum and the save that emits it)."""
    state = {"count": 0, "done": False}
    p = small or SMALL
    n_before = 2 * (p["num_darks"] + p["num_flats"] + len(p["reference_angles"]))

    def mutate(msg):
        if msg.command == command and msg.obj is txm.detector:
            state["count"] += 1
            if state["count"] == n_before + nth and not state["done"]:
                state["done"] = True

                def then_pause():
                    yield msg
                    yield Msg("pause", defer=False)

                return then_pause(), None
        return None, None

    return bpp.plan_mutator(plan, mutate)
