import onnx_graphsurgeon as gs
import pytest

from passes.base import Pass, PassContext
from passes.errors import PassError, PatternMismatch
from passes.manager import PassFailure, run_passes
from passes.module_map import build_module_map
from passes.patterns import match_attention, match_weighted_op


def _nodes(model):
    graph = gs.import_onnx(model)
    return graph, {n.name: n for n in graph.nodes}


def test_weighted_ops_match_with_their_output_channel_axis(tg):
    _, nodes = _nodes(tg.layers_model())
    conv = match_weighted_op(nodes["/unet/down/conv/Conv"])
    assert (conv.out_axis, conv.out_channels, conv.weight.name) == (0, 6, "conv_w")
    matmul = match_weighted_op(nodes["/unet/proj/MatMul"])
    assert (matmul.out_axis, matmul.out_channels) == (1, 8)
    gemm = match_weighted_op(nodes["/unet/time/Gemm"])
    assert (gemm.out_axis, gemm.out_channels) == (0, 5)


def test_weighted_op_mismatches_say_why(tg):
    _, nodes = _nodes(tg.layers_model())
    with pytest.raises(PatternMismatch, match=r"'/unet/gram/MatMul': weight 'tokensT' is computed by Transpose"):
        match_weighted_op(nodes["/unet/gram/MatMul"])
    with pytest.raises(PatternMismatch, match=r"is a Reshape, not one of Conv, Gemm, MatMul"):
        match_weighted_op(nodes["/unet/Reshape"])


def test_attention_matches_self_and_cross(tg):
    graph, nodes = _nodes(tg.attention_model())
    self_attn = match_attention(graph, nodes["/unet/attn1/MatMul"], nodes["/unet/attn1/MatMul_1"], "attn1")
    cross = match_attention(graph, nodes["/unet/attn2/MatMul"], nodes["/unet/attn2/MatMul_1"], "attn2")
    assert not self_attn.cross and cross.cross
    assert (self_attn.q.name, self_attn.k.name, self_attn.v.name) == ("attn1_to_q", "attn1_to_k", "attn1_to_v")
    assert (cross.softmax.name, cross.probs.name, cross.values.name) == ("/unet/attn2/Softmax", "attn2_pc", "attn2_vh")


def test_attention_mismatch_names_node_and_reason(tg):
    graph, nodes = _nodes(tg.attention_model())
    with pytest.raises(PatternMismatch, match=r"operand 'attn1_qh' of '/unet/attn1/MatMul' does not come from attn2.to_q|"
                                              r"attn1_qh.*not from attn2.to_q"):
        match_attention(graph, nodes["/unet/attn1/MatMul"], nodes["/unet/attn1/MatMul_1"], "attn2")
    with pytest.raises(PatternMismatch, match=r"A.V '/unet/attn2/MatMul_1' does not read the Softmax '/unet/attn1/Softmax'"):
        match_attention(graph, nodes["/unet/attn1/MatMul"], nodes["/unet/attn2/MatMul_1"], "attn1")


class _Tag(Pass):
    def __init__(self, name):
        self.name = name

    def run(self, graph, ctx):
        graph.name = graph.name + "+" + self.name
        return graph


class _Refuse(Pass):
    name = "refuse_everything"

    def run(self, graph, ctx):
        raise PassError("node 'x' is not what I expected")


class _Crash(Pass):
    name = "crash_hard"

    def run(self, graph, ctx):
        return {}["missing"]


def test_manager_runs_in_order_and_names_passes_already_run(tg):
    ctx = PassContext(tg.make_recipe([]), [])
    graph = run_passes([_Tag("a_b"), _Tag("c_d")], gs.Graph(name="g"), ctx)
    assert graph.name == "g+a_b+c_d"
    assert [n.split(":")[0] for n in ctx.notes] == ["a_b", "c_d"]
    with pytest.raises(PassError, match=r"^pass refuse_everything failed \(after a_b, c_d\): node 'x' is not"):
        run_passes([_Tag("a_b"), _Tag("c_d"), _Refuse()], gs.Graph(name="g"), ctx)
    with pytest.raises(PassError, match=r"\(after no other pass\)"):
        run_passes([_Refuse(), _Tag("a_b")], gs.Graph(name="g"), ctx)
    with pytest.raises(PassFailure, match=r"pass crash_hard crashed \(after a_b\): KeyError"):
        run_passes([_Tag("a_b"), _Crash()], gs.Graph(name="g"), ctx)


def test_module_map_of_test_graphs_is_what_the_passes_expect(tg):
    kinds = {(e.module, e.kind) for e in build_module_map(tg.attention_model())}
    assert {("attn1", "attn_qk"), ("attn1", "attn_av"), ("attn2.to_k", "linear")} <= kinds
