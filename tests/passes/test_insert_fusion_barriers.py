"""insert_fusion_barriers: compiled graphs run in a default onnxruntime session exactly as written.

On the tiny layer graph (Conv, MatMul, Gemm) with per-group, per-tensor and float activations: where the barrier
goes, that a default session then gives the graph-as-written result, that per-tensor products keep onnxruntime's
integer fusion, and that without the pass a default session fails (per-channel) or drifts (float activations).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_fusion_barriers import BARRIER_SUFFIX, InsertFusionBarriers
from passes.insert_step_index import InsertStepIndex
from passes.quantize_weights import QuantizeWeights


def _feed(t=500.0):
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 4)).astype(np.float32)
    return {"sample": x * 2, "timestep": np.array([t], np.float32)}


def _recipe(tg, proj_axis, quantize_proj_input=True):
    entries = [tg.weight_entry(m, c, bits=8, seed=i) for i, (m, c) in enumerate((("down.conv", 6), ("proj", 8),
                                                                                 ("time", 5)))]
    entries.append(tg.uniform_entry("down.conv", "input", axis="channel", n=4, groups=2, seed=4))
    entries.append(tg.uniform_entry("time", "input", axis="channel", n=6, groups=3, seed=6))
    if quantize_proj_input:
        entries.append(tg.uniform_entry("proj", "input", axis=proj_axis, n=6 if proj_axis == "channel" else 16,
                                        groups=3, seed=5))
    return tg.make_recipe(entries)


def _compile(tg, recipe, barriers=True):
    passes = [InsertStepIndex(), QuantizeWeights(), InsertActivationQdq()]
    passes += [InsertFusionBarriers()] if barriers else []
    return tg.compile_model(tg.layers_model(), recipe, passes)[0]


def _default_session(model, optimized_path=None):
    options = ort.SessionOptions()
    if optimized_path is not None:  # only to look at what onnxruntime made of it; the session itself is default
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _barriered(model) -> set:
    return {n.name[:-len(BARRIER_SUFFIX)] for n in model.graph.node if n.name.endswith(BARRIER_SUFFIX)}


@pytest.mark.parametrize("proj_axis", ["channel", "pixel"])
def test_per_group_products_get_a_barrier_and_run_as_written(tg, proj_axis, tmp_path):
    model = _compile(tg, _recipe(tg, proj_axis))
    # structure: the MatMul and the Gemm (per-group inputs) read their weight through the barrier; Conv never
    assert _barriered(model) == {"/unet/proj/MatMul", "/unet/time/Gemm"}
    barrier = next(n for n in model.graph.node if n.name == "/unet/proj/MatMul" + BARRIER_SUFFIX)
    assert barrier.op_type == "Reshape" and barrier.input[0] == "onnx::MatMul_1_dequantized"
    # numerics: a default session equals the graph as written (no optimisation) at every step
    for t in (900.0, 500.0, 100.0):
        want = tg.run(model, _feed(t))
        got = _default_session(model, tmp_path / "opt.onnx").run(None, _feed(t))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    fused = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx"), load_external_data=False).graph.node}
    assert not fused & {"MatMulIntegerToFloat", "MatMulNBits"}


def test_without_barriers_a_default_session_refuses_per_channel_activations(tg):
    model = _compile(tg, _recipe(tg, "channel"), barriers=False)
    with pytest.raises(Exception, match="MatMulIntegerToFloat"):
        _default_session(model).run(None, _feed())


def test_float_activation_keeps_float_arithmetic(tg):
    """A quantized weight under a float activation: without the barrier onnxruntime makes it MatMulNBits, which
    re-quantizes the activation (a visible error); with it, the product is the graph's float product."""
    recipe = _recipe(tg, "channel", quantize_proj_input=False)
    plain = _compile(tg, recipe, barriers=False)
    drift = np.abs(_default_session(plain).run(None, _feed())[0] - tg.run(plain, _feed())[0]).max()
    assert drift > 1e-4
    model = _compile(tg, recipe)
    assert "/unet/proj/MatMul" in _barriered(model)
    np.testing.assert_allclose(_default_session(model).run(None, _feed())[0], tg.run(model, _feed())[0],
                               rtol=1e-5, atol=1e-6)


def test_per_tensor_products_keep_the_integer_fusion(tg, tmp_path):
    model = _compile(tg, _recipe(tg, "tensor"))
    assert "/unet/proj/MatMul" not in _barriered(model)
    got = _default_session(model, tmp_path / "opt.onnx").run(None, _feed())[0]
    np.testing.assert_allclose(got, tg.run(model, _feed())[0], rtol=1e-5, atol=1e-5)
    fused = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx"), load_external_data=False).graph.node]
    assert "MatMulIntegerToFloat" in fused
