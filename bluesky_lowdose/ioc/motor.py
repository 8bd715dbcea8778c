"""The IOC's motor record (rotation and sample stage)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from caproto.server import PVGroup, pvproperty

from .pvs import (
    _choice,
)

__all__ = ["SimMotorRecord"]

logger = logging.getLogger("bluesky_lowdose.ioc.server")  # one logger for the IOC


# -- motors ---------------------------------------------------------------------------------
class SimMotorRecord(PVGroup):
    """A motor record that moves its readback towards ``.VAL`` at ``.VELO`` EGU/s.

    The same pattern as caproto's ``ioc_examples/fake_motor_record.py`` (a ``record="motor"``
    pvproperty and a simulation task), written for this IOC: a put to ``.VAL`` wakes the
    task at once, ``.DMOV`` drops to 0 and comes back to 1 for every put (also a put to the
    current position, which ``ophyd.EpicsMotor`` waits for), ``.VELO`` is read on every tick
    (a change applies to the move in progress; ``VELO <= 0`` holds the motor still), ``.STOP``
    or ``.SPMG = Stop/Pause`` ends the move where it is, and a put outside ``.LLM``/``.HLM``
    is refused (``.LVIO = 1``, no move).

    Parameters
    ----------
    *args
        ``prefix`` (the record name), passed to :class:`caproto.server.PVGroup`.
    velocity : float
        Initial ``.VELO`` (EGU/s).
    limits : tuple of float
        ``(.LLM, .HLM)``; also the control limits of ``.VAL`` that ophyd checks.
    egu : str
        Engineering units.
    precision : int
        Display precision.
    tick : float
        Seconds between readback updates during a move.
    **kwargs
        Passed to :class:`caproto.server.PVGroup` (``parent``, ``name``, ...).
    """

    motor = pvproperty(value=0.0, name="", record="motor", precision=3, doc="motor record")

    def __init__(
        self,
        *args: Any,
        velocity: float = 1.0,
        limits: tuple[float, float] = (-100.0, 100.0),
        egu: str = "",
        precision: int = 3,
        tick: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.velocity = float(velocity)
        self.limits = (float(limits[0]), float(limits[1]))
        self.egu = egu
        self.precision = int(precision)
        self.tick = float(tick)
        self._requests = 0
        self._wake: asyncio.Event | None = None

    @property
    def position(self) -> float:
        """The user readback ``.RBV``."""
        return float(self.motor.field_inst.user_readback_value.value)

    @motor.putter
    async def motor(self, instance: Any, value: float) -> float:
        fields = instance.field_inst
        low, high = fields.user_low_limit.value, fields.user_high_limit.value
        if low < high and not low <= value <= high:
            await fields.limit_violation.write(1)
            raise ValueError(f"{self.prefix}: {value} outside the soft limits [{low}, {high}]")
        await fields.limit_violation.write(0)
        self._requests += 1
        if self._wake is not None:
            self._wake.set()
        return value

    @motor.startup
    async def motor(self, instance: Any, async_lib: Any) -> None:
        fields = instance.field_inst
        low, high = self.limits
        await instance.write_metadata(
            precision=self.precision, units=self.egu, lower_ctrl_limit=low, upper_ctrl_limit=high
        )
        for prop in fields.pvdb.values():
            if hasattr(prop, "precision"):
                await prop.write_metadata(precision=self.precision)
        await fields.engineering_units.write(self.egu)
        await fields.velocity.write(self.velocity)
        await fields.max_velocity.write(0.0)
        await fields.user_low_limit.write(low)
        await fields.user_high_limit.write(high)
        await fields.dial_low_limit.write(low)
        await fields.dial_high_limit.write(high)
        await fields.motor_step_size.write(1e-6)
        await fields.done_moving_to_value.write(1)
        self._wake = asyncio.Event()
        await self._simulate(instance)

    async def _simulate(self, instance: Any) -> None:
        fields = instance.field_inst
        while True:
            if self._requests == 0:
                await self._wake.wait()
                self._wake.clear()
                continue
            self._requests = 0
            if fields.stop.value != 0:
                await fields.stop.write(0)
            start = self.position
            t0 = time.monotonic()
            await fields.direction_of_travel.write(1 if instance.value >= start else 0)
            await fields.done_moving_to_value.write(0)
            await fields.motor_is_moving.write(1)
            while True:
                if self._requests:  # a new target during the move: go on from here
                    self._requests = 0
                    start, t0 = self.position, time.monotonic()
                    await fields.direction_of_travel.write(1 if instance.value >= start else 0)
                target = float(instance.value)
                if fields.stop.value != 0 or _choice(fields.stop_pause_move_go) in ("Stop", "Pause"):
                    await fields.stop.write(0)
                    await instance.write(self.position, verify_value=False)
                    break
                distance = target - start
                travelled = max(float(fields.velocity.value), 0.0) * (time.monotonic() - t0)
                if travelled >= abs(distance):
                    await self._set_position(fields, target)
                    break
                await self._set_position(fields, start + np.copysign(travelled, distance))
                await asyncio.sleep(self.tick)
            await fields.motor_is_moving.write(0)
            await fields.done_moving_to_value.write(1)

    @staticmethod
    async def _set_position(fields: Any, position: float) -> None:
        await fields.user_readback_value.write(position)
        await fields.dial_readback_value.write(position)
        await fields.raw_readback_value.write(round(position / 1e-6))
