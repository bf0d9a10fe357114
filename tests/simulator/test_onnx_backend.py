"""ONNX's own backend node tests, run against the simulator (simulator.backend.Backend).

Included: the node tests of every op the simulator implements (the integer/QDQ ops, Conv, MatMul, Gemm,
Softmax and every float op of the exported UNet graphs). Excluded: the cases below, each with its reason.
"""
from __future__ import annotations

import warnings

import onnx.backend.test

from simulator.backend import Backend

OPS = [
    # quantization and integer ops
    "quantizelinear", "dequantizelinear", "matmulinteger", "convinteger", "qlinearmatmul", "qlinearconv",
    # matrix products
    "conv", "basic_conv", "matmul", "gemm",
    # float ops of the UNet export and of compiled graphs
    "softmax", "add", "sub", "mul", "div", "pow", "abs", "neg", "exp", "log", "sqrt", "reciprocal", "floor",
    "round", "sin", "cos", "tanh", "erf", "relu", "sigmoid", "gelu", "max", "min", "clip", "where", "equal",
    "less", "less_equal", "greater", "greater_equal", "not", "argmin", "reduce_max", "reduce_mean",
    "instancenorm", "layer_normalization", "constant", "constantofshape", "shape", "gather", "reshape",
    "transpose", "unsqueeze", "squeeze", "flatten", "concat", "slice", "split", "expand", "cast", "identity",
    "resize",
]

EXCLUDE = {
    r"_expanded": "function-expanded variants exercise the ops of the function body, tested under their own names",
    r"e4m3|e5m2|float4e2m1|FLOAT8|FLOAT4E2M1|e8m0": "float8/float4 grids: the simulator models integer grids",
    r"test_gather_elements|test_log_softmax|test_constant_pad": "different ops that share a name prefix",
    r"test_identity_opt|test_identity_sequence|test_split_to_sequence": "optional/sequence types are not tensors of a UNet graph",
    r"test_reduce_max_empty_set_bool": "bool reductions do not occur in UNet graphs",
    r"test_resize_.*(linear|cubic|tf_crop)": "Resize implements mode=nearest only (the UNet upsamplers)",
    r"test_resize_.*(not_larger|not_smaller)": "Resize keep_aspect_ratio_policy is not implemented",
}

backend_test = onnx.backend.test.BackendTest(Backend, __name__)
for op in OPS:
    backend_test.include(rf"^test_{op}(_[A-Za-z0-9_]+)?_cpu$")
for pattern in EXCLUDE:
    backend_test.exclude(pattern)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    globals().update(backend_test.test_cases)
