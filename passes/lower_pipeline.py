"""The pass lists of `dgq compile --target onnxruntime-cpu[-fast]`: the standard QDQ passes, then the integer
lowering of every quantized Conv/Linear (attention matmuls keep their QDQ form). The fast variant first turns
per-tensor Convs/MatMuls into QLinearConv/QLinearMatMul (output grids from `ranges`, see lower_qlinear)."""
from __future__ import annotations

from passes.base import Pass
from passes.lower_conv import LowerConv
from passes.lower_linear import LowerLinear
from passes.lower_qlinear import LowerQlinear
from passes.pipeline import compile_passes


def lowering_passes(ranges: dict | None = None) -> list[Pass]:
    passes = compile_passes()
    fast = [LowerQlinear(ranges)] if ranges else []
    return passes[:-1] + fast + [LowerLinear(), LowerConv()] + passes[-1:]   # before write_encodings
