"""The log2 quantizer as model-local ONNX functions of domain `dgq`, with bodies of standard ops.

`dgq.QuantizeLog(X, S) -> Q` (uint8 codes, attribute `bits`): q = clamp(round(-log2(X / S)), 0, 2^bits - 1).
`dgq.DequantizeLog(Q, S) -> Y`: y = S * 2^(-q).
Accelerator toolchains match the functions by name; onnxruntime and onnx.reference run the bodies.

The rounding is computed exactly, the way integer hardware does it (X/S = m * 2^E, q = -E - [m > sqrt 2]):
with r = X / S (float32, as the simulator divides) and u = -ln(r) / ln 2 (float error < 1e-4 for every float32
r > 0), k1 = floor(u + 1/2 + 2^-10) is the code k or k + 1 (the margin exceeds the error and 2 * margin < 1), and
it is k + 1 exactly when r > 2^-(k1 - 1/2). That threshold is compared exactly: float32 2^-k1 * (2 * float32(1/sqrt 2)
rounded down) is the largest float32 below the irrational 2^-(k1 - 1/2) (for normal thresholds), so float error
in Log never moves a code, and ties cannot occur.

Powers of two 2^-k (k integral, -8 <= k <= 257) come from `exp2_neg_nodes`, not Pow: onnxruntime's Pow is a scalar
libm loop (about 2.5x the time of the seven vectorised element-wise ops below on a [16, 1024, 1024] tensor) and was
15% of a lowered SD v1.4 step. Exactly:
    e  = Exp((64 - k) * ln 2)          ~ 2^(64 - k), a normal float32 for k <= 190, relative error < 1e-5
    hi = e * (2^23 + 1); hi - (hi - e) Veltkamp's split: e rounded to one significant bit = 2^(64 - k) exactly
    y  = that * 2^-64                  one rounding: 2^-k correctly rounded (0 from k = 150 up, as float32 2^-k)
so every value equals float32(2^-k), the value Pow(2, -k) gives (tested for every k against numpy).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_LOG

DOMAIN_VERSION = 1
LOG_MARGIN = 2.0 ** -10  # > the float32 error of -ln(r) / ln 2 (|u| <= 150: < 1e-4), and 2 * margin < 1
# float32(1/sqrt(2)) rounded toward zero: r <= 2^-k * C  <=>  r <= 2^-(k + 1/2) for every float32 r (no subnormals)
INV_SQRT2_DOWN = float(np.frombuffer(np.array([0x3F3504F3], np.uint32).tobytes(), np.float32)[0])
_OPSET = [helper.make_opsetid("", 21)]


def _const(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))


EXP2_SHIFT = 64          # 2^(64 - k) stays a normal float32 for every k the functions use (k <= 190)
VELTKAMP = float(2 ** 23 + 1)  # splits a float32 into its leading bit and the rest


def exp2_neg_nodes(k: str, out: str, times: float = 1.0) -> list[onnx.NodeProto]:
    """Nodes computing out = float32(2^-k * times) for an integral float32 tensor k in [-8, 257], exactly (module
    doc; `times` is a float32 folded into the final power-of-two scaling, so still one rounding)."""
    p = f"{out}_exp2"
    return [
        _const(f"{p}_shift", float(EXP2_SHIFT)), _const(f"{p}_ln2", float(np.log(2.0))),
        _const(f"{p}_split", VELTKAMP), _const(f"{p}_unshift", float(np.float32(2.0 ** -EXP2_SHIFT) * np.float32(times))),
        helper.make_node("Sub", [f"{p}_shift", k], [f"{p}_k"]),
        helper.make_node("Mul", [f"{p}_k", f"{p}_ln2"], [f"{p}_arg"]),
        helper.make_node("Exp", [f"{p}_arg"], [f"{p}_e"]),
        helper.make_node("Mul", [f"{p}_e", f"{p}_split"], [f"{p}_c"]),
        helper.make_node("Sub", [f"{p}_c", f"{p}_e"], [f"{p}_d"]),
        helper.make_node("Sub", [f"{p}_c", f"{p}_d"], [f"{p}_power"]),
        helper.make_node("Mul", [f"{p}_power", f"{p}_unshift"], [out]),
    ]


def quantize_log_function() -> onnx.FunctionProto:
    max_code = helper.make_node("Constant", [], ["bits_i"], value_int=0)
    max_code.attribute[0].ref_attr_name = "bits"  # the node's `bits` attribute, filled in at each call
    nodes = [
        max_code,
        helper.make_node("Cast", ["bits_i"], ["bits_f"], to=TensorProto.FLOAT),
        _const("one", 1.0), _const("zero", 0.0), _const("neg_inv_ln2", float(-1.0 / np.log(2.0))),
        _const("half_up", 0.5 + LOG_MARGIN),
        helper.make_node("Neg", ["bits_f"], ["neg_bits"]),
        *exp2_neg_nodes("neg_bits", "levels"),
        helper.make_node("Sub", ["levels", "one"], ["hi"]),
        helper.make_node("Div", ["X", "S"], ["r"]),
        helper.make_node("Log", ["r"], ["ln_r"]),
        helper.make_node("Mul", ["ln_r", "neg_inv_ln2"], ["approx"]),
        # k1 = floor(approx + 1/2 + margin): the code or one more (the margin exceeds the float error of approx)
        helper.make_node("Add", ["approx", "half_up"], ["shifted"]),
        helper.make_node("Floor", ["shifted"], ["k1_raw"]),
        helper.make_node("Clip", ["k1_raw", "zero", "levels"], ["k1"]),  # bounded, so 2^-k1 below is finite
        # one more than the code exactly when r > 2^-(k1 - 1/2) = 2^-k1 * sqrt 2
        *exp2_neg_nodes("k1", "t", times=2 * INV_SQRT2_DOWN),
        helper.make_node("Greater", ["r", "t"], ["above"]),
        helper.make_node("Cast", ["above"], ["dec"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["k1", "dec"], ["q"]),
        helper.make_node("Clip", ["q", "zero", "hi"], ["q_clipped"]),
        helper.make_node("Cast", ["q_clipped"], ["Q"], to=TensorProto.UINT8),
    ]
    return helper.make_function(LOG_DOMAIN, QUANTIZE_LOG, ["X", "S"], ["Q"], nodes, _OPSET, attributes=["bits"],
                                doc_string="q = clamp(round(-log2(X / S)), 0, 2^bits - 1), uint8 codes")


def dequantize_log_function() -> onnx.FunctionProto:
    nodes = [
        helper.make_node("Cast", ["Q"], ["q"], to=TensorProto.FLOAT),
        *exp2_neg_nodes("q", "p"),
        helper.make_node("Mul", ["S", "p"], ["Y"]),
    ]
    return helper.make_function(LOG_DOMAIN, DEQUANTIZE_LOG, ["Q", "S"], ["Y"], nodes, _OPSET,
                                doc_string="y = S * 2^(-q)")


def log_functions() -> list[onnx.FunctionProto]:
    return [quantize_log_function(), dequantize_log_function()]
