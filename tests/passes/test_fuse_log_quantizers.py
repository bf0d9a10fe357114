"""fuse_log_quantizers: QuantizeLog -> DequantizeLog pairs become one QuantizeDequantizeLog node with the same values.

Structure (one fused node with the quantizer's name prefix and metadata, opset 26, the pair gone), numerics (the
A.V output bit for bit equal to the pair's in onnxruntime, onnx.reference and the simulator, on probabilities
that underflow to subnormals and zero), the simulator's reading of the fused node (a log2 quantizer that is its own
dequantizer, feeding a quantized product), and the cases that must not fuse (codes read elsewhere)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.base import PassContext
from passes.contract import (DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG, QuantizerRecord,
                             node_props)
from passes.fuse_log_quantizers import FuseLogQuantizers
from passes.graph_io import export_model
from passes.log_functions import FUSED_LOG_OPSET, log_functions

PREFIX = "dgq/blocks.0.attn1/attn_probs"


def _attention(codes_out: bool = False) -> onnx.ModelProto:
    """scores [4, 8, 6] -> Softmax -> log2 pair (S = per-row-block max) -> MatMul with Q/DQ(v) -> out."""
    record = QuantizerRecord("blocks.0.attn1", "attn_probs", "log2", 8, "tensor", True).to_props()
    q = helper.make_node(QUANTIZE_LOG, ["probs", "s"], ["codes"], name=f"{PREFIX}/QuantizeLog", domain=LOG_DOMAIN,
                         bits=8)
    for key, value in sorted(record.items()):
        q.metadata_props.add(key=key, value=value)
    nodes = [
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("ReduceMax", ["probs", "axes"], ["s"], keepdims=1),
        q,
        helper.make_node(DEQUANTIZE_LOG, ["codes", "s"], ["a"], name=f"{PREFIX}/DequantizeLog", domain=LOG_DOMAIN),
        helper.make_node("QuantizeLinear", ["v", "v_scale", "v_zero"], ["v_codes"], name="dgq/blocks.0.attn1/v/Q"),
        helper.make_node("DequantizeLinear", ["v_codes", "v_scale", "v_zero"], ["v_dq"],
                         name="dgq/blocks.0.attn1/v/DQ"),
        helper.make_node("MatMul", ["a", "v_dq"], ["out"], name="/blocks.0/attn1/MatMul_1"),
    ]
    inits = [numpy_helper.from_array(np.array([-2, -1], np.int64), "axes"),
             numpy_helper.from_array(np.array(0.05, np.float32), "v_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "v_zero")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 8, 5])]
    if codes_out:
        outputs.append(helper.make_tensor_value_info("codes", TensorProto.UINT8, [4, 8, 6]))
    inputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 8, 6]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, [4, 6, 5])]
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(LOG_DOMAIN, 1)],
                             ir_version=10, functions=log_functions())


def _fused(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassContext]:
    ctx = PassContext(None, [])
    q = next(n for n in model.graph.node if n.op_type == QUANTIZE_LOG)
    ctx.node_metadata[q.name] = node_props(q)
    return export_model(FuseLogQuantizers().run(gs.import_onnx(model), ctx), ctx), ctx


def _feed() -> dict:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, (4, 8, 6)).astype(np.float32)
    scores[1, :, 1:] -= 95       # probabilities around 1e-41: subnormal ratios to the maximum
    scores[2, :, 2:] -= 120      # exp underflows to 0
    return {"scores": scores, "v": rng.normal(0, 2, (4, 6, 5)).astype(np.float32)}


def test_the_pair_becomes_one_fused_node_with_the_quantizers_metadata():
    fused, ctx = _fused(_attention())
    onnx.checker.check_model(fused, full_check=True)
    ops = [n.op_type for n in fused.graph.node]
    assert QUANTIZE_LOG not in ops and DEQUANTIZE_LOG not in ops and ops.count(QUANTIZE_DEQUANTIZE_LOG) == 1
    node = next(n for n in fused.graph.node if n.op_type == QUANTIZE_DEQUANTIZE_LOG)
    assert node.name == f"{PREFIX}/{QUANTIZE_DEQUANTIZE_LOG}" and node.output[0] == "a"
    assert ctx.node_metadata[node.name][  # the record moved with the node (export_model writes it)
        "dgq.quantizer"] == "log2" and f"{PREFIX}/QuantizeLog" not in ctx.node_metadata
    assert QuantizerRecord.from_node(node).role == "attn_probs"
    assert next(o.version for o in fused.opset_import if o.domain == "") == FUSED_LOG_OPSET
    assert all(next(o.version for o in f.opset_import if o.domain == "") == FUSED_LOG_OPSET for f in fused.functions)


@pytest.mark.parametrize("runtime", ["default", "reference", "onnx.reference"])
def test_the_fused_graph_computes_the_pairs_values_bit_for_bit(runtime):
    from onnx.reference import ReferenceEvaluator

    from dgq_compiler.runtime import session, with_outputs

    def run(model):
        model = with_outputs(model, {"probs": TensorProto.FLOAT, "a": TensorProto.FLOAT})
        if runtime == "onnx.reference":
            return ReferenceEvaluator(model).run(None, feed)
        return session(model, runtime).run(None, feed)

    model = _attention()
    fused, _ctx = _fused(model)
    feed = _feed()
    want, got = run(model), run(fused)
    probs = want[1]   # the probabilities reach subnormal ratios to their maximum, and zeros
    tiny = probs[1][:, 1:]
    assert ((tiny > 0) & (tiny < np.finfo(np.float32).tiny)).sum() > 20 and (probs[2][:, 2:] == 0).all()
    assert len(np.unique(want[2])) > 10
    for w, g in zip(want, got):
        np.testing.assert_array_equal(np.asarray(g).view(np.uint32), np.asarray(w).view(np.uint32))


def test_the_simulator_reads_and_runs_the_fused_node_as_the_pair():
    from simulator.executor import Simulator
    from simulator.graph_info import analyse

    model = _attention()
    fused, _ctx = _fused(model)
    info = analyse(fused)
    log = [q for q in info.quantizers if q.quantizer == "log2"]
    assert len(log) == 1 and log[0].scale_source == "dynamic"
    assert log[0].dequantizer == log[0].node == f"{PREFIX}/{QUANTIZE_DEQUANTIZE_LOG}"
    assert [m.node for m in info.matmuls] == ["/blocks.0/attn1/MatMul_1"]
    feed = _feed()
    want = Simulator(model).run(feed).outputs["out"]
    result = Simulator(fused).run(feed)
    np.testing.assert_array_equal(result.outputs["out"].view(np.uint32), np.asarray(want).view(np.uint32))
    assert result.stats.nodes["/blocks.0/attn1/MatMul_1"].path == "shift-add"


def test_a_pair_whose_codes_are_read_elsewhere_is_kept():
    model = _attention(codes_out=True)
    fused, ctx = _fused(model)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(QUANTIZE_LOG) == 1 and ops.count(DEQUANTIZE_LOG) == 1 and QUANTIZE_DEQUANTIZE_LOG not in ops
    assert next(o.version for o in fused.opset_import if o.domain == "") == 21
    assert f"{PREFIX}/QuantizeLog" in ctx.node_metadata
