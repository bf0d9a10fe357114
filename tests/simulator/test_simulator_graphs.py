"""The simulator on hand-made compiled-graph fragments (conftest `qdq`), against onnxruntime: integer
paths taken, outputs equal up to float32 rounding, codes equal, unknown ops named."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dgq_compiler.runtime import run_all, session, with_outputs
from simulator.errors import SimulatorError
from simulator.executor import Simulator
from simulator.ops.quantize_log import log_codes


def _ort(model, feeds, extra=()):
    m = with_outputs(model, {name: TensorProto.UINT8 for name in extra})
    return run_all(session(m, "basic", log_severity=3), feeds)


def _check(model, feeds, expect_paths):
    result = Simulator(model, "generic-npu").run(feeds)
    y = result.outputs["y"]
    ref = _ort(model, feeds)["y"]
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * max(1.0, scale))
    paths = sorted(s.path for s in result.stats.quantized())
    assert paths == sorted(expect_paths)
    return result


@pytest.mark.parametrize("axis", ["tensor", "channel", "pixel"])
@pytest.mark.parametrize("bits, w_bits", [(8, 8), (6, 4)])
def test_linear_and_conv_fragments_run_integer(qdq, axis, bits, w_bits):
    _check(*qdq.linear(axis=axis, bits=bits, w_bits=w_bits), ["integer"])
    result = _check(*qdq.conv(axis=axis, bits=bits, w_bits=w_bits), ["integer"])
    groups = next(iter(result.stats.quantized())).groups
    assert groups == (1 if axis == "tensor" else 4)


@pytest.mark.parametrize("axis", ["channel", "pixel"])
@pytest.mark.parametrize("split_bos", [False, True])
def test_attention_fragment_integer_and_shift_add(qdq, axis, split_bos):
    _check(*qdq.attention(axis=axis, split_bos=split_bos), ["integer", "shift-add"])


def test_float_mode_and_integer_mode_agree_and_quantized_ops_are_counted(qdq):
    model, feeds = qdq.conv(axis="channel", k=3, stride=2)
    integer = Simulator(model).run(feeds)
    floating = Simulator(model, integer=False).run(feeds)
    np.testing.assert_allclose(integer.outputs["y"], floating.outputs["y"], atol=1e-5)
    assert [s.path for s in integer.stats.quantized()] == ["integer"]
    assert floating.stats.quantized() == []


def test_codes_equal_onnxruntime_and_log_codes_match_the_function_body(qdq):
    model, feeds = qdq.attention(axis="channel", log_bits=8)
    q_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "QuantizeLog")]
    names = [n.output[0] for n in q_nodes]
    ref = _ort(model, feeds, names)
    got = Simulator(model).run(feeds, capture=names).captured
    for name in names:
        np.testing.assert_array_equal(got[name], ref[name])
    # the hardware formula -E - [m > sqrt 2] on values around every sqrt(2) boundary
    rng = np.random.default_rng(0)
    k = rng.integers(0, 30, 2000)
    x = (2.0 ** -(k + 0.5) * (1 + rng.uniform(-1e-6, 1e-6, 2000))).astype(np.float32)
    want = np.clip(np.rint(-np.log2(x.astype(np.float64))), 0, 255)
    np.testing.assert_array_equal(log_codes(x, 1.0, 8), want)
    assert log_codes(np.array([0.0, 1.0, 3.0], np.float32), 1.0, 4).tolist() == [15, 0, 0]


def test_unknown_op_names_op_and_node():
    node = helper.make_node("Hardmax", ["x"], ["y"], name="/unet/odd/Hardmax")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(SimulatorError, match=r"/unet/odd/Hardmax.*'Hardmax'"):
        Simulator(helper.make_model(graph))


def test_exported_fp32_unet_matches_onnxruntime(tiny_export_dir):
    model = onnx.load(str(tiny_export_dir / "unet.onnx"))
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((2, 4, 16, 16)).astype(np.float32),
             "timestep": np.array([321.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 77, 32)).astype(np.float32)}
    ours = Simulator(model).run(feeds).outputs["out_sample"]
    ref = session(model, "default").run(None, feeds)[0]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
