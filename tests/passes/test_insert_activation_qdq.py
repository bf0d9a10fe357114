import numpy as np
import onnx
import pytest

from passes.errors import PassError
from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_step_index import InsertStepIndex


def _feed(t, seed=1):
    return {"sample": (np.random.default_rng(seed).standard_normal((1, 4, 4, 4)) * 2).astype(np.float32),
            "timestep": np.array([t], np.float32)}


def _reference(tg, model, recipe, feed, step):
    """Run the fp32 graph piecewise with numpy fake quantization at each module input."""
    from onnx import numpy_helper
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = feed["sample"]
    tq = recipe.tensors.get(("down.conv", "input"))
    if tq is not None:
        s, z = tg.per_index(tq, step, 16 if tq.axis == "pixel" else 4)
        if tq.axis == "channel":
            x = tg.fake_quant(x, s.reshape(1, -1, 1, 1), z.reshape(1, -1, 1, 1), tq.bits)
        elif tq.axis == "pixel":
            x = tg.fake_quant(x.reshape(1, 4, 16), s.reshape(1, 1, -1), z.reshape(1, 1, -1), tq.bits).reshape(x.shape)
        else:
            x = tg.fake_quant(x, s, z, tq.bits)
    sub = onnx.helper.make_model(onnx.helper.make_graph(
        [n for n in model.graph.node], "g", [onnx.helper.make_tensor_value_info("sample", 1, [1, 4, 4, 4]),
                                             onnx.helper.make_tensor_value_info("timestep", 1, [1])],
        [onnx.helper.make_tensor_value_info(n, 1, None) for n in ("tokens", "pooled")], model.graph.initializer),
        opset_imports=[onnx.helper.make_opsetid("", 21)], ir_version=10)
    tokens, pooled = tg.run(sub, {"sample": x, "timestep": feed["timestep"]})
    tq = recipe.tensors.get(("proj", "input"))
    if tq is not None:
        s, z = tg.per_index(tq, step, 16 if tq.axis == "pixel" else 6)
        shape = (1, -1, 1) if tq.axis == "pixel" else (1, 1, -1)
        tokens = tg.fake_quant(tokens, np.reshape(s, shape), np.reshape(z, shape), tq.bits)
    y = tokens @ inits["onnx::MatMul_1"]
    tq = recipe.tensors.get(("time", "input"))
    if tq is not None:
        s, z = tg.per_index(tq, step, 6)
        pooled = tg.fake_quant(pooled, np.reshape(s, (1, -1)), np.reshape(z, (1, -1)), tq.bits)
    zz = pooled @ inits["time_w"].T + inits["time_b"]
    return y, zz


@pytest.mark.parametrize("conv_axis,proj_axis,bits,shared", [
    ("channel", "pixel", 8, False), ("pixel", "channel", 6, False), ("tensor", "tensor", 4, False),
    ("channel", "pixel", 5, True)])
def test_per_group_per_step_qdq_matches_numpy_at_every_step(tg, conv_axis, proj_axis, bits, shared):
    n_conv = 16 if conv_axis == "pixel" else 4
    n_proj = 16 if proj_axis == "pixel" else 6
    entries = [tg.uniform_entry("down.conv", "input", bits=bits, axis=conv_axis, n=n_conv, groups=3, seed=1, shared=shared),
               tg.uniform_entry("proj", "input", bits=bits, axis=proj_axis, n=n_proj, groups=4, seed=2, shared=shared),
               tg.uniform_entry("time", "input", bits=bits, axis="channel" if conv_axis != "tensor" else "tensor",
                                n=6, groups=2, seed=3, shared=shared)]
    recipe = tg.make_recipe(entries)
    model = tg.layers_model()
    out, ctx = tg.compile_model(model, recipe, [InsertStepIndex(), InsertActivationQdq()])
    # structure: one Q/DQ pair per module input, in front of that module's node; Clip only below 8 bits
    q_nodes = [n for n in out.graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(n.name for n in q_nodes) == sorted(f"dgq/{m}/input/QuantizeLinear" for m in ("down.conv", "proj", "time"))
    assert (tg.ops(out).count("Clip") == 3) == (bits < 8)
    for node in out.graph.node:
        if node.name in ("/unet/down/conv/Conv", "/unet/proj/MatMul", "/unet/time/Gemm"):
            producer = next(n for n in out.graph.node if node.input[0] in n.output)
            assert producer.op_type in ("DequantizeLinear", "Reshape") and producer.name.startswith("dgq/")
    meta = {p.key: p.value for p in q_nodes[0].metadata_props}
    assert meta["dgq.bits"] == str(bits) and meta["dgq.role"] == "input"
    assert [i.name for i in out.graph.input] == ["sample", "timestep"]
    # numerics: every calibrated step, and a timestep between two of them (nearest wins)
    for t, step in ((900, 0), (500, 1), (100, 2), (690, 1), (710, 0), (0, 2)):
        got = tg.run(out, _feed(t))
        y, z = _reference(tg, model, recipe, _feed(t), step)
        np.testing.assert_allclose(got[0], y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[1], z, rtol=1e-5, atol=1e-5)
    # the step really matters: different steps give different outputs
    assert not np.allclose(tg.run(out, _feed(900))[0], tg.run(out, _feed(100))[0])


def test_tensor_shared_by_modules_gets_one_qdq_per_module(tg):
    model = tg.attention_model()
    entries = [tg.uniform_entry("attn2.to_k", "input", seed=1), tg.uniform_entry("attn2.to_v", "input", seed=2)]
    out, _ = tg.compile_model(model, tg.make_recipe(entries), [InsertStepIndex(), InsertActivationQdq()])
    readers = [n for n in out.graph.node if "encoder_hidden_states" in n.input]
    assert sorted(n.name for n in readers) == ["dgq/attn2.to_k/input/QuantizeLinear", "dgq/attn2.to_v/input/QuantizeLinear"]


def test_qkv_quantized_at_projection_outputs_and_bos_row_kept_fp(tg):
    model = tg.attention_model()
    entries = [tg.uniform_entry("attn1", "q", axis="channel", n=8, groups=2, seed=1),
               tg.uniform_entry("attn2", "k", axis="pixel", n=4, groups=2, seed=2, exclude_bos=True),
               tg.uniform_entry("attn2", "v", axis="channel", n=8, groups=2, seed=3, exclude_bos=True)]
    out, ctx = tg.compile_model(model, tg.make_recipe(entries), [InsertStepIndex(), InsertActivationQdq()])
    by_out = {o: n for n in out.graph.node for o in n.output}
    q_head = next(n for n in out.graph.node if n.name == "/unet/attn1/Reshape_attn1_qh")
    assert by_out[q_head.input[0]].name == "dgq/attn1/q/DequantizeLinear"
    k_head = next(n for n in out.graph.node if n.name == "/unet/attn2/Reshape_attn2_kh")
    assert by_out[k_head.input[0]].name == "dgq/attn2/k/Concat"
    assert by_out["dgq/attn2/k/QuantizeLinear_output_0"].input[0] == "dgq/attn2/k/Slice_rest_output_0"
    # numerics: k row 0 passes exactly, rows 1.. are fake-quantized with the step's per-token groups
    probe = onnx.ModelProto()
    probe.CopyFrom(out)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n, 1, None)
                               for n in ("dgq/attn2/k/Concat_output_0", "attn2_to_k")])
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((2, 6, 8)).astype(np.float32), "timestep": np.array([480.0], np.float32),
            "encoder_hidden_states": rng.standard_normal((2, 5, 4)).astype(np.float32)}
    _, k_q, k = tg.run(probe, feed)
    np.testing.assert_array_equal(k_q[:, 0], k[:, 0])
    tq = ctx.recipe.tensors[("attn2", "k")]
    s, z = tg.per_index(tq, 1, 4)
    np.testing.assert_allclose(k_q[:, 1:], tg.fake_quant(k[:, 1:], s.reshape(1, -1, 1), z.reshape(1, -1, 1), 8),
                               rtol=1e-6, atol=1e-6)
    assert {(r.role, r.bos_split) for r in ctx.records} == {("q", False), ("k", True), ("v", True)}


def test_bad_placements_are_clear_errors(tg):
    with pytest.raises(PassError, match=r"time, input.*no pixel axis"):
        tg.compile_model(tg.layers_model(), tg.make_recipe([tg.uniform_entry("time", "input", axis="pixel", n=6,
                                                                                groups=2)]),
                         [InsertStepIndex(), InsertActivationQdq()])
    with pytest.raises(PassError, match=r"insert_step_index first"):
        tg.compile_model(tg.layers_model(), tg.make_recipe([tg.uniform_entry("proj", "input")]), [InsertActivationQdq()])
    with pytest.raises(PassError, match=r"attn1.*exclude_bos.*self-attention"):
        tg.compile_model(tg.attention_model(), tg.make_recipe([tg.uniform_entry("attn1", "k", exclude_bos=True)]),
                         [InsertStepIndex(), InsertActivationQdq()])
