"""quantize_text_embedding: the text embedding at attn2.to_k/to_v quantized with its <start> row kept FP."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dgq_compiler.errors import DgqError
from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_step_index import InsertStepIndex
from passes.quantize_text_embedding import QuantizeTextEmbedding

PASSES = [InsertStepIndex(), InsertActivationQdq(), QuantizeTextEmbedding()]


def _feed(t, bos=40.0, seed=0):
    """Text states whose <start> row is an outlier far outside the other tokens' range, as CLIP's is."""
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((2, 5, 4)).astype(np.float32)
    states[:, 0] = bos * np.array([1.0, -0.5, 0.75, 0.25], np.float32)
    return {"x": rng.standard_normal((2, 6, 8)).astype(np.float32), "timestep": np.array([t], np.float32),
            "encoder_hidden_states": states}


def _probe(model, names):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n, 1, None) for n in names])
    return probe


def _entries(tg, exclude_bos=True):
    return [tg.uniform_entry("attn2.to_k", "input", bits=6, seed=1, span=5.0, exclude_bos=exclude_bos),
            tg.uniform_entry("attn2.to_v", "input", bits=8, axis="pixel", n=4, groups=2, seed=2,
                             exclude_bos=exclude_bos)]


def test_bos_row_stays_fp_and_the_rest_is_quantized_per_step(tg):
    model = tg.attention_model()
    recipe = tg.make_recipe(_entries(tg))
    out, ctx = tg.compile_model(model, recipe, PASSES)
    by_name = {n.name: n for n in out.graph.node}
    by_out = {o: n for n in out.graph.node for o in n.output}
    for module in ("attn2.to_k", "attn2.to_v"):  # structure: each projection reads its own Concat
        proj = by_name[f"/unet/{module.replace('.', '/')}/MatMul"]
        assert by_out[proj.input[0]].name == f"dgq/{module}/input/Concat"
        assert by_out[f"dgq/{module}/input/QuantizeLinear_output_0"].input[0] == f"dgq/{module}/input/Slice_rest_output_0"
        assert by_name[f"dgq/{module}/input/Slice_bos"].input[0] == "encoder_hidden_states"
    assert {(r.module, r.bos_split) for r in ctx.records} == {("attn2.to_k", True), ("attn2.to_v", True)}
    assert tg.ops(out).count("Clip") == 1  # the 6-bit grid of to_k only
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    names = ["dgq/attn2.to_k/input/Concat_output_0", "dgq/attn2.to_v/input/Concat_output_0", "attn2_to_k", "attn2_to_v"]
    for t, step in ((900, 0), (480, 1), (120, 2)):
        feed = _feed(t)
        states = feed["encoder_hidden_states"]
        got = dict(zip(names, tg.run(_probe(out, names), feed)[1:]))
        for module, key in (("attn2.to_k", "to_k"), ("attn2.to_v", "to_v")):
            x_q = got[f"dgq/{module}/input/Concat_output_0"]
            np.testing.assert_array_equal(x_q[:, 0], states[:, 0])  # the outlier row passes exactly
            tq = recipe.tensors[(module, "input")]
            s, z = tg.per_index(tq, step, 4)
            shape = (1, -1, 1) if tq.axis == "pixel" else ()
            want = tg.fake_quant(states[:, 1:], np.reshape(s, shape), np.reshape(z, shape), tq.bits)
            np.testing.assert_allclose(x_q[:, 1:], want, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(got[f"attn2_{key}"], x_q @ inits[f"onnx::MatMul_attn2_{key}"], rtol=1e-5,
                                       atol=1e-5)


def test_plain_per_tensor_grid_clips_the_bos_row(tg):
    """The case that must not match: the same grid without exclude_bos saturates the <start> row."""
    model = tg.attention_model()
    plain, _ = tg.compile_model(model, tg.make_recipe(_entries(tg, exclude_bos=False)[:1]), PASSES)
    aware, _ = tg.compile_model(model, tg.make_recipe(_entries(tg)[:1]), PASSES)
    assert not any("Slice_bos" in n.name for n in plain.graph.node)
    feed = _feed(480)
    bos = feed["encoder_hidden_states"][:, 0]
    k_plain = tg.run(_probe(plain, ["attn2_to_k"]), feed)[1]
    k_aware = tg.run(_probe(aware, ["attn2_to_k"]), feed)[1]
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "onnx::MatMul_attn2_to_k"))
    np.testing.assert_allclose(k_aware[:, 0], bos @ w, rtol=1e-5, atol=1e-4)
    assert np.abs(k_plain[:, 0] - bos @ w).max() > 1.0  # clipped at the grid's edge: far off
    np.testing.assert_allclose(k_plain[:, 1:], k_aware[:, 1:], rtol=1e-5, atol=1e-5)  # same grid for the rest


def test_only_text_embedding_inputs_may_keep_bos_fp(tg):
    with pytest.raises(DgqError, match=r"exclude_bos applies"):
        tg.uniform_entry("attn1.to_k", "input", exclude_bos=True)
    with pytest.raises(DgqError, match=r"exclude_bos applies"):
        tg.uniform_entry("attn2.to_q", "input", exclude_bos=True)
