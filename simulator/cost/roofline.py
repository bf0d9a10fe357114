"""Roofline latency and energy of one UNet step, per op, on a target's `hardware` numbers.

Per op (traffic from `simulator.cost.traffic`; rates, bandwidths, buffer, energies from the target):
    DRAM bytes     the compulsory bytes (each operand, output, scale row and group map once), plus
                   re-reads the buffer forces: per slice (a batch x head matmul; conv/linear: 1 slice),
                   if operands + output exceed the buffer, the smaller operand is held in chunks of half
                   the buffer and the larger one streamed once per chunk:
                       re-read = larger x (ceil(smaller / (buffer / 2)) - 1)
    on-chip bytes  every DRAM byte passes the buffer once, plus the split-K partial sums (and, on a target
                   with `fused_softmax`, the logits kept on chip)
    compute time   sum over unit precisions of MACs / peak MACs/s (units are not overlapped)
    latency        max(compute time, DRAM bytes / DRAM bandwidth, on-chip bytes / on-chip bandwidth)
    energy         MACs x pJ/MAC per precision (compute) + bytes x pJ/byte per level (data movement)
    intensity      MACs per DRAM byte (the roofline's x axis)
A step is one UNet call at the inventory's batch (2 = cond + uncond: classifier-free guidance); an image
is `steps` such calls. Not counted: the ops between the counted ones (norms, SiLU, softmax, residual
adds), which stream FP activations but do few MACs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from simulator.cost.bits import BitWidths, parse_bits
from simulator.cost.inventory import Inventory
from simulator.cost.traffic import OpTraffic, inventory_traffic
from simulator.errors import SimulatorError
from simulator.targets.hardware import PRECISIONS, HardwareSpec

PJ = 1e-12
BYTE_PARTS = ("weights", "activations_in", "activations_out", "qparams", "start_token", "rereads", "partial_sums",
              "fused_logits")
ON_CHIP_PARTS = ("partial_sums", "fused_logits")
KIND_LABELS = {"conv": "conv", "linear": "linear", "attn_qk": "attention QK^T", "attn_av": "attention A.V",
               "other": "other matmul", "fp": "FP layers (conv_in/out)"}


def kind_label(traffic: OpTraffic) -> str:
    return KIND_LABELS["fp" if traffic.full_precision else traffic.kind]


@dataclass(frozen=True)
class OpEstimate:
    module: str
    kind: str                 # KIND_LABELS value
    macs: int                 # all units together (shift-adds and rescales included)
    dram_bytes: int
    on_chip_bytes: int
    compute_s: float
    dram_s: float
    on_chip_s: float
    latency_s: float
    bound: str                # compute | dram | on_chip
    compute_j: float
    dram_j: float
    on_chip_j: float
    parts: dict = field(default_factory=dict)   # BYTE_PARTS -> bytes (ON_CHIP_PARTS: on chip; the rest: DRAM)

    @property
    def intensity(self) -> float:
        return self.macs / max(self.dram_bytes, 1)

    def to_json(self) -> dict:
        return dict(asdict(self), intensity=self.intensity)


def dram_bytes(traffic: OpTraffic, buffer_bytes: int) -> int:
    """Compulsory bytes plus the operand re-reads a buffer of `buffer_bytes` forces (module docstring)."""
    slices = traffic.slices
    a, b = -(-traffic.a_bytes // slices), -(-traffic.b_bytes // slices)
    out = -(-traffic.output_bytes // slices)
    reread = 0
    if a + b + out > buffer_bytes:
        small, large = sorted((a, b))
        chunk = max(buffer_bytes // 2, 1)
        reread = large * (math.ceil(small / chunk) - 1) * slices
    return traffic.compulsory_bytes + reread


def byte_parts(traffic: OpTraffic, dram: int) -> dict:
    """Where an op's bytes go: conv/linear B operands are weights, attention operands are activations."""
    weights = traffic.b_bytes if traffic.kind in ("conv", "linear") else 0
    return {"weights": weights, "activations_in": traffic.a_bytes + traffic.b_bytes - weights,
            "activations_out": traffic.output_bytes, "qparams": traffic.qparam_bytes,
            "start_token": traffic.start_bytes, "rereads": dram - traffic.compulsory_bytes,
            "partial_sums": traffic.partial_sum_bytes, "fused_logits": traffic.fused_logit_bytes}


def op_estimate(traffic: OpTraffic, hw: HardwareSpec) -> OpEstimate:
    dram = dram_bytes(traffic, hw.buffer_bytes)
    on_chip = dram + traffic.partial_sum_bytes + traffic.fused_logit_bytes
    compute_s = sum(count / hw.peak_macs_per_s[unit] for unit, count in traffic.macs.items())
    dram_s = dram / hw.bandwidth_bytes_per_s.dram
    on_chip_s = on_chip / hw.bandwidth_bytes_per_s.on_chip
    times = {"compute": compute_s, "dram": dram_s, "on_chip": on_chip_s}
    bound = max(times, key=times.get)
    return OpEstimate(module=traffic.module, kind=kind_label(traffic), macs=traffic.total_macs, dram_bytes=dram,
                      on_chip_bytes=on_chip, compute_s=compute_s, dram_s=dram_s, on_chip_s=on_chip_s,
                      latency_s=times[bound], bound=bound,
                      compute_j=sum(c * hw.energy_pj_per_mac[u] for u, c in traffic.macs.items()) * PJ,
                      dram_j=dram * hw.energy_pj_per_byte.dram * PJ,
                      on_chip_j=on_chip * hw.energy_pj_per_byte.on_chip * PJ, parts=byte_parts(traffic, dram))


@dataclass(frozen=True)
class Estimate:
    """One configuration on one target: per-step totals, per-image totals, and a summary per op kind."""
    target: str
    bits: str
    groups: int
    steps: int
    batch: int
    step_latency_s: float
    step_compute_j: float
    step_data_j: float           # DRAM + on-chip
    step_dram_bytes: int
    step_on_chip_bytes: int
    step_macs: int
    image_latency_s: float
    image_energy_j: float
    compute_bound_share: float   # share of the step latency spent in compute-bound ops
    by_kind: dict = field(default_factory=dict)   # kind label -> {ops, macs, dram_bytes, latency_s, compute_j, data_j}
    step_bytes: dict = field(default_factory=dict)   # BYTE_PARTS -> bytes per step

    @property
    def step_energy_j(self) -> float:
        return self.step_compute_j + self.step_data_j

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["step_energy_j"] = self.step_energy_j
        return doc


def op_estimates(inventory: Inventory, bits: BitWidths | str, groups: int, hw: HardwareSpec,
                 compiled: bool = False) -> list[OpEstimate]:
    bits = parse_bits(bits) if isinstance(bits, str) else bits
    return [op_estimate(t, hw) for t in inventory_traffic(inventory, bits, groups, hw.fused_softmax, compiled)]


def estimate(inventory: Inventory, bits: BitWidths | str, groups: int, target, steps: int,
             compiled: bool = False) -> Estimate:
    """Roofline latency and energy of `bits` with G = `groups` on `target` (a Target with a hardware section);
    `compiled`: every conv / linear at the widths its compiled graph gives it (an inventory of a compiled graph)."""
    hw = getattr(target, "hardware", None)
    if hw is None:
        raise SimulatorError(f"target {getattr(target, 'name', target)!r} has no `hardware` section "
                             "(peak rates, bandwidths, energies): latency and energy cannot be estimated")
    if not isinstance(steps, int) or steps < 1:
        raise SimulatorError(f"steps must be a positive integer, got {steps!r}")
    bits = parse_bits(bits) if isinstance(bits, str) else bits
    ops = op_estimates(inventory, bits, groups, hw, compiled)
    by_kind: dict = {}
    for op in ops:
        k = by_kind.setdefault(op.kind, {"ops": 0, "macs": 0, "dram_bytes": 0, "latency_s": 0.0,
                                         "compute_j": 0.0, "data_j": 0.0})
        k["ops"] += 1
        k["macs"] += op.macs
        k["dram_bytes"] += op.dram_bytes
        k["latency_s"] += op.latency_s
        k["compute_j"] += op.compute_j
        k["data_j"] += op.dram_j + op.on_chip_j
    latency = sum(op.latency_s for op in ops)
    compute_j = sum(op.compute_j for op in ops)
    data_j = sum(op.dram_j + op.on_chip_j for op in ops)
    bound = sum(op.latency_s for op in ops if op.bound == "compute")
    return Estimate(target=target.name, bits=bits.label, groups=groups, steps=steps, batch=inventory.batch,
                    step_latency_s=latency, step_compute_j=compute_j, step_data_j=data_j,
                    step_dram_bytes=sum(op.dram_bytes for op in ops),
                    step_on_chip_bytes=sum(op.on_chip_bytes for op in ops), step_macs=sum(op.macs for op in ops),
                    image_latency_s=steps * latency, image_energy_j=steps * (compute_j + data_j),
                    compute_bound_share=bound / latency if latency else 0.0, by_kind=by_kind,
                    step_bytes={part: sum(op.parts[part] for op in ops) for part in BYTE_PARTS})


__all__ = ["BYTE_PARTS", "PRECISIONS", "OpEstimate", "Estimate", "dram_bytes", "op_estimate", "op_estimates", "estimate"]
