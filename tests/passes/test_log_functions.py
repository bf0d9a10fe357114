"""log_functions: the log2 quantizer's function bodies compute powers of two exactly without Pow.

exp2_neg_nodes gives float32(2^-k) for every integral k the functions use (-8..257: the bits attribute, the codes'
range and the rounding correction around them), in a default onnxruntime session and in onnx.reference, including
the subnormal range and the round-to-zero from 2^-150 on; Exp alone does not (asserted, so the test can tell).
DequantizeLog gives S * 2^-q for every uint8 code."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN
from passes.log_functions import exp2_neg_nodes, log_functions

RUNTIMES = ("default", "reference")


def _model(nodes, inputs, outputs, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(LOG_DOMAIN, 1)],
                             ir_version=10, functions=list(functions))


def test_no_pow_in_the_function_bodies():
    assert all(n.op_type != "Pow" for f in log_functions() for n in f.node)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exp2_neg_is_exact_for_every_exponent(runtime):
    from dgq_compiler.runtime import session

    k = np.arange(-8, 258, dtype=np.float32)
    exact = np.ldexp(1.0, -k.astype(np.int64)).astype(np.float32)       # float64 -> float32: round half to even
    assert exact[k == 150] == 0 and exact[k == 149] > 0 and exact[k == 130] < np.finfo(np.float32).tiny
    model = _model(exp2_neg_nodes("k", "y"), [helper.make_tensor_value_info("k", TensorProto.FLOAT, [None])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    got = session(model, runtime).run(None, {"k": k})[0]
    np.testing.assert_array_equal(got.view(np.uint32), exact.view(np.uint32))
    plain = np.exp(np.float32(-np.log(2.0)) * k).astype(np.float32)       # the approximation before the split
    assert (plain != exact).any()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dequantize_log_is_s_times_two_to_the_minus_code(runtime):
    from dgq_compiler.runtime import session

    node = helper.make_node(DEQUANTIZE_LOG, ["q", "s"], ["y"], domain=LOG_DOMAIN)
    model = _model([node], [helper.make_tensor_value_info("q", TensorProto.UINT8, [None]),
                            helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], log_functions())
    q = np.arange(256, dtype=np.uint8)
    for s in (np.array(1.0, np.float32), np.array(0.3, np.float32), np.array(1.7, np.float32)):
        want = (s * np.ldexp(1.0, -q.astype(np.int64)).astype(np.float32)).astype(np.float32)
        got = session(model, runtime).run(None, {"q": q, "s": s})[0]
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("bits", [8, 3])
def test_quantize_log_codes_equal_the_simulators_at_every_threshold(runtime, bits):
    """Both sides of every threshold 2^-(k + 1/2), normal and subnormal, powers of two, subnormal ratios, r > 1,
    0 and random values."""
    from dgq_compiler.runtime import session
    from simulator.ops.quantize_log import log_codes

    r = _log_inputs(bits)
    r = r[r >= 0]
    s = np.array(1.0, np.float32)   # x = r: every ratio, subnormal ones included, reaches the function unrounded
    x = r
    node = helper.make_node("QuantizeLog", ["x", "s"], ["q"], domain=LOG_DOMAIN, bits=bits)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
                            helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                   [helper.make_tensor_value_info("q", TensorProto.UINT8, [None])], log_functions())
    got = session(model, runtime).run(None, {"x": x, "s": s})[0]
    want = log_codes(x, s, bits)
    assert (want[(x > 0) & (x < np.finfo(np.float32).tiny)] >= min(126, 2 ** bits - 1)).all() and len(np.unique(want)) > 7
    np.testing.assert_array_equal(got, want)
    # the inputs straddle the thresholds: rounding -log2 in float64 and clamping already disagree somewhere
    with np.errstate(divide="ignore"):
        naive = np.clip(np.round(-np.log2((x / s).astype(np.float32))), 0, 2 ** bits - 1)
    assert bits < 8 or (naive != want).any()


def _log_inputs(seed: int) -> np.ndarray:
    """r = x / S on both sides of every threshold 2^-(k + 1/2) (normal and subnormal), powers of two, the subnormal
    range's ends, values above 1 (static scales), 0, a negative value, infinity and random values."""
    k = np.arange(-2, 150, dtype=np.float64)
    t = (2.0 ** -(k + 0.5)).astype(np.float32)
    sub = (np.arange(1, 2 ** 10, dtype=np.float64) * 2.0 ** -149).astype(np.float32)   # subnormals 2^-149 .. 2^-139
    rng = np.random.default_rng(seed)
    return np.concatenate([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf)),
                           (2.0 ** -k).astype(np.float32), sub, np.array([0.0, 1.0, 1.5, 3.0, 2.0 ** 100, -0.25,
                                                                          np.inf], np.float32),
                           rng.random(4000, dtype=np.float32) ** 12]).astype(np.float32)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("bits", [8, 3])
def test_quantize_dequantize_log_equals_the_pair_and_the_simulator(runtime, bits):
    """The fused function's value is S * 2^-code with the simulator's code, bit for bit, at every threshold, on
    subnormal ratios, saturating ratios and for scales down to 2^-120; and DequantizeLog(QuantizeLog(x, S), S)
    for every x >= 0."""
    from dgq_compiler.runtime import session
    from passes.contract import QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG
    from passes.log_functions import FUSED_LOG_OPSET, quantize_dequantize_log_function
    from simulator.ops.quantize_log import log_codes

    r = _log_inputs(bits)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, [])]
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])]
    fused = _model([helper.make_node(QUANTIZE_DEQUANTIZE_LOG, ["x", "s"], ["y"], domain=LOG_DOMAIN, bits=bits)],
                   inputs, y, [quantize_dequantize_log_function(), *log_functions(FUSED_LOG_OPSET)])
    fused.opset_import[0].version = FUSED_LOG_OPSET
    fused.ir_version = 13
    pair = _model([helper.make_node(QUANTIZE_LOG, ["x", "s"], ["q"], domain=LOG_DOMAIN, bits=bits),
                   helper.make_node(DEQUANTIZE_LOG, ["q", "s"], ["y"], domain=LOG_DOMAIN)], inputs, y, log_functions())
    fused_run, pair_run = session(fused, runtime), session(pair, runtime)
    seen = set()
    for s in (1.0, 0.75, 1.7, 2.0 ** -120):
        s = np.array(s, np.float32)
        with np.errstate(over="ignore"):
            x = (r * s).astype(np.float32)
        x[-4007] = -0.25 * s   # keep the negative input negative whatever the scale
        keep = (x == 0) | (x / s == r) | ~np.isfinite(x)   # the ratios survive the scaling (or are the edge cases)
        x = x[keep]
        got = fused_run.run(None, {"x": x, "s": s})[0]
        codes = log_codes(x, s, bits).astype(np.int64)
        seen.update(codes.tolist())
        want = (s * np.ldexp(1.0, -codes).astype(np.float32)).astype(np.float32)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        probs = x >= 0   # the pair takes probabilities (a negative x has no logarithm)
        np.testing.assert_array_equal(got[probs].view(np.uint32),
                                      pair_run.run(None, {"x": x, "s": s})[0][probs].view(np.uint32))
    assert len(seen) == (151 if bits == 8 else 8)   # every code a float32 ratio can have: 0..149 and the clamp 255
