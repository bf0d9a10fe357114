"""The pass lists of `dgq compile --target onnxruntime-cpu[-fast]`: the standard QDQ passes, with the integer
lowering of every quantized Conv/Linear inserted before the fusion barriers and the encodings (attention matmuls
keep their QDQ form, their per-axis quantizers spelled out in fast ops by lower_axis_quantizers, their log2
quantize/dequantize pairs fused by fuse_log_quantizers; block_axis_quantizers is left out: the spelled-out form
is faster still). The fast variant
first turns per-tensor Convs/MatMuls into QLinearConv/QLinearMatMul (output grids from `ranges`, see
lower_qlinear)."""
from __future__ import annotations

from passes.base import Pass
from passes.block_axis_quantizers import BlockAxisQuantizers
from passes.fuse_log_quantizers import FuseLogQuantizers
from passes.lower_axis_quantizers import LowerAxisQuantizers
from passes.lower_conv import LowerConv
from passes.lower_linear import LowerLinear
from passes.lower_qlinear import LowerQlinear
from passes.pipeline import compile_passes

LOWER_BEFORE = ("insert_fusion_barriers", "write_encodings")  # the first of these present gets the lowering before it


def lowering_passes(ranges: dict | None = None) -> list[Pass]:
    passes = [p for p in compile_passes() if p.name != BlockAxisQuantizers.name]
    names = [p.name for p in passes]
    at = next((names.index(n) for n in LOWER_BEFORE if n in names), len(passes))
    fast = [LowerQlinear(ranges)] if ranges else []
    return passes[:at] + fast + [LowerLinear(), LowerConv(), LowerAxisQuantizers(), FuseLogQuantizers()] + passes[at:]
