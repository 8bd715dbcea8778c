"""Helpers shared by the plan and streaming tests (imported as a top-level module)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

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


def close_run_engine(engine) -> None:
    """Halt (if needed), stop and close a RunEngine made on its own loop (as bluesky's tests do)."""
    from bluesky.utils import TransitionError

    if engine.state not in ("idle", "panicked"):
        try:
            engine.halt()
        except TransitionError:
            pass
    loop = engine.loop
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join()
    loop.close()


@contextmanager
def run_engine() -> Iterator:
    """A RunEngine on a fresh event loop, closed on exit."""
    from bluesky import RunEngine

    engine = RunEngine({}, loop=asyncio.new_event_loop(), call_returns_result=False)
    try:
        yield engine
    finally:
        close_run_engine(engine)
