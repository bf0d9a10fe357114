import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from passes.check_recipe import CheckRecipe
from passes.errors import PassError
from passes.quantize_weights import QuantizeWeights, pack_int4, quantize_weight_array


def _feed(seed=1):
    return {"sample": np.random.default_rng(seed).standard_normal((1, 4, 4, 4)).astype(np.float32),
            "timestep": np.array([500.0], np.float32)}


def _dequantized_reference(tg, model, recipe):
    """The fp32 graph with each recipe weight replaced by its fake-quantized values."""
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    axis = {"conv_w": 0, "onnx::MatMul_1": 1, "time_w": 0}
    module = {"conv_w": "down.conv", "onnx::MatMul_1": "proj", "time_w": "time"}
    for t in ref.graph.initializer:
        if t.name in axis:
            tq = recipe.tensors[(module[t.name], "weight")]
            w = numpy_helper.to_array(t)
            q = quantize_weight_array(w, tq.scale, tq.zero_point, tq.bits, axis[t.name]).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis[t.name]] = -1
            t.CopyFrom(numpy_helper.from_array(
                ((q - tq.zero_point.reshape(shape)) * tq.scale.reshape(shape)).astype(np.float32), t.name))
    return ref


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_become_integers_with_per_channel_dequantize(tg, bits):
    model = tg.layers_model()
    recipe = tg.make_recipe([tg.weight_entry("down.conv", 6, bits), tg.weight_entry("proj", 8, bits, seed=1),
                             tg.weight_entry("time", 5, bits, seed=2)])
    out, ctx = tg.compile_model(model, recipe, [CheckRecipe(), QuantizeWeights()])
    inits = {t.name: t for t in out.graph.initializer}
    storage = onnx.TensorProto.INT8 if bits == 8 else onnx.TensorProto.INT4
    for name, axis, c_out in (("conv_w", 0, 6), ("onnx::MatMul_1", 1, 8), ("time_w", 0, 5)):
        assert name not in inits  # the fp32 weight left the graph
        assert inits[f"{name}_quantized"].data_type == storage
        assert inits[f"{name}_zero_point"].data_type == storage
        assert list(inits[f"{name}_scale"].dims) == [c_out]
        dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{name}_quantized")
        assert onnx.helper.get_attribute_value(dq.attribute[0]) == axis
        consumer = next(n for n in out.graph.node if dq.output[0] in n.input)
        assert list(consumer.input).index(dq.output[0]) == 1
    # the Conv/MatMul/Gemm read the dequantized weights; numerics equal the fake-quantized fp32 graph
    got = tg.run(out, _feed())
    want = tg.run(_dequantized_reference(tg, model, recipe), _feed())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert {r.role for r in ctx.records} == {"weight"} and len(ctx.records) == 3


def test_modules_without_a_recipe_entry_and_activation_matmuls_stay_fp(tg):
    model = tg.layers_model()
    recipe = tg.make_recipe([tg.weight_entry("proj", 8)])
    out, _ = tg.compile_model(model, recipe, [QuantizeWeights()])
    inits = {t.name for t in out.graph.initializer}
    assert {"conv_w", "time_w"} <= inits and "onnx::MatMul_1" not in inits
    assert tg.ops(out).count("DequantizeLinear") == 1
    gram = next(n for n in out.graph.node if n.name == "/unet/gram/MatMul")
    assert list(gram.input) == ["tokens", "tokensT"]  # activation x activation: not a weighted op
    np.testing.assert_allclose(tg.run(out, _feed())[1], tg.run(model, _feed())[1], rtol=0, atol=0)


def test_int4_packing_layout():
    codes = np.array([-8, 7, 1, -1, 3], np.int8)
    packed = pack_int4(codes)
    assert packed == bytes([0x78, 0xF1, 0x03])  # low nibble first, odd count padded
    tensor = onnx.helper.make_tensor("w", onnx.TensorProto.INT4, [5], vals=packed, raw=True)
    np.testing.assert_array_equal(numpy_helper.to_array(tensor).astype(np.int8), codes)


def test_weight_codes_round_half_to_even_and_clamp():
    w = np.array([[0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0]], np.float32).T  # [6, 1]: one output channel (axis 1)
    q = quantize_weight_array(w, np.array([1.0], np.float32), np.array([0]), 8, axis=1)
    np.testing.assert_array_equal(q[:, 0], [0, 2, 2, 0, 127, -128])
    q4 = quantize_weight_array(w, np.array([1.0], np.float32), np.array([1]), 4, axis=1)
    np.testing.assert_array_equal(q4[:, 0], [1, 3, 3, 1, 7, -8])


def test_channel_count_mismatch_is_a_clear_error(tg):
    recipe = tg.make_recipe([tg.weight_entry("down.conv", 7)])
    with pytest.raises(PassError, match=r"down.conv.*7 channel scales.*6 output channels"):
        tg.compile_model(tg.layers_model(), recipe, [QuantizeWeights()])


def test_file_on_disk_shrinks_to_the_weight_bits(tg, tmp_path):
    """Large weights so graph structure is negligible: the file holds b bits per weight + per-channel params."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    c_in, c_out = 512, 640
    w = rng.standard_normal((c_in, c_out)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/unet/big/MatMul")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, c_in]),
                               helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, c_out])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    for bits in (8, 4):
        out, _ = tg.compile_model(model, tg.make_recipe([tg.weight_entry("big", c_out, bits)]), [QuantizeWeights()])
        path = tmp_path / f"w{bits}.onnx"
        onnx.save(out, str(path))
        predicted = c_in * c_out * bits / 8 + c_out * (4 + bits / 8)  # codes + fp32 scale + zero point
        assert abs(path.stat().st_size - predicted) / predicted < 0.05


@pytest.mark.parametrize("bits", [8, 4])
def test_recipe_codes_learned_rounding_are_written_as_they_are(tg, bits):
    """A recipe entry with codes (learned rounding, torch layout [C_out, ...]) is written verbatim, transposed for a
    MatMul's [K, C_out] weight; without codes the pass rounds the fp32 weight (the codes here must not match that)."""
    from dataclasses import replace

    model = tg.layers_model()
    shapes = {"down.conv": (6, 4, 3, 3), "proj": (8, 6), "time": (5, 6)}  # torch layouts
    rng = np.random.default_rng(3)
    half = 2 ** (bits - 1)
    entries = [tg.weight_entry("down.conv", 6, bits), tg.weight_entry("proj", 8, bits, seed=1),
               tg.weight_entry("time", 5, bits, seed=2)]
    coded = [replace(e, codes=rng.integers(-half, half, shapes[e.module]).astype(np.int8)) for e in entries]
    out, _ = tg.compile_model(model, tg.make_recipe(coded), [QuantizeWeights()])
    plain, _ = tg.compile_model(model, tg.make_recipe(entries), [QuantizeWeights()])
    inits = {t.name: numpy_helper.to_array(t).astype(np.int8) for t in out.graph.initializer}
    rounded = {t.name: numpy_helper.to_array(t).astype(np.int8) for t in plain.graph.initializer}
    for name, entry in (("conv_w", coded[0]), ("onnx::MatMul_1", coded[1]), ("time_w", coded[2])):
        want = entry.codes.T if name == "onnx::MatMul_1" else entry.codes
        np.testing.assert_array_equal(inits[f"{name}_quantized"], want)
        assert not np.array_equal(rounded[f"{name}_quantized"], want)
    wrong = replace(entries[1], codes=np.zeros((8, 5), np.int8))
    with pytest.raises(PassError, match=r"codes of shape \[8, 5\].*graph's weight is \[6, 8\]"):
        tg.compile_model(model, tg.make_recipe([wrong]), [QuantizeWeights()])
