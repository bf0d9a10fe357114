"""What the cost model counts: every Conv / Linear / attention matmul of one UNet forward, and the parameters.

An `Inventory` is built from an architecture config (`macs_from_config`) or an ONNX graph (`macs_from_graph`);
the BOPs and size formulas (`bops`, `size`) read only this, so both sources are costed identically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from passes.contract import FP_MODULES

KINDS = ("conv", "linear", "attn_qk", "attn_av", "other")  # "other": a dynamic matmul outside attention
FULL_PRECISION_MODULES = FP_MODULES  # DGQ keeps these FP (weights and activations): the compiled-graph contract
LATENT_FACTOR = 8  # image pixels per latent pixel (the SD / SDXL VAE)


@dataclass(frozen=True)
class CountedOp:
    module: str            # diffusers module path (`down_blocks.0.resnets.0.conv1`); attention: the Attention module
    kind: str              # one of KINDS
    macs: int              # multiply-accumulates of this op in one forward
    outputs: int           # output elements (each gets one rescale per activation group in the epilogue)
    full_precision: bool = False  # kept FP32 by the method (conv_in, conv_out)
    cross: bool = False    # attention over the text tokens: key 0 is the <start> token
    keys: int = 0          # attention: keys per query (the A.V / QK^T contraction length)
    a_elements: int = 0    # first operand: the activation input (conv/linear), q (QK^T), the probabilities (A.V)
    b_elements: int = 0    # second operand: the weight (conv/linear, once), k (QK^T), v (A.V)
    slices: int = 1        # independent matmuls a batched matmul is made of (batch x heads); 1 for conv/linear
    # the widths a compiled graph gives this op (per-layer mixed precision); None: the configuration's
    weight_bits: int | None = None
    act_bits: int | None = None
    fp_macs: int = 0       # conv/linear MACs computed in FP: the <start> row of a BOS-aware text embedding


@dataclass(frozen=True)
class QuantPoint:
    """An activation quantization point with a [T, G] scale/zero table and a group map over `channels`."""
    module: str
    role: str              # input (conv/linear), q, k, v (attention operands)
    channels: int          # size of the channel dimension a channel-wise group map spans


@dataclass(frozen=True)
class Inventory:
    source: str            # "config" or "graph"
    model: str             # what the user named
    batch: int
    latent: tuple          # (height, width) of the latent sample
    ops: tuple             # CountedOp, in execution order
    quantized_weight_elements: int   # weights of every Conv/Linear except the FP modules
    weight_channels: int             # their output channels (one scale + zero point each)
    fp_param_elements: int           # everything else kept at 32 bits: FP modules, biases, norms, embeddings
    points: tuple = field(default=())  # QuantPoint, activation points with [T, G] tables

    @property
    def resolution(self) -> tuple:
        return tuple(d * LATENT_FACTOR for d in self.latent)

    @property
    def per_op_widths(self) -> bool:
        """Whether the ops carry their own widths (an inventory of a compiled graph)."""
        return any(op.weight_bits is not None or op.act_bits is not None for op in self.ops)

    def macs(self) -> dict:
        """MACs by kind, plus `total`."""
        out = {kind: 0 for kind in KINDS}
        for op in self.ops:
            out[op.kind] += op.macs
        out["total"] = sum(out[k] for k in KINDS)
        return out
