"""MACs counted from an ONNX graph equal those counted from the architecture config."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dgq_compiler.cli.main import main
from models.zoo import zoo_config
from simulator.cost.macs_from_config import inventory_from_config
from simulator.cost.macs_from_graph import inventory_from_graph
from simulator.errors import SimulatorError


def _ops(inventory):
    return sorted((o.module, o.kind, o.macs, o.outputs, o.full_precision, o.cross, o.keys, o.a_elements,
                   o.b_elements, o.slices) for o in inventory.ops)


@pytest.mark.parametrize("batch, resolution", [(None, 128), (1, 256)])
def test_tiny_export_counts_like_its_config(tiny_export_dir, batch, resolution):
    graph = inventory_from_graph(tiny_export_dir / "unet.onnx", batch=batch, resolution=resolution)
    config = inventory_from_config(zoo_config("tiny"), batch=batch or 2, resolution=resolution)
    assert graph.batch == config.batch and graph.latent == config.latent  # a dynamic batch defaults to 2 (CFG)
    assert graph.macs() == config.macs()
    assert graph.macs()["attn_qk"] > 0 and graph.macs()["attn_av"] > 0 and graph.macs()["other"] == 0
    assert _ops(graph) == _ops(config)   # per module: kind, MACs, FP, cross-attention, keys
    assert graph.quantized_weight_elements == config.quantized_weight_elements
    assert graph.fp_param_elements == config.fp_param_elements
    assert graph.weight_channels == config.weight_channels
    assert sorted((p.role, p.channels) for p in graph.points) == sorted((p.role, p.channels) for p in config.points)


def test_cli_gives_the_same_figures_for_graph_and_config(tiny_export_dir, capsys):
    docs = []
    for model in (str(tiny_export_dir / "unet.onnx"), "tiny"):
        assert main(["cost", "--model", model, "--bits", "W4A6", "--groups", "16", "--convention", "exact",
                     "--json"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    keys = ("macs", "bops", "bops_parts", "shift_adds", "model_size_bytes", "qparam_bytes", "resolution", "batch")
    assert {k: docs[0][k] for k in keys} == {k: docs[1][k] for k in keys}
    assert docs[0]["source"] == "graph" and docs[1]["source"] == "config"


def _hand_graph(path):
    """conv_in (FP) -> tokens -> q (int8 weight via DequantizeLinear), k (float weight) -> softmax(q k^T) k."""
    w_conv = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float32), "w_conv")
    w_q = numpy_helper.from_array(np.ones((8, 8), np.int8), "w_q")
    w_q_scale = numpy_helper.from_array(np.ones((8,), np.float32), "w_q_scale")
    w_k = numpy_helper.from_array(np.ones((8, 8), np.float32), "w_k")
    shape = numpy_helper.from_array(np.array([1, 8, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["sample", "w_conv"], ["c"], "/unet/conv_in/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["r"], "/unet/r/Reshape"),
        helper.make_node("Transpose", ["r"], ["x"], "/unet/t/Transpose", perm=[0, 2, 1]),
        helper.make_node("DequantizeLinear", ["w_q", "w_q_scale"], ["w_q_fp"], "/unet/attn/to_q/DQ", axis=1),
        helper.make_node("MatMul", ["x", "w_q_fp"], ["q"], "/unet/attn/to_q/MatMul"),
        helper.make_node("MatMul", ["x", "w_k"], ["k"], "/unet/attn/to_k/MatMul"),
        helper.make_node("Transpose", ["k"], ["kt"], "/unet/attn/Transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], "/unet/attn/MatMul"),
        helper.make_node("Softmax", ["s"], ["p"], "/unet/attn/Softmax", axis=-1),
        helper.make_node("MatMul", ["p", "k"], ["out_sample"], "/unet/attn/MatMul_1"),
    ]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, None)],
                              [w_conv, w_q, w_q_scale, w_k, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)


def test_hand_built_graph_counts(tmp_path):
    _hand_graph(tmp_path / "g.onnx")
    inv = inventory_from_graph(tmp_path / "g.onnx")   # fixed dims: batch 1, latent 8x8
    assert (inv.batch, inv.latent) == (1, (8, 8))
    kinds = [(o.module, o.kind, o.macs, o.full_precision) for o in inv.ops]
    assert kinds == [("conv_in", "conv", 8 * 8 * 8 * (4 * 3 * 3), True),
                     ("attn.to_q", "linear", 64 * 8 * 8, False),     # weight read through DequantizeLinear
                     ("attn.to_k", "linear", 64 * 8 * 8, False),
                     ("attn", "attn_qk", 64 * 64 * 8, False),
                     ("attn", "attn_av", 64 * 8 * 64, False)]
    assert inv.quantized_weight_elements == 2 * 64 and inv.weight_channels == 16
    assert inv.fp_param_elements == 8 * 4 * 3 * 3     # conv_in; the DQ scale is a quantization parameter
    with pytest.raises(SimulatorError, match="fixed latent size 8x8"):
        inventory_from_graph(tmp_path / "g.onnx", resolution=128)


def test_dynamic_graph_needs_a_resolution_the_cost_model_does_not_guess(tmp_path, tiny_export_dir, capsys):
    (tmp_path / "unet.onnx").write_bytes((tiny_export_dir / "unet.onnx").read_bytes())   # no export.json beside
    with pytest.raises(SimulatorError, match="dynamic height/width"):
        inventory_from_graph(tmp_path / "unet.onnx")
    assert main(["cost", "--model", str(tmp_path / "unet.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--resolution" in err and err.count("\n") == 1


def test_unreadable_graph_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model\xff" * 10)
    assert main(["cost", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and err.count("\n") == 1


def test_compiled_graph_counts_like_its_config(tmp_path, tiny_export_dir):
    """A DGQ-compiled graph (Q/DQ weights, [T, G] tables, split <start> A.V) costs the same as the config."""
    from dgq_compiler.compile import compile_graph
    from dgq_compiler.config import preset
    from tests.random_recipes import random_recipe

    config = zoo_config("tiny")
    recipe = random_recipe(config, preset("dgq-w4a6-g8"), (901, 501, 101), seed=0, model_name="tiny")
    compile_graph(tiny_export_dir, recipe, tmp_path / "w4a6", validate=False,
                                 progress=lambda _m: None)
    graph = inventory_from_graph(tmp_path / "w4a6" / "unet.onnx", batch=2, resolution=128)
    reference = inventory_from_config(config, batch=2, resolution=128)
    assert _ops(graph) == _ops(reference)   # the split cross-attention A.V is one op again, keys = 77
    assert any(o.cross and o.keys == 77 for o in graph.ops)
    assert graph.quantized_weight_elements == reference.quantized_weight_elements  # int weights via DQ
    assert abs(graph.fp_param_elements - reference.fp_param_elements) <= 8  # + the calibrated-timestep table
    assert sorted((p.module, p.role, p.channels) for p in graph.points) == \
        sorted((p.module, p.role, p.channels) for p in reference.points)
    # the CLI finds the traced size through compile.json -> the fp32 graph -> its export.json (latent 16)
    from dgq_compiler.cli.cost import graph_dims

    assert graph_dims(str(tmp_path / "w4a6"), None, None) == (2, 128)
