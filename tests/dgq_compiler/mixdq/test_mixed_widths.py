"""Per-layer widths (MixDQ) and the BOS-aware text embedding through compile, the simulator and the cost model."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from dgq_compiler.recipe import Recipe, TensorQuant, reads_text_embedding
from tests.random_recipes import random_recipe

TIMESTEPS = (901, 501, 101)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    """Every other layer at W4A6, the rest W8A8, three left FP by the allocation (a conv, a linear, a text-embedding
    reader: no entries, listed in fp_modules); the text embedding at to_k/to_v with its <start> row FP."""
    from passes.contract import FP_MODULES

    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    wide = random_recipe(config, preset("dgq-w8a8-g8"), TIMESTEPS, seed=0, model_name="tiny")
    narrow = random_recipe(config, preset("dgq-w4a6-g8"), TIMESTEPS, seed=0, model_name="tiny")
    layers = sorted(m for m, r in wide.tensors if r == "weight")
    low = set(layers[::2])
    fp = {next(m for m in layers if m.endswith(end) and m not in low) for end in ("conv1", "ff.net.2", "attn2.to_k")}
    tensors = {key: tq for key, tq in wide.tensors.items() if key[0] not in fp}
    for m in low:
        for role in ("weight", "input"):
            tensors[(m, role)] = narrow.tensors[(m, role)]
    for (m, role), tq in list(tensors.items()):
        if reads_text_embedding(m, role):  # per tensor over tokens 1..: a range the <start> row would blow
            tensors[(m, role)] = TensorQuant(m, role, "uniform", tq.bits, "tensor", np.full((3, 1), 0.02, np.float32),
                                             np.full((3, 1), 2 ** (tq.bits - 1), np.int32), exclude_bos=True)
    recipe = Recipe(wide.model_name, wide.config_sha256, preset("dgq-mixdq-w5a8-g8-fp"), wide.timesteps,
                    wide.resolution, tensors, fp_modules=FP_MODULES + tuple(sorted(fp)))
    out = tmp_path_factory.mktemp("mixed") / "graph"
    compile_graph(tiny_export_dir, recipe, out, progress=lambda _m: None)
    return out / "unet.onnx", recipe, low, fp


def test_each_layer_is_compiled_at_its_own_widths(mixed):
    from passes.contract import QuantizerRecord, weight_names

    path, recipe, low, _fp = mixed
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    records = {(r.module, r.role): r for r in (QuantizerRecord.from_node(n) for n in model.graph.node
                                                if n.op_type == "QuantizeLinear") if r is not None}
    by_weight = {n.name: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    seen_types = set()
    for (m, role), tq in recipe.tensors.items():
        if role == "input":
            assert records[(m, "input")].bits == (6 if m in low else 8)
    for node in by_weight.values():
        if node.name.endswith("_DequantizeLinear") and node.input[0].endswith("_quantized"):
            seen_types.add(inits[node.input[0]].data_type)
    assert seen_types == {onnx.TensorProto.INT4, onnx.TensorProto.INT8}
    names = {n.name for n in model.graph.node}
    text = [m for (m, r) in recipe.tensors if reads_text_embedding(m, r)]
    assert text and all(f"dgq/{m}/input/Slice_bos" in names and f"dgq/{m}/input/Concat" in names for m in text)
    assert weight_names("w")["quantized"] == "w_quantized"


def test_simulator_verifies_the_mixed_graph(mixed):
    from dgq_compiler.verify import verify_graph

    path, _recipe, _low, _fp = mixed
    report = verify_graph(path, target="generic-npu", timesteps=[501.0], latent_size=8)
    assert report.passed, report.failures
    assert sum(o.overflows for o in report.overflows) == 0
    bits = {(t.module, t.role): t.bits for t in report.tensors if hasattr(t, "bits")}
    if bits:  # the simulator reads each quantizer's own width
        assert {b for b in bits.values()} >= {6, 8}


def test_cost_counts_every_op_at_its_compiled_widths(mixed):
    from simulator.cost import cost_row
    from simulator.cost.macs_from_graph import inventory_from_graph

    path, _recipe, low, _fp = mixed
    inventory = inventory_from_graph(path, batch=2, resolution=64)
    assert inventory.per_op_widths
    layers = [op for op in inventory.ops if op.kind in ("conv", "linear") and not op.full_precision]
    assert {(op.module in low, op.weight_bits, op.act_bits) for op in layers} == {(True, 4, 6), (False, 8, 8)}
    text = [op for op in layers if reads_text_embedding(op.module, "input")]
    assert text and all(op.fp_macs == op.macs // 77 for op in text)
    row = cost_row(inventory, "W8A8", groups=8, steps=3, convention="exact", compiled=True)
    w8 = cost_row(inventory, "W8A8", groups=8, steps=3, convention="exact")
    w4 = cost_row(inventory, "W4A8", groups=8, steps=3, convention="exact")
    expect_bits = sum(op.b_elements * op.weight_bits for op in layers)
    assert row.quantized_weight_bytes == -(-expect_bits // 8)
    assert w4.quantized_weight_bytes < row.quantized_weight_bytes < w8.quantized_weight_bytes
    linear = sum((op.macs - op.fp_macs) * op.weight_bits * op.act_bits for op in layers if op.kind == "linear")
    assert row.bops_parts["linear"] == linear
    assert row.bops_parts["start_token"] == w8.bops_parts["start_token"] + sum(op.fp_macs for op in text) * 32 * 32
    assert row.name.startswith("compiled (W") and row.name != w8.name
    with pytest.raises(Exception, match="exact convention"):
        cost_row(inventory, "W8A8", convention="paper", compiled=True)


def test_roofline_moves_each_layers_weights_at_its_compiled_width(mixed):
    from simulator.cost.macs_from_graph import inventory_from_graph
    from simulator.cost.roofline import estimate
    from simulator.targets import load_target

    path, _recipe, _low, _fp = mixed
    inventory = inventory_from_graph(path, batch=2, resolution=64)
    target = load_target("generic-npu")
    mixed_estimate = estimate(inventory, "W8A8", 8, target, 3, compiled=True)
    w8 = estimate(inventory, "W8A8", 8, target, 3)
    layers = [op for op in inventory.ops if op.kind in ("conv", "linear") and not op.full_precision]
    own = sum(-(-op.b_elements * op.weight_bits // 8) for op in layers)
    fp_layers = sum(op.b_elements * 4 for op in inventory.ops if op.kind in ("conv", "linear") and op.full_precision)
    assert mixed_estimate.step_bytes["weights"] == own + fp_layers < w8.step_bytes["weights"]



def test_fp_layers_compile_without_qdq_and_cost_32_bits(mixed, tiny_export_dir):
    """A layer the allocation left FP keeps its float weights and unquantized input in the graph (the simulator
    verifies the whole graph in test_simulator_verifies_the_mixed_graph); `dgq check` has nothing to say about it;
    the cost model counts it at 32 x 32 per MAC and its parameters at 32 bits, in the compiled graph only."""
    from passes.contract import QuantizerRecord
    from passes.module_map import build_module_map
    from simulator.check import check_graph
    from simulator.cost import cost_row
    from simulator.cost.macs_from_graph import inventory_from_graph

    path, _recipe, _low, fp = mixed
    model = onnx.load(str(path))
    quantized = {r.module for r in (QuantizerRecord.from_node(n) for n in model.graph.node) if r is not None}
    assert quantized and not quantized & fp
    nodes = {e.module: e.node for e in build_module_map(model) if e.kind in ("conv", "linear")}
    layer_nodes = [n for n in model.graph.node if n.name in {nodes[m] for m in fp}]
    inits = {t.name: t for t in model.graph.initializer}
    assert len(layer_nodes) == len(fp) == 3
    for node in layer_nodes:  # float weights straight from an initializer, an input no dequantizer produced
        assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
        producer = next((n for n in model.graph.node if node.input[0] in n.output), None)
        assert producer is None or producer.op_type != "DequantizeLinear"
    assert check_graph(str(path), "generic-npu").ok
    inventory = inventory_from_graph(path, batch=2, resolution=64)
    fp_ops = [op for op in inventory.ops if op.kind in ("conv", "linear") and op.full_precision]
    assert {op.module for op in fp_ops} == fp | {"conv_in", "conv_out"}
    row = cost_row(inventory, "W8A8", groups=8, steps=3, convention="exact", compiled=True)
    assert row.bops_parts["full_precision"] == sum(op.macs for op in fp_ops) * 32 * 32
    export = inventory_from_graph(tiny_export_dir / "unet.onnx", batch=2, resolution=64)  # fp32: nothing is "left FP"
    assert {op.module for op in export.ops if op.full_precision} == {"conv_in", "conv_out"}
    quantized_layers = [op for op in inventory.ops if op.kind in ("conv", "linear") and not op.full_precision]
    assert row.quantized_weight_bytes == -(-sum(op.b_elements * op.weight_bits for op in quantized_layers) // 8)
