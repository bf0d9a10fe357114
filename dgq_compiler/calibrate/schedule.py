"""Which calibrated step a UNet call belongs to: its timestep, and the schedule of distinct timesteps seen."""
from __future__ import annotations

import math

from dgq_compiler.errors import DgqError


def timestep_value(args, kwargs) -> float:
    """The timestep of a UNet call (positional or keyword, tensor or number)."""
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    return float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t)


class StepTracker:
    """Forward pre-hook on the UNet: `index` = index_of(timestep of the current call)."""

    def __init__(self, unet, index_of):
        self.index_of, self.index = index_of, 0
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        self.index = self.index_of(timestep_value(args, kwargs))

    def remove(self):
        self.handle.remove()


class FirstSeenSchedule:
    """Distinct integer timesteps in the order first seen (PNDM repeats one: it merges into one step).

    Schedulers with fractional timesteps (Euler's 'linspace' spacing: 958.6, ...) are recorded at the nearest
    integer: the compiled graph maps any timestep to the nearest calibrated one (passes/contract.py STEP_INDEX),
    so a fractional timestep finds its step again as long as no two of them round to the same integer (then
    they share one step, as PNDM's repeat does)."""

    def __init__(self):
        self.timesteps: list[int] = []

    def __call__(self, value: float) -> int:
        if not math.isfinite(value) or value < 0:
            raise DgqError(f"timestep {value} is not a finite non-negative number")
        t = int(round(value))
        if t not in self.timesteps:
            self.timesteps.append(t)
        return self.timesteps.index(t)
