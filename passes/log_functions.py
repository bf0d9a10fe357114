"""The log2 quantizer as model-local ONNX functions of domain `dgq`, with bodies of standard ops.

`dgq.QuantizeLog(X, S) -> Q` (uint8 codes, attribute `bits`): q = clamp(round(-log2(X / S)), 0, 2^bits - 1).
`dgq.DequantizeLog(Q, S) -> Y`: y = S * 2^(-q).
Accelerator toolchains match the functions by name; onnxruntime and onnx.reference run the bodies.

The rounding is computed exactly, the way integer hardware does it (X/S = m * 2^E, q = -E - [m > sqrt 2]):
an approximate q0 = round(-ln(r) / ln 2) is corrected by comparing r with the exact float32 thresholds
2^-(q0 + 1/2) and 2^-(q0 - 1/2) (a power of two times float32(1/sqrt 2) rounded down, an exact product),
so float error in Log never moves a code. Ties cannot occur: the thresholds are irrational.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_LOG

DOMAIN_VERSION = 1
# float32(1/sqrt(2)) rounded toward zero: r <= 2^-k * C  <=>  r <= 2^-(k + 1/2) for every float32 r (no subnormals)
INV_SQRT2_DOWN = float(np.frombuffer(np.array([0x3F3504F3], np.uint32).tobytes(), np.float32)[0])
_OPSET = [helper.make_opsetid("", 21)]


def _const(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))


def quantize_log_function() -> onnx.FunctionProto:
    max_code = helper.make_node("Constant", [], ["bits_i"], value_int=0)
    max_code.attribute[0].ref_attr_name = "bits"  # the node's `bits` attribute, filled in at each call
    nodes = [
        max_code,
        helper.make_node("Cast", ["bits_i"], ["bits_f"], to=TensorProto.FLOAT),
        _const("one", 1.0), _const("two", 2.0), _const("neg_inv_ln2", float(-1.0 / np.log(2.0))),
        _const("c", INV_SQRT2_DOWN), _const("lo", -1.0),
        helper.make_node("Pow", ["two", "bits_f"], ["levels"]),
        helper.make_node("Sub", ["levels", "one"], ["hi"]),
        helper.make_node("Div", ["X", "S"], ["r"]),
        helper.make_node("Log", ["r"], ["ln_r"]),
        helper.make_node("Mul", ["ln_r", "neg_inv_ln2"], ["approx"]),
        helper.make_node("Round", ["approx"], ["q0_raw"]),
        helper.make_node("Clip", ["q0_raw", "lo", "levels"], ["q0"]),  # bounded, so 2^-q0 below is finite
        # q0 too small by one: r <= 2^-(q0 + 1/2)
        helper.make_node("Neg", ["q0"], ["neg_q0"]),
        helper.make_node("Pow", ["two", "neg_q0"], ["p0"]),
        helper.make_node("Mul", ["p0", "c"], ["t_lo"]),
        helper.make_node("LessOrEqual", ["r", "t_lo"], ["below"]),
        helper.make_node("Cast", ["below"], ["inc"], to=TensorProto.FLOAT),
        # q0 too large by one: r > 2^-(q0 - 1/2)
        helper.make_node("Mul", ["t_lo", "two"], ["t_hi"]),
        helper.make_node("Greater", ["r", "t_hi"], ["above"]),
        helper.make_node("Cast", ["above"], ["dec"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["q0", "inc"], ["q1"]),
        helper.make_node("Sub", ["q1", "dec"], ["q2"]),
        _const("zero", 0.0),
        helper.make_node("Clip", ["q2", "zero", "hi"], ["q3"]),
        helper.make_node("Cast", ["q3"], ["Q"], to=TensorProto.UINT8),
    ]
    return helper.make_function(LOG_DOMAIN, QUANTIZE_LOG, ["X", "S"], ["Q"], nodes, _OPSET, attributes=["bits"],
                                doc_string="q = clamp(round(-log2(X / S)), 0, 2^bits - 1), uint8 codes")


def dequantize_log_function() -> onnx.FunctionProto:
    nodes = [
        helper.make_node("Cast", ["Q"], ["q"], to=TensorProto.FLOAT),
        helper.make_node("Neg", ["q"], ["neg_q"]),
        _const("two", 2.0),
        helper.make_node("Pow", ["two", "neg_q"], ["p"]),
        helper.make_node("Mul", ["S", "p"], ["Y"]),
    ]
    return helper.make_function(LOG_DOMAIN, DEQUANTIZE_LOG, ["Q", "S"], ["Y"], nodes, _OPSET,
                                doc_string="y = S * 2^(-q)")


def log_functions() -> list[onnx.FunctionProto]:
    return [quantize_log_function(), dequantize_log_function()]
