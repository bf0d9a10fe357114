"""A target's performance numbers: what the roofline and energy estimates of `dgq cost` read.

The optional `hardware` section of a target file:

    "hardware": {
      "peak_macs_per_s":       {"int4": .., "int8": .., "fp16": .., "fp32": .., "shift_add": ..},
      "bandwidth_bytes_per_s": {"dram": .., "on_chip": ..},
      "buffer_bytes":          ..,
      "energy_pj_per_mac":     {"int4": .., "int8": .., "fp16": .., "fp32": .., "shift_add": ..},
      "energy_pj_per_byte":    {"dram": .., "on_chip": ..},
      "fused_softmax":         false,
      "sources":               {"<any field above>": "where the number comes from"}
    }

Rates are multiply-accumulates per second (1 MAC = 2 operations) of the unit that runs operands of that
precision: `int4` both operands <= 4 bits, `int8` <= 8 bits, `fp16` <= 16 bits, `fp32` anything wider
(and the FP layers, the <start> branch and every rescale); `shift_add` is the log-coded A.V term
(v << (S - q), accumulated). Energies are per MAC (multiply + accumulate) and per byte moved at each
memory level (DRAM, the on-chip buffer). `buffer_bytes` is the on-chip buffer a layer's operands are
tiled through; operands that do not fit are re-read from DRAM. `fused_softmax` (optional, default false):
the target runs QK^T -> softmax -> log quantizer in one pass over a row of logits held on chip, so the FP32
logits never reach DRAM and QK^T writes the probability codes A.V reads.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from simulator.errors import SimulatorError

PRECISIONS = ("int4", "int8", "fp16", "fp32", "shift_add")
MEMORY_LEVELS = ("dram", "on_chip")
FIELDS = ("peak_macs_per_s", "bandwidth_bytes_per_s", "buffer_bytes", "energy_pj_per_mac", "energy_pj_per_byte")
OPTIONAL_FIELDS = ("fused_softmax",)


@dataclass(frozen=True)
class PerPrecision:
    int4: float
    int8: float
    fp16: float
    fp32: float
    shift_add: float

    def __getitem__(self, precision: str) -> float:
        return getattr(self, precision)


@dataclass(frozen=True)
class PerMemoryLevel:
    dram: float
    on_chip: float

    def __getitem__(self, level: str) -> float:
        return getattr(self, level)


@dataclass(frozen=True)
class HardwareSpec:
    peak_macs_per_s: PerPrecision
    bandwidth_bytes_per_s: PerMemoryLevel
    buffer_bytes: int
    energy_pj_per_mac: PerPrecision
    energy_pj_per_byte: PerMemoryLevel
    fused_softmax: bool = False
    sources: dict = field(default_factory=dict, hash=False)   # field name -> where its numbers come from

    def to_dict(self) -> dict:
        return asdict(self)


def _fail(name: str, expected: str, got) -> SimulatorError:
    return SimulatorError(f"target field {name!r}: expected {expected}, got {got!r}")


def _number(name: str, value, positive: bool) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise _fail(name, "a finite number " + ("> 0" if positive else ">= 0"), value)
    return float(value)


def _table(name: str, value, keys: tuple, positive: bool) -> dict:
    if not isinstance(value, dict):
        raise _fail(name, f"an object with keys {', '.join(keys)}", value)
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise SimulatorError(f"target field '{name}.{unknown[0]}' is unknown (known: {', '.join(keys)})")
    missing = [k for k in keys if k not in value]
    if missing:
        raise SimulatorError(f"target field '{name}.{missing[0]}' is missing (expected all of {', '.join(keys)})")
    return {k: _number(f"{name}.{k}", value[k], positive) for k in keys}


def hardware_from_dict(value, name: str = "hardware") -> HardwareSpec:
    """Validate a parsed `hardware` section; errors name the offending field (`hardware.peak_macs_per_s.int8`)."""
    if not isinstance(value, dict):
        raise _fail(name, "an object (table)", value)
    known = FIELDS + OPTIONAL_FIELDS + ("sources",)
    for key in value:
        if key not in known:
            raise SimulatorError(f"target field '{name}.{key}' is unknown (known: {', '.join(known)})")
    for key in FIELDS:
        if key not in value:
            raise SimulatorError(f"target field '{name}.{key}' is missing")
    buffer = value["buffer_bytes"]
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise _fail(f"{name}.buffer_bytes", "a positive integer (bytes)", buffer)
    fused = value.get("fused_softmax", False)
    if not isinstance(fused, bool):
        raise _fail(f"{name}.fused_softmax", "true or false", fused)
    sources = value.get("sources", {})
    described = FIELDS + OPTIONAL_FIELDS
    if not isinstance(sources, dict) or any(k not in described or not isinstance(v, str) for k, v in sources.items()):
        raise _fail(f"{name}.sources", f"an object mapping fields ({', '.join(described)}) to text", sources)
    return HardwareSpec(
        peak_macs_per_s=PerPrecision(**_table(f"{name}.peak_macs_per_s", value["peak_macs_per_s"], PRECISIONS, True)),
        bandwidth_bytes_per_s=PerMemoryLevel(**_table(f"{name}.bandwidth_bytes_per_s",
                                                      value["bandwidth_bytes_per_s"], MEMORY_LEVELS, True)),
        buffer_bytes=buffer,
        energy_pj_per_mac=PerPrecision(**_table(f"{name}.energy_pj_per_mac", value["energy_pj_per_mac"],
                                                PRECISIONS, False)),
        energy_pj_per_byte=PerMemoryLevel(**_table(f"{name}.energy_pj_per_byte", value["energy_pj_per_byte"],
                                                   MEMORY_LEVELS, False)),
        fused_softmax=fused, sources=dict(sources))
