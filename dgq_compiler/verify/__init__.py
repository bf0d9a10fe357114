"""Verification of compiled graphs.

    integer.py    the integer simulator against onnxruntime, quantizer by quantizer, in a target's arithmetic
    fakequant.py  every quantization point against the torch fake-quant reference (run by compile)
"""
from dgq_compiler.verify.integer import (OverflowResult, TensorResult, VerifyReport, latent_size_of, resolve_graph,
                                         verify_graph)

__all__ = ["OverflowResult", "TensorResult", "VerifyReport", "latent_size_of", "resolve_graph", "verify_graph"]
