"""The compiled-graph contract: names round-trip through their parsers, the quantizer record through node
metadata, and the passes' real output follows the contract (names, tables, metadata)."""
from __future__ import annotations

import onnx

from passes.contract import (GROUP_MAP, META_BITS, META_DYNAMIC, META_MODULE, NARROW_BITS, SCALE_TABLE,
                             QuantizerRecord, dequantizer_name, init_prefix, is_compiler_node, is_split_add,
                             node_prefix, parse_node_name, split_prefix, table_name, weight_names)
from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_step_index import InsertStepIndex

MODULE = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def test_names_round_trip():
    prefix = node_prefix(MODULE, "input")
    assert prefix == f"dgq/{MODULE}/input"
    assert parse_node_name(f"{prefix}/QuantizeLinear") == (MODULE, "input", "QuantizeLinear")
    assert parse_node_name(f"{prefix}/scale/GatherGroups") == (MODULE, "input", "scale/GatherGroups")
    assert table_name(prefix, SCALE_TABLE) == f"{MODULE}/input/scale_table"
    assert init_prefix(prefix) == f"{MODULE}/input"


def test_names_that_must_not_parse():
    assert parse_node_name(f"/unet/{MODULE}/MatMul") is None       # an exported node
    assert parse_node_name("dgq/step") is None                      # too short for module/role/op
    assert not is_compiler_node("/unet/conv_in/Conv")
    assert is_split_add(f"{split_prefix(MODULE)}/Add")
    assert not is_split_add(f"/unet/{MODULE}/split/Add")            # not a compiler node
    assert not is_split_add(f"{split_prefix(MODULE)}/MatMul_bos")


def test_dequantizer_and_weight_names():
    q = f"{node_prefix(MODULE, 'q')}/QuantizeLinear"
    assert dequantizer_name(q, "QuantizeLinear") == f"{node_prefix(MODULE, 'q')}/DequantizeLinear"
    log = f"{node_prefix(MODULE, 'attn_probs')}/QuantizeLog"
    assert dequantizer_name(log, "QuantizeLog") == f"{node_prefix(MODULE, 'attn_probs')}/DequantizeLog"
    names = weight_names("onnx::MatMul_12")
    assert names["quantized"] == "onnx::MatMul_12_quantized" and names["node"] == "onnx::MatMul_12_DequantizeLinear"


def test_quantizer_record_round_trips_through_node_metadata():
    for record in (QuantizerRecord(MODULE, "input", "uniform", 6, "pixel"),
                   QuantizerRecord(MODULE, "attn_probs", "log2", 8, "tensor", dynamic=True),
                   QuantizerRecord(MODULE, "attn_probs", "log2", 4, "tensor", dynamic=False)):
        node = onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
        for key, value in record.to_props().items():
            node.metadata_props.add(key=key, value=value)
        assert QuantizerRecord.from_node(node) == record
    uniform = QuantizerRecord(MODULE, "input", "uniform", 8, "channel").to_props()
    assert META_DYNAMIC not in uniform and uniform[META_BITS] == "8"


def test_quantizer_record_of_a_foreign_node_is_none():
    node = onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    assert QuantizerRecord.from_node(node) is None
    node.metadata_props.add(key=META_MODULE, value=MODULE)  # a module but no role: not a recipe key
    assert QuantizerRecord.from_node(node) is None


def test_narrow_bits_table():
    assert NARROW_BITS[onnx.TensorProto.INT4] == 4 and NARROW_BITS[onnx.TensorProto.UINT2] == 2
    assert onnx.TensorProto.INT8 not in NARROW_BITS


def test_compiled_graph_follows_the_contract(tg):
    """The passes' own output: every quantizer node parses, carries a record, and its tables exist."""
    entries = [tg.uniform_entry("down.conv", "input", axis="channel", n=4, groups=3, seed=1),
               tg.uniform_entry("proj", "input", bits=6, axis="pixel", n=16, groups=4, seed=2),
               tg.uniform_entry("time", "input", seed=3)]
    model, _ctx = tg.compile_model(tg.layers_model(), tg.make_recipe(entries), [InsertStepIndex(), InsertActivationQdq()])
    inits = {t.name for t in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(QuantizerRecord.from_node(n).module for n in quantizers) == ["down.conv", "proj", "time"]
    for node in quantizers:
        module, role, op = parse_node_name(node.name)
        assert op == "QuantizeLinear"
        record = QuantizerRecord.from_node(node)
        assert (record.module, record.role) == (module, role)
        assert table_name(node_prefix(module, role), SCALE_TABLE) in inits
        assert (table_name(node_prefix(module, role), GROUP_MAP) in inits) == (record.axis != "tensor")
        assert any(n.name == dequantizer_name(node.name, node.op_type) for n in model.graph.node)
