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
    """Both sides of every normal threshold 2^-(k + 1/2), powers of two, r > 1, 0 and random values."""
    from dgq_compiler.runtime import session
    from simulator.ops.quantize_log import log_codes

    k = np.arange(-2, 126, dtype=np.float64)
    t = (2.0 ** -(k + 0.5)).astype(np.float32)
    rng = np.random.default_rng(bits)
    r = np.concatenate([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf)),
                        (2.0 ** -k).astype(np.float32), np.array([0.0, 1.0, 3.0], np.float32),
                        rng.random(4000, dtype=np.float32) ** 12]).astype(np.float32)
    s = np.array(0.75, np.float32)
    x = (r * s).astype(np.float32)
    node = helper.make_node("QuantizeLog", ["x", "s"], ["q"], domain=LOG_DOMAIN, bits=bits)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
                            helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                   [helper.make_tensor_value_info("q", TensorProto.UINT8, [None])], log_functions())
    got = session(model, runtime).run(None, {"x": x, "s": s})[0]
    want = log_codes(x, s, bits)
    np.testing.assert_array_equal(got, want)
    # the inputs straddle the thresholds: rounding -log2 in float64 and clamping already disagree somewhere
    with np.errstate(divide="ignore"):
        naive = np.clip(np.round(-np.log2((x / s).astype(np.float32))), 0, 2 ** bits - 1)
    assert bits < 8 or (naive != want).any()
