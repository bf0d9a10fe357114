"""The pass list of `dgq compile --target onnxruntime-cpu`: the standard QDQ passes, then the integer lowering
of every quantized Conv/Linear (attention matmuls keep their QDQ form)."""
from __future__ import annotations

from passes.base import Pass
from passes.lower_conv import LowerConv
from passes.lower_linear import LowerLinear
from passes.pipeline import compile_passes


def lowering_passes() -> list[Pass]:
    passes = compile_passes()
    return passes[:-1] + [LowerLinear(), LowerConv()] + passes[-1:]   # before write_encodings
