import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dgq_compiler.recipe import TensorQuant
from passes.errors import PassError
from passes.insert_step_index import InsertStepIndex
from passes.contract import LOG_DOMAIN as DOMAIN
from passes.manager import run_passes
from passes.quantize_attention_probs import QuantizeAttentionProbs
from passes.split_cross_attention import SplitCrossAttention

PASSES = [InsertStepIndex(), QuantizeAttentionProbs(), SplitCrossAttention()]


def _log_entry(module, bits=6, exclude_bos=False, dynamic=True):
    return TensorQuant(module, "attn_probs", "log2", bits, "tensor", np.full((3, 1), 0.8), np.zeros((3, 1)),
                       dynamic=dynamic, exclude_bos=exclude_bos)


def _feed(t=500.0, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 6, 8)).astype(np.float32), "timestep": np.array([t], np.float32),
            "encoder_hidden_states": (rng.standard_normal((2, 5, 4)) * 2).astype(np.float32)}


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference(tg, model, feed, quantize):
    """numpy attention of the test graph; `quantize(name, probs, v) -> probs @ v` replaces the A.V product."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = feed["x"]
    for name, ctx in (("attn1", None), ("attn2", feed["encoder_hidden_states"])):
        src = h if ctx is None else ctx
        heads = lambda t: t.reshape(2, t.shape[1], 2, 4).transpose(0, 2, 1, 3).reshape(4, t.shape[1], 4)  # noqa
        q = heads(h @ w[f"onnx::MatMul_{name}_to_q"])
        k = heads(src @ w[f"onnx::MatMul_{name}_to_k"])
        v = heads(src @ w[f"onnx::MatMul_{name}_to_v"])
        probs = _softmax((q @ k.transpose(0, 2, 1)) * np.float32(0.5)).astype(np.float32)
        o = quantize(name, probs, v)
        o = o.reshape(2, 2, 6, 4).transpose(0, 2, 1, 3).reshape(2, 6, 8)
        h = o @ w[f"onnx::MatMul_{name}_out"]
    return h


def _peak(probs, per_sample: bool, heads: int = 2):
    """The dynamic log scale: each sample's max over its `heads` rows of [B*heads, N, M], or the whole batch's."""
    if not per_sample:
        return probs.max()
    return probs.reshape(-1, heads * probs[0].size).max(axis=1).repeat(heads).reshape(-1, 1, 1)


def _log_reference(tg, per_sample: bool):
    """A.V of the test graph's attentions with log2 probabilities: attn1 6 bits, attn2 4 bits with <start> FP."""
    def quantize(name, probs, v):
        if name == "attn1":
            return tg.log_fake_quant(probs, _peak(probs, per_sample), 6)[0] @ v
        rest = probs[..., 1:]
        return probs[..., :1] @ v[:, :1] + tg.log_fake_quant(rest, _peak(rest, per_sample), 4)[0] @ v[:, 1:]
    return quantize


def test_log2_probs_self_and_cross_with_bos_split(tg):
    model = tg.attention_model()
    recipe = tg.make_recipe([_log_entry("attn1", bits=6), _log_entry("attn2", bits=4, exclude_bos=True)])
    out, ctx = tg.compile_model(model, recipe, PASSES)
    # structure: model-local functions of domain dgq, one Q/DQ-log pair per attention, the split Add
    assert {(f.domain, f.name) for f in out.functions} == {(DOMAIN, "QuantizeLog"), (DOMAIN, "DequantizeLog")}
    assert {o.domain: o.version for o in out.opset_import}[DOMAIN] == 1
    qlog = [n for n in out.graph.node if n.op_type == "QuantizeLog"]
    assert sorted(n.name for n in qlog) == ["dgq/attn1/attn_probs/QuantizeLog", "dgq/attn2/attn_probs/QuantizeLog"]
    assert all(n.domain == DOMAIN for n in qlog)
    assert {onnx.helper.get_attribute_value(n.attribute[0]) for n in qlog} == {6, 4}
    add = next(n for n in out.graph.node if n.name == "dgq/attn2/split/Add")
    assert add.output[0] == "attn2_o"  # the original A.V output: downstream is unchanged
    av = next(n for n in out.graph.node if n.name == "/unet/attn2/MatMul_1")
    assert av.input[0] == "dgq/attn2/attn_probs/DequantizeLog_output_0"
    assert av.input[1] == "dgq/attn2/split/Slice_v_rest_output_0"
    assert not any(n.name.startswith("dgq/attn1/split") for n in out.graph.node)  # self-attention: no split

    feed = _feed()
    got = tg.run(out, feed)[0]
    np.testing.assert_allclose(got, _reference(tg, model, feed, _log_reference(tg, per_sample=True)),
                               rtol=1e-4, atol=1e-5)
    fp = _reference(tg, model, feed, lambda n, p, v: p @ v)
    assert np.abs(got - fp).max() > 1e-3  # quantization really happened
    # the whole-batch scale (one max over both samples) is a different quantizer, and the test can tell
    whole_batch = _reference(tg, model, feed, _log_reference(tg, per_sample=False))
    assert np.abs(got - whole_batch).max() > 1e-3
    assert [(r.module, r.bos_split) for r in sorted(ctx.records, key=lambda r: r.module)] == \
        [("attn1", False), ("attn2", True)]


def test_dynamic_log_scale_is_per_sample_so_a_sample_ignores_its_batch(tg):
    """Sample 1 run alone equals sample 1 run beside sample 0 (and the per-sample scale nodes reduce per row)."""
    model = tg.attention_model()
    recipe = tg.make_recipe([_log_entry("attn1", bits=6), _log_entry("attn2", bits=4, exclude_bos=True)])
    out, _ = tg.compile_model(model, recipe, PASSES)
    reduce_axes = {n.name: numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == n.input[1]))
                   for n in out.graph.node if n.op_type == "ReduceMax"}
    assert len(reduce_axes) == 4 and all(a.tolist() in ([-2, -1], [1]) for a in reduce_axes.values())
    # the test graph has a fixed batch 2: sample 1 beside two different partners must give the same output
    feed = _feed(seed=3)
    other = _feed(seed=4)
    mixed = {k: (np.concatenate([other[k][:1], feed[k][1:]]) if k != "timestep" else v) for k, v in feed.items()}
    a, b = tg.run(out, feed)[0], tg.run(out, mixed)[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0] - b[0]).max() > 1e-3


def test_static_log_scale_and_uniform_probs_follow_the_step(tg):
    model = tg.attention_model()
    scales = np.array([[0.9], [0.5], [0.25]], np.float32)
    static = TensorQuant("attn1", "attn_probs", "log2", 8, "tensor", scales, np.zeros((3, 1)), dynamic=False)
    uniform = TensorQuant("attn2", "attn_probs", "uniform", 8, "tensor", np.array([[1 / 255], [1 / 200], [1 / 100]]),
                          np.zeros((3, 1)))
    out, _ = tg.compile_model(model, tg.make_recipe([static, uniform]), PASSES)
    assert "ReduceMax" not in tg.ops(out)
    for t, step in ((900, 0), (500, 1), (120, 2)):
        def quantize(name, probs, v):
            if name == "attn1":
                return tg.log_fake_quant(probs, scales[step, 0], 8)[0] @ v
            s = np.float32(uniform.scale[step, 0])
            return tg.fake_quant(probs, s, np.float32(0), 8) @ v
        feed = _feed(t)
        np.testing.assert_allclose(tg.run(out, feed)[0], _reference(tg, model, feed, quantize), rtol=1e-4, atol=1e-5)


def test_log_codes_are_exact_at_rounding_boundaries(tg):
    """Values right next to 2^-(k + 1/2): codes follow the exact threshold, not float error in Log."""
    from onnx import TensorProto, helper

    from passes.log_functions import log_functions
    k = np.arange(0, 20, dtype=np.float64)
    t = 2.0 ** -(k + 0.5)
    x = np.concatenate([np.nextafter(t.astype(np.float32), np.float32(0)), np.nextafter(t.astype(np.float32),
                                                                                        np.float32(1)),
                        t.astype(np.float32), np.array([0.0, 1.0], np.float32)]).astype(np.float32)
    node = helper.make_node("QuantizeLog", ["x", "s"], ["q"], domain=DOMAIN, bits=8)
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [None]),
                                                             helper.make_tensor_value_info("s", 1, [])],
                                                [helper.make_tensor_value_info("q", TensorProto.UINT8, [None])]),
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10, functions=log_functions())
    q = tg.run(model, {"x": x, "s": np.array(1.0, np.float32)})[0]
    exact = np.array([min(int(np.floor(-np.log2(float(v)) + 0.5)), 255) if v > 0 else 255 for v in x])
    np.testing.assert_array_equal(q, exact)


def test_missing_or_broken_attention_pattern_is_a_clear_error(tg):
    import onnx_graphsurgeon as gs

    from passes.base import PassContext
    from passes.module_map import build_module_map

    broken = tg.attention_model(softmax="LogSoftmax")
    with pytest.raises(PassError, match=r"quantize_attention_probs.*attn1.*no MatMul -> Softmax -> MatMul attention"):
        tg.compile_model(broken, tg.make_recipe([_log_entry("attn1")]), PASSES)
    # the module map says attention (from the good export), the graph no longer has the pattern
    ctx = PassContext(tg.make_recipe([_log_entry("attn1")]), build_module_map(tg.attention_model()))
    with pytest.raises(PassError, match=r"pass quantize_attention_probs failed \(after insert_step_index\): "
                                         r"attention attn1: QK\^T '/unet/attn1/MatMul' reaches LogSoftmax"):
        run_passes(PASSES, gs.import_onnx(broken), ctx)
    with pytest.raises(PassError, match=r"no MatMul -> Softmax -> MatMul attention"):
        tg.compile_model(tg.layers_model(), tg.make_recipe([_log_entry("attn1")]), PASSES)
    with pytest.raises(PassError, match=r"split_cross_attention.*attn1.*self-attention"):
        tg.compile_model(tg.attention_model(), tg.make_recipe([_log_entry("attn1", exclude_bos=True)]), PASSES)
