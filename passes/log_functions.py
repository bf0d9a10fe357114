"""The log2 quantizer as model-local ONNX functions of domain `dgq`, with bodies of standard ops.

`dgq.QuantizeLog(X, S) -> Q` (uint8 codes, attribute `bits`): q = clamp(round(-log2(X / S)), 0, 2^bits - 1).
`dgq.DequantizeLog(Q, S) -> Y`: y = S * 2^(-q).
Accelerator toolchains match the functions by name; onnxruntime and onnx.reference run the bodies.

The rounding is computed exactly, the way integer hardware does it (X/S = m * 2^E, q = -E - [m > sqrt 2]):
with r = X / S (float32, as the simulator divides) and r2 = r * 2^64 (exact, and normal for every r >= 2^-149, the
smallest subnormal: a subnormal r keeps its value but Log and the threshold below need normal numbers),
u = 64 - ln(r2) / ln 2 = -log2 r (float error < 1e-4), k1 = floor(u + 1/2 + 2^-10) is the code k or k + 1 (the
margin exceeds the error and 2 * margin < 1), and it is k + 1 exactly when r2 > 2^(64 - k1 + 1/2). That threshold is
compared exactly: float32 2^(64 - k1) * (2 * float32(1/sqrt 2) rounded down) is the largest float32 below the
irrational 2^(64 - k1 + 1/2) (normal for k1 <= 190; r > 0 has k1 <= 150), so float error in Log never moves a code,
and ties cannot occur. For x >= 0 (probabilities): a negative x has no logarithm.

Powers of two 2^-k (k integral, -8 <= k <= 257) come from `exp2_neg_nodes`, not Pow: onnxruntime's Pow is a scalar
libm loop (about 2.5x the time of the seven vectorised element-wise ops below on a [16, 1024, 1024] tensor) and was
15% of a lowered SD v1.4 step. Exactly:
    e  = Exp((64 - k) * ln 2)          ~ 2^(64 - k), a normal float32 for k <= 190, relative error < 1e-5
    hi = e * (2^23 + 1); hi - (hi - e) Veltkamp's split: e rounded to one significant bit = 2^(64 - k) exactly
    y  = that * 2^-64                  one rounding: 2^-k correctly rounded (0 from k = 150 up, as float32 2^-k)
so every value equals float32(2^-k), the value Pow(2, -k) gives (tested for every k against numpy).

`dgq.QuantizeDequantizeLog(X, S) -> Y` (attribute `bits`) is DequantizeLog(QuantizeLog(X, S), S) in one function for
graphs that never read the codes (the integer lowering, passes/fuse_log_quantizers.py): 9 element-wise passes over
the probabilities instead of about 27 (measured on [16, 1024, 1024] here: 0.2 s against 1.0 s). Its body reads the
float32 bits (BitCast, opset 26), which gives the code exactly with no Log, Exp or threshold compare:
    r  = X / S                      float32, as the simulator divides
    r2 = r * 2^23                   exact; a subnormal r (down to 2^-149) becomes normal, so its bits hold E
    b  = bits(r2) + 0x4AFB0C        0x4AFB0C = 2^23 - 0x3504F4: the carry reaches the exponent field exactly when
                                    the mantissa field f >= 0x3504F4, i.e. m = 1 + f 2^-23 > sqrt 2 (f > (sqrt 2 - 1)
                                    2^23 = 3474675.7...); so the exponent field is now E - q_unclamped + 23
    p2 = float(b & 0xFF800000)      2^(23 - q) for r > 0 (the sign kept: a negative r stays negative), 0 for r = 0
    pc = Clip(p2, 2^(23 - top), 2^23)  the code's clamp to [0, top] (2^(23 - 255) is 0 in float32: r = 0 gives 0,
                                    and every r > 0 has q <= 149 < 255); r = inf saturates to 2^23 (q = 0)
    Y  = S * (pc * 2^-23)           pc * 2^-23 = float32(2^-q) (one rounding, 0 from q = 150), then S * it: exactly
                                    DequantizeLog's two roundings
Integer additions cannot overflow for non-NaN r: bits(r2) <= 0x7F800000 and 0x7F800000 + 0x4AFB0C < 2^31.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG

DOMAIN_VERSION = 1
FUSED_LOG_OPSET = 26  # BitCast
LOG_MARGIN = 2.0 ** -10  # > the float32 error of -ln(r) / ln 2 (|u| <= 150: < 1e-4), and 2 * margin < 1
# float32(1/sqrt(2)) rounded toward zero: r <= 2^-k * C  <=>  r <= 2^-(k + 1/2) for every float32 r (no subnormals)
INV_SQRT2_DOWN = float(np.frombuffer(np.array([0x3F3504F3], np.uint32).tobytes(), np.float32)[0])
BASE_OPSET = 21
CARRY_AT_SQRT2 = 2 ** 23 - 0x3504F4       # added to the bits of r: carries into the exponent iff m > sqrt 2
SIGN_AND_EXPONENT = -(2 ** 23)            # 0xFF800000 as int32: keeps sign and exponent, drops the mantissa


def _const(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))


EXP2_SHIFT = 64          # 2^(64 - k) stays a normal float32 for every k the functions use (k <= 190)
R2_SHIFT = 64            # QuantizeLog works on r * 2^64: normal for every float32 r > 0
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


def _opset(version: int):
    return [helper.make_opsetid("", version)]


def quantize_log_function(opset: int = BASE_OPSET) -> onnx.FunctionProto:
    max_code = helper.make_node("Constant", [], ["bits_i"], value_int=0)
    max_code.attribute[0].ref_attr_name = "bits"  # the node's `bits` attribute, filled in at each call
    nodes = [
        max_code,
        helper.make_node("Cast", ["bits_i"], ["bits_f"], to=TensorProto.FLOAT),
        _const("one", 1.0), _const("zero", 0.0), _const("neg_inv_ln2", float(-1.0 / np.log(2.0))),
        _const("half_up", R2_SHIFT + 0.5 + LOG_MARGIN), _const("r2_shift", 2.0 ** R2_SHIFT),
        helper.make_node("Neg", ["bits_f"], ["neg_bits"]),
        *exp2_neg_nodes("neg_bits", "levels"),
        helper.make_node("Sub", ["levels", "one"], ["hi"]),
        helper.make_node("Div", ["X", "S"], ["r"]),
        helper.make_node("Mul", ["r", "r2_shift"], ["r2"]),
        helper.make_node("Log", ["r2"], ["ln_r"]),
        helper.make_node("Mul", ["ln_r", "neg_inv_ln2"], ["approx"]),             # -log2 r - 64
        # k1 = floor(approx + 64 + 1/2 + margin): the code or one more (the margin exceeds the float error)
        helper.make_node("Add", ["approx", "half_up"], ["shifted"]),
        helper.make_node("Floor", ["shifted"], ["k1_raw"]),
        helper.make_node("Clip", ["k1_raw", "zero", "levels"], ["k1"]),  # bounded, so 2^-k1 below is finite
        # one more than the code exactly when r > 2^-(k1 - 1/2), i.e. r2 > 2^(64 - k1) * sqrt 2
        *exp2_neg_nodes("k1", "t", times=2.0 ** R2_SHIFT * 2 * INV_SQRT2_DOWN),
        helper.make_node("Greater", ["r2", "t"], ["above"]),
        helper.make_node("Cast", ["above"], ["dec"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["k1", "dec"], ["q"]),
        helper.make_node("Clip", ["q", "zero", "hi"], ["q_clipped"]),
        helper.make_node("Cast", ["q_clipped"], ["Q"], to=TensorProto.UINT8),
    ]
    return helper.make_function(LOG_DOMAIN, QUANTIZE_LOG, ["X", "S"], ["Q"], nodes, _opset(opset), attributes=["bits"],
                                doc_string="q = clamp(round(-log2(X / S)), 0, 2^bits - 1), uint8 codes")


def dequantize_log_function(opset: int = BASE_OPSET) -> onnx.FunctionProto:
    nodes = [
        helper.make_node("Cast", ["Q"], ["q"], to=TensorProto.FLOAT),
        *exp2_neg_nodes("q", "p"),
        helper.make_node("Mul", ["S", "p"], ["Y"]),
    ]
    return helper.make_function(LOG_DOMAIN, DEQUANTIZE_LOG, ["Q", "S"], ["Y"], nodes, _opset(opset),
                                doc_string="y = S * 2^(-q)")


def _int32_const(name: str, value: int) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT32, [], [value]))


def quantize_dequantize_log_function() -> onnx.FunctionProto:
    """Y = DequantizeLog(QuantizeLog(X, S), S) bit for bit, through the float32 bits (module doc); opset 26."""
    top = helper.make_node("Constant", [], ["bits_i"], value_int=0)
    top.attribute[0].ref_attr_name = "bits"
    nodes = [
        top,
        helper.make_node("Cast", ["bits_i"], ["bits_f"], to=TensorProto.FLOAT),
        _const("one", 1.0), _const("up", 2.0 ** 23), _const("down", 2.0 ** -23), _const("neg_23", -23.0),
        _int32_const("carry", CARRY_AT_SQRT2), _int32_const("keep", SIGN_AND_EXPONENT),
        # the clamp's bounds (scalars): 2^(23 - top) with top = 2^bits - 1, and 2^23
        helper.make_node("Neg", ["bits_f"], ["neg_bits"]),
        *exp2_neg_nodes("neg_bits", "levels"),                         # 2^bits
        helper.make_node("Sub", ["levels", "one"], ["top"]),
        helper.make_node("Add", ["top", "neg_23"], ["low_exp"]),
        *exp2_neg_nodes("low_exp", "low"),                             # 2^(23 - top), 0 below float32's range
        helper.make_node("Div", ["X", "S"], ["r"]),
        helper.make_node("Mul", ["r", "up"], ["r2"]),
        helper.make_node("BitCast", ["r2"], ["r_bits"], to=TensorProto.INT32),
        helper.make_node("Add", ["r_bits", "carry"], ["rounded"]),
        helper.make_node("BitwiseAnd", ["rounded", "keep"], ["p_bits"]),
        helper.make_node("BitCast", ["p_bits"], ["p2"], to=TensorProto.FLOAT),
        helper.make_node("Clip", ["p2", "low", "up"], ["clamped"]),
        helper.make_node("Mul", ["clamped", "down"], ["p"]),
        helper.make_node("Mul", ["S", "p"], ["Y"]),
    ]
    return helper.make_function(LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, ["X", "S"], ["Y"], nodes,
                                _opset(FUSED_LOG_OPSET), attributes=["bits"],
                                doc_string="y = S * 2^-q, q = clamp(round(-log2(X / S)), 0, 2^bits - 1)")


def log_functions(opset: int = BASE_OPSET) -> list[onnx.FunctionProto]:
    """QuantizeLog and DequantizeLog, their bodies declared at `opset` (a model-local function imports its model's
    opset: the lowered graphs' is FUSED_LOG_OPSET)."""
    return [quantize_log_function(opset), dequantize_log_function(opset)]
