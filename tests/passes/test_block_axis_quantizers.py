"""block_axis_quantizers: last-axis group quantizers in the blocked form, codes bit for bit the per-axis form's.

Tiny graphs compiled with the standard pass list and with the same list minus this pass (the per-axis form):
structure (which quantizers are blocked, their parameters read through the contract's Expand nodes, the rest left
per-axis) and numerics (every code and output equal in a default onnxruntime session and in onnx.reference, 4- and
8-bit, channel and pixel groups, nchw / nlc / nc layouts, every calibrated step). On the tiny UNet's compiled DGQ
graph the blocked graph is unblocked back to the per-axis form and every quantizer's codes compared at latent sizes
other than the calibrated one; a per-axis graph with one quantizer's scales permuted must differ (the comparison
can tell). Static variants (`compile --static`) keep the blocked form and read like the per-axis ones; lowered
graphs have no blocked node."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes.block_axis_quantizers import BlockAxisQuantizers
from passes.contract import BLOCK_AXIS, BLOCK_SIZE, block_names, per_index_param, quantized_axis
from passes.lower_pipeline import lowering_passes
from passes.pipeline import compile_passes


def _per_axis_passes():
    return [p for p in compile_passes() if p.name != BlockAxisQuantizers.name]


def _attrs(node) -> dict:
    return {a.name: a.i for a in node.attribute}


def _quantizers(model) -> dict:
    return {n.name: n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.name.startswith("dgq/")}


def _with_codes(model, runtime):
    """A session of `model` that also outputs every quantizer's codes; run it with `run_all`."""
    from dgq_compiler.runtime import session, with_outputs

    types = {}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    for q in _quantizers(model).values():  # the codes' type is the zero point's (its [T, G] table's)
        table = f"{q.name[4:].rsplit('/', 1)[0]}/zero_point_table"
        types[q.output[0]] = inits.get(table, TensorProto.UINT8)
    return session(with_outputs(model, types), runtime)


def _same_codes(sessions: dict, feed: dict, where: str) -> dict:
    """Run {name: session} on `feed`; every output of the first equals the others' bit for bit. -> first's."""
    from dgq_compiler.runtime import run_all

    results = {name: run_all(sess, feed) for name, sess in sessions.items()}
    (first, want), *others = results.items()
    for name, got in others:
        assert set(got) == set(want)
        for tensor in want:
            np.testing.assert_array_equal(got[tensor], want[tensor], err_msg=f"{tensor}: {name} vs {first} {where}")
    return want


LAYERS = [  # (conv input axis, proj input axis, time input axis, bits): every layout x axis, 4 and 8 bits
    ("channel", "channel", "channel", 8), ("pixel", "pixel", "channel", 4), ("pixel", "channel", "tensor", 8)]


@pytest.mark.parametrize("conv_axis,proj_axis,time_axis,bits", LAYERS)
def test_last_axis_quantizers_are_blocked_with_the_per_axis_codes(tg, conv_axis, proj_axis, time_axis, bits):
    n = {"conv": {"pixel": 16, "channel": 4}, "proj": {"pixel": 16, "channel": 6}, "time": {"channel": 6}}
    entries = [tg.uniform_entry("down.conv", "input", axis=conv_axis, n=n["conv"].get(conv_axis, 0), groups=3,
                                bits=bits, seed=1),
               tg.uniform_entry("proj", "input", axis=proj_axis, n=n["proj"].get(proj_axis, 0), groups=2, bits=bits,
                                seed=2),
               tg.uniform_entry("time", "input", axis=time_axis, n=n["time"].get(time_axis, 0), groups=4, bits=bits,
                                seed=3, shared=True),
               tg.weight_entry("down.conv", 6), tg.weight_entry("proj", 8, seed=1), tg.weight_entry("time", 5, seed=2)]
    recipe = tg.make_recipe(entries)
    blocked, ctx = tg.compile_model(tg.layers_model(), recipe, compile_passes())
    per_axis, _ = tg.compile_model(tg.layers_model(), recipe, _per_axis_passes())
    # structure: blocked exactly where the per-index axis is the last one (nchw pixels flattened, nlc/nc channels)
    innermost = {("down.conv", "pixel"), ("proj", "channel"), ("time", "channel")}
    producer = {o: node for node in blocked.graph.node for o in node.output}
    for name, q in _quantizers(blocked).items():
        module = name.split("/")[1]
        axis = {"down.conv": conv_axis, "proj": proj_axis, "time": time_axis}[module]
        before = _quantizers(per_axis)[name]
        dq = [d for d in blocked.graph.node if d.op_type == "DequantizeLinear" and d.name == name.replace(
            "QuantizeLinear", "DequantizeLinear")][0]
        if (module, axis) in innermost:
            assert _attrs(q) == _attrs(dq) == {"axis": BLOCK_AXIS, "block_size": BLOCK_SIZE}
            assert quantized_axis(q) == -1 and _attrs(before)["axis"] in (1, 2)
            names = block_names(name.rsplit("/", 1)[0])
            assert [producer[t].name for t in q.input[1:]] == [names["scale"], names["zero_point"]]
            assert list(q.input[1:]) == list(dq.input[1:])
            assert [per_index_param(producer, t) for t in q.input[1:]] == list(before.input[1:])
        else:
            assert _attrs(q) == _attrs(before) and "block_size" not in _attrs(q) and list(q.input) == list(before.input)
    assert sum("block_size" in _attrs(q) for q in _quantizers(blocked).values()) == sum(
        (m, a) in innermost for m, a in (("down.conv", conv_axis), ("proj", proj_axis), ("time", time_axis)))
    # the records keep the quantized axis (encodings' onnx_axis) and say which were blocked
    assert {r.module: r.last_axis_rank for r in ctx.records if r.role == "input"} == {
        "down.conv": 3 * (conv_axis == "pixel"), "proj": 3 * (proj_axis == "channel"), "time": 2 * (time_axis == "channel")}
    # the encodings say which form each quantizer's node has; onnx_axis stays the quantized axis
    doc = json.loads(ctx.artifacts["encodings.json"])
    assert {(e["module"], e["onnx_axis"], e["block_size"]) for e in doc["activations"]} == {
        (m, {"down.conv": {"channel": 1, "pixel": 2}, "proj": {"channel": 2, "pixel": 1}, "time": {"channel": 1}}[m].get(a),
         BLOCK_SIZE if (m, a) in innermost else 0)
        for m, a in (("down.conv", conv_axis), ("proj", proj_axis), ("time", time_axis))}
    # numerics: every code and output, every step, both runtimes
    sessions = {f"{form} {runtime}": _with_codes(model, runtime) for runtime in ("default", "reference")
                for form, model in (("per-axis", per_axis), ("blocked", blocked))}
    rng = np.random.default_rng(bits)
    for t in tg.TIMESTEPS:
        feed = {"sample": (rng.standard_normal((1, 4, 4, 4)) * 2).astype(np.float32), "timestep": np.array([t], np.float32)}
        want = _same_codes(sessions, feed, f"at t={t}")
        assert len(want) == 3 + len(_quantizers(blocked))


def test_attention_quantizers_are_blocked_and_lowered_graphs_are_not(tg):
    entries = [tg.uniform_entry("attn1", "q", axis="channel", n=8, groups=3, seed=1),
               tg.uniform_entry("attn1", "k", axis="pixel", n=6, groups=2, seed=2),
               tg.uniform_entry("attn1", "v", axis="channel", n=8, groups=2, seed=3, bits=6),
               tg.uniform_entry("attn2", "k", axis="channel", n=8, groups=2, seed=5, exclude_bos=True),
               tg.uniform_entry("attn2", "v", axis="tensor", seed=6)]
    recipe = tg.make_recipe(entries)
    blocked, _ = tg.compile_model(tg.attention_model(), recipe, compile_passes())
    per_axis, _ = tg.compile_model(tg.attention_model(), recipe, _per_axis_passes())
    lowered, _ = tg.compile_model(tg.attention_model(), recipe, lowering_passes())
    blocks = sorted(n for n, q in _quantizers(blocked).items() if "block_size" in _attrs(q))
    assert blocks == ["dgq/attn1/q/QuantizeLinear", "dgq/attn1/v/QuantizeLinear", "dgq/attn2/k/QuantizeLinear"]
    assert not any("block_size" in _attrs(n) for n in lowered.graph.node)
    assert not any(n.op_type == "Expand" and "/block/" in n.name for n in lowered.graph.node)
    sessions = {"per-axis": _with_codes(per_axis, "default"), "blocked": _with_codes(blocked, "default")}
    rng = np.random.default_rng(0)
    for t in tg.TIMESTEPS:
        feed = {"x": rng.standard_normal((2, 6, 8)).astype(np.float32) * 2, "timestep": np.array([t], np.float32),
                "encoder_hidden_states": rng.standard_normal((2, 5, 4)).astype(np.float32)}
        _same_codes(sessions, feed, f"at t={t}")
    # static analysis (dgq check / verify) reads the same quantizers from both forms
    from simulator.graph_info import analyse

    fields = lambda m: sorted((q.node, q.axis, q.groups, q.steps, q.symmetric, q.scale_source, q.code_type,  # noqa: E731
                               q.dequantizer) for q in analyse(m).quantizers)
    assert fields(blocked) == fields(per_axis) and {q[2] for q in fields(blocked)} == {1, 2, 3}


def unblock(model: onnx.ModelProto) -> onnx.ModelProto:
    """The per-axis form of a blocked graph: every blocked Q/DQ reads the vectors behind its Expand nodes, axis -1."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    producer = {o: node for node in out.graph.node for o in node.output}
    for node in out.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and "block_size" in _attrs(node):
            for i in (1, 2):
                node.input[i] = per_index_param(producer, node.input[i])
            keep = [a for a in node.attribute if a.name not in ("axis", "block_size")]
            del node.attribute[:]
            node.attribute.extend(keep + [helper.make_attribute("axis", -1)])
    return out


@pytest.fixture(scope="module")
def tiny_dgq(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    from dgq_compiler.compile import compile_graph
    from dgq_compiler.config import preset
    from tests.random_recipes import random_recipe

    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset("dgq-w4a6-g16"), (901, 501, 101), seed=3, model_name="tiny")
    out = tmp_path_factory.mktemp("blocked") / "w4a6"
    compile_graph(tiny_export_dir, recipe, out, validate=False, check_points=False, progress=lambda _m: None)
    return onnx.load(str(out / "unet.onnx"))


def test_tiny_unet_codes_equal_the_per_axis_form_at_other_sizes_and_a_changed_scale_is_seen(tiny_dgq):
    from dgq_compiler.runtime import example_feeds

    blocked = tiny_dgq
    per_axis = unblock(blocked)
    quantizers = _quantizers(blocked)
    n_blocked = sum("block_size" in _attrs(q) for q in quantizers.values())
    assert n_blocked > 20 and any("axis" in _attrs(q) and "block_size" not in _attrs(q) for q in quantizers.values())
    assert not any("block_size" in _attrs(n) for n in per_axis.graph.node)
    # a quantizer whose per-index scales are permuted: a different quantizer, whose codes must differ
    wrong = onnx.ModelProto()
    wrong.CopyFrom(per_axis)
    victim = next(q for q in _quantizers(wrong).values() if _attrs(q).get("axis") == -1)
    reversed_ = helper.make_node("Slice", [victim.input[1], "rev/starts", "rev/ends", "rev/axes", "rev/steps"],
                                 ["rev/out"], name="rev/Slice")
    wrong.graph.initializer.extend([onnx.numpy_helper.from_array(np.array([v], np.int64), f"rev/{k}") for k, v in
                                    (("starts", -1), ("ends", -(2 ** 62)), ("axes", 0), ("steps", -1))])
    nodes = [reversed_] + list(wrong.graph.node)
    del wrong.graph.node[:]
    wrong.graph.node.extend(nodes)
    victim = _quantizers(wrong)[victim.name]
    victim.input[1] = "rev/out"
    from dgq_compiler.runtime import run_all

    sessions = {"per-axis": _with_codes(per_axis, "default"), "blocked": _with_codes(blocked, "default")}
    changed = _with_codes(wrong, "default")
    for size in (8, 24):  # calibrated at 16
        feed = example_feeds(blocked, (size, size), batch=2, seed=size, timestep=501.0)
        want = _same_codes(sessions, feed, f"at latent {size}")
        assert len(want) == len(quantizers) + len(blocked.graph.output)
        assert not np.array_equal(run_all(changed, feed)[victim.output[0]], want[victim.output[0]])


def test_a_static_variant_keeps_the_blocked_form_and_reads_like_the_per_axis_ones(tg):
    import onnx_graphsurgeon as gs

    from passes.graph_io import export_model
    from passes.make_static_variant import MakeStaticVariant
    from simulator.graph_info import analyse

    entries = [tg.uniform_entry("down.conv", "input", bits=6, axis="pixel", n=16, groups=4, seed=1),
               tg.uniform_entry("proj", "input", axis="channel", n=6, groups=3, seed=2),
               tg.weight_entry("down.conv", 6), tg.weight_entry("proj", 8, seed=1)]
    recipe = tg.make_recipe(entries)
    dynamic, ctx = tg.compile_model(tg.layers_model(), recipe, compile_passes())
    per_axis, per_axis_ctx = tg.compile_model(tg.layers_model(), recipe, _per_axis_passes())
    fields = lambda m: sorted((q.node, q.axis, q.groups, q.steps, q.scale_source, q.code_type)  # noqa: E731
                              for q in analyse(m).quantizers)
    sample = np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)
    for step, t in enumerate(recipe.timesteps):
        static = export_model(MakeStaticVariant(step).run(gs.import_onnx(dynamic), ctx), ctx)
        onnx.checker.check_model(static, full_check=True)
        reference = export_model(MakeStaticVariant(step).run(gs.import_onnx(per_axis), per_axis_ctx), per_axis_ctx)
        assert all(_attrs(q) == {"axis": BLOCK_AXIS, "block_size": BLOCK_SIZE} for q in _quantizers(static).values())
        # the channel groups' step parameters fold into a constant vector behind the Expand (the pixel groups'
        # are gathered by the run-time resampled map, in both forms)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in static.graph.initializer}
        producer = {o: node for node in static.graph.node for o in node.output}
        q = _quantizers(static)["dgq/proj/input/QuantizeLinear"]
        np.testing.assert_array_equal(inits[per_index_param(producer, q.input[1])],
                                      tg.per_index(recipe.tensors[("proj", "input")], step, 6)[0])
        assert fields(static) == fields(reference) and ("dgq/proj/input/QuantizeLinear", "channel", 3, 1, "constant",
                                                        TensorProto.UINT8) in fields(static)
        feed = {"sample": sample, "timestep": np.array([0.0], np.float32)}
        for a, b, c in zip(tg.run(static, feed), tg.run(reference, feed),
                           tg.run(dynamic, {**feed, "timestep": np.array([t], np.float32)})):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
