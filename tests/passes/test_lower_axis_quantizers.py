"""lower_axis_quantizers: per-axis QuantizeLinear -> Div, Round, Add, QuantizeLinear(1, 0), codes unchanged.

The codes are compared with the simulator's QuantizeLinear (round half to even, saturation to the zero point's
type) on inputs made to hit rounding ties, saturation at both ends and both code types; a half-away-from-zero
rounding would differ on those inputs (asserted, so the comparison can tell). On the tiny attention model compiled
for onnxruntime-cpu, no per-axis QuantizeLinear remains and every q/k/v code equals the QDQ graph's."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from passes.base import PassContext
from passes.lower_axis_quantizers import LowerAxisQuantizers
from passes.lower_pipeline import lowering_passes
from passes.pipeline import compile_passes


def _quantizer_model(shape, axis, code_type):
    n = shape[axis]
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="dgq/m/q/QuantizeLinear", axis=axis)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                            helper.make_tensor_value_info("s", TensorProto.FLOAT, [n]),
                                            helper.make_tensor_value_info("z", code_type, [n])],
                              [helper.make_tensor_value_info("q", code_type, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _feed(shape, axis, code_type, rng):
    n = shape[axis]
    s = (2.0 ** rng.integers(-4, 2, n)).astype(np.float32)         # powers of two: x = (k + 1/2) s is exact
    bcast = [1] * len(shape)
    bcast[axis] = n
    halves = rng.integers(-300, 300, shape) + 0.5                    # ties, and past both ends of the grid
    x = (halves * s.reshape(bcast)).astype(np.float32)
    x.reshape(-1)[::7] = rng.standard_normal(x.size)[::7].astype(np.float32) * 40
    z = rng.integers(0, 256, n).astype(np.uint8) if code_type == TensorProto.UINT8 else \
        rng.integers(-128, 128, n).astype(np.int8)
    return {"x": x, "s": s, "z": z}


@pytest.mark.parametrize("shape,axis,code_type", [([2, 7, 5], 2, TensorProto.UINT8), ([2, 7, 5], 1, TensorProto.UINT8),
                                                  ([2, 3, 4, 5], 1, TensorProto.INT8), ([3, 6], -1, TensorProto.INT8)])
def test_spelled_out_codes_equal_the_simulators(shape, axis, code_type):
    from dgq_compiler.runtime import session
    from simulator.executor import Simulator

    model = _quantizer_model(shape, axis, code_type)
    ctx = PassContext(None, [])
    out = gs.export_onnx(LowerAxisQuantizers().run(gs.import_onnx(model), ctx))
    onnx.checker.check_model(out, full_check=True)
    quantizers = [n for n in out.graph.node if n.op_type == "QuantizeLinear"]
    assert [n.name for n in quantizers] == ["dgq/m/q/QuantizeLinear"]
    assert {a.name for a in quantizers[0].attribute} == set()               # per tensor now: scale 1, zero 0
    assert {n.op_type for n in out.graph.node} >= {"Div", "Round", "Add"}
    feed = _feed(shape, axis, code_type, np.random.default_rng(len(shape) + axis))
    want = Simulator(model, integer=False).run(feed).outputs["q"]
    for runtime in ("default", "reference"):
        got = session(out, runtime).run(None, feed)[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    # the inputs tell roundings apart: half away from zero, and saturation, change codes here
    lo, hi = np.iinfo(want.dtype).min, np.iinfo(want.dtype).max
    bcast = [1] * len(shape)
    bcast[axis] = -1
    r = feed["x"] / feed["s"].reshape(bcast)
    z = feed["z"].astype(np.float32).reshape(bcast)
    away = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5) + z, lo, hi)
    assert (away != want).any() and (want == lo).any() and (want == hi).any()


def test_no_per_axis_quantizer_is_left_in_a_lowered_attention_and_codes_are_the_qdq_graphs(tg):
    from dgq_compiler.runtime import run_all, session, with_outputs

    model = tg.attention_model()
    entries = [tg.uniform_entry("attn1", "q", axis="channel", n=8, groups=3, seed=1),
               tg.uniform_entry("attn1", "k", axis="pixel", n=6, groups=2, seed=2),
               tg.uniform_entry("attn1", "v", axis="channel", n=8, groups=2, seed=3, bits=6),
               tg.uniform_entry("attn2", "q", axis="pixel", n=6, groups=3, seed=4),
               tg.uniform_entry("attn2", "k", axis="channel", n=8, groups=2, seed=5, exclude_bos=True),
               tg.uniform_entry("attn2", "v", axis="tensor", seed=6)]
    recipe = tg.make_recipe(entries)
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    lowered, _ = tg.compile_model(model, recipe, lowering_passes())
    per_axis = [n.name for n in lowered.graph.node if n.op_type == "QuantizeLinear"
                and any(a.name == "axis" for a in n.attribute)]
    assert per_axis == []
    names = [n.name for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert len(names) == 6 and sum(any(a.name == "axis" for a in n.attribute) for n in qdq.graph.node
                                   if n.op_type == "QuantizeLinear") == 5
    # static analysis (dgq check, verify) reads the same quantizers from both: parameters via the dequantizer
    from simulator.graph_info import analyse
    fields = lambda m: sorted((q.node, q.axis, q.groups, q.steps, q.symmetric, q.scale_source, q.code_type)  # noqa: E731
                              for q in analyse(m).quantizers)
    assert fields(lowered) == fields(qdq) and {q[2] for q in fields(qdq)} == {1, 2, 3}
    codes = {n.output[0]: TensorProto.UINT8 for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert {n.output[0] for n in lowered.graph.node if n.name in names} == set(codes)
    rng = np.random.default_rng(0)
    for t in tg.TIMESTEPS:
        feed = {"x": rng.standard_normal((2, 6, 8)).astype(np.float32) * 2, "timestep": np.array([t], np.float32),
                "encoder_hidden_states": rng.standard_normal((2, 5, 4)).astype(np.float32)}
        want = run_all(session(with_outputs(qdq, codes), "default"), feed)
        got = run_all(session(with_outputs(lowered, codes), "default"), feed)
        for name in codes:
            np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_array_equal(got["out"], want["out"])
