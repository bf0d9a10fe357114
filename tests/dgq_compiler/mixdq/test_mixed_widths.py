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
    """Every other layer at W4A6, the rest W8A8; the text embedding at to_k/to_v with its <start> row FP."""
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    wide = random_recipe(config, preset("dgq-w8a8-g8"), TIMESTEPS, seed=0, model_name="tiny")
    narrow = random_recipe(config, preset("dgq-w4a6-g8"), TIMESTEPS, seed=0, model_name="tiny")
    layers = sorted(m for m, r in wide.tensors if r == "weight")
    low = set(layers[::2])
    tensors = dict(wide.tensors)
    for m in low:
        for role in ("weight", "input"):
            tensors[(m, role)] = narrow.tensors[(m, role)]
    for (m, role), tq in list(tensors.items()):
        if reads_text_embedding(m, role):  # per tensor over tokens 1..: a range the <start> row would blow
            tensors[(m, role)] = TensorQuant(m, role, "uniform", tq.bits, "tensor", np.full((3, 1), 0.02, np.float32),
                                             np.full((3, 1), 2 ** (tq.bits - 1), np.int32), exclude_bos=True)
    recipe = Recipe(wide.model_name, wide.config_sha256, preset("dgq-mixdq-w5a8-g8"), wide.timesteps,
                    wide.resolution, tensors)
    out = tmp_path_factory.mktemp("mixed") / "graph"
    compile_graph(tiny_export_dir, recipe, out, progress=lambda _m: None)
    return out / "unet.onnx", recipe, low


def test_each_layer_is_compiled_at_its_own_widths(mixed):
    from passes.contract import QuantizerRecord, weight_names

    path, recipe, low = mixed
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

    path, _recipe, _low = mixed
    report = verify_graph(path, target="generic-npu", timesteps=[501.0], latent_size=8)
    assert report.passed, report.failures
    assert sum(o.overflows for o in report.overflows) == 0
    bits = {(t.module, t.role): t.bits for t in report.tensors if hasattr(t, "bits")}
    if bits:  # the simulator reads each quantizer's own width
        assert {b for b in bits.values()} >= {6, 8}


def test_cost_counts_every_op_at_its_compiled_widths(mixed):
    from simulator.cost import cost_row
    from simulator.cost.macs_from_graph import inventory_from_graph

    path, _recipe, low = mixed
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

    path, _recipe, _low = mixed
    inventory = inventory_from_graph(path, batch=2, resolution=64)
    target = load_target("generic-npu")
    mixed_estimate = estimate(inventory, "W8A8", 8, target, 3, compiled=True)
    w8 = estimate(inventory, "W8A8", 8, target, 3)
    layers = [op for op in inventory.ops if op.kind in ("conv", "linear") and not op.full_precision]
    own = sum(-(-op.b_elements * op.weight_bits // 8) for op in layers)
    fp_layers = sum(op.b_elements * 4 for op in inventory.ops if op.kind in ("conv", "linear") and op.full_precision)
    assert mixed_estimate.step_bytes["weights"] == own + fp_layers < w8.step_bytes["weights"]
