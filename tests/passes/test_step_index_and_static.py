import json

import numpy as np
import onnx
import pytest

from passes.base import PassContext
from passes.errors import PassError
from passes.graph_io import export_model
from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_step_index import InsertStepIndex
from passes.make_static_variant import MakeStaticVariant
from passes.write_encodings import WriteEncodings


def test_step_index_is_the_nearest_calibrated_timestep_ties_to_lower_index(tg):
    model = tg.layers_model()
    recipe = tg.make_recipe([], timesteps=(900, 500, 100, 300))
    import onnx_graphsurgeon as gs
    graph = InsertStepIndex().run(gs.import_onnx(model), PassContext(recipe, []))
    step = graph.tensors()["dgq.step_index"]
    step.shape = [1]
    graph.outputs.append(step)  # expose it (unused, cleanup would drop the subgraph)
    out = export_model(graph)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node if n.name.startswith("dgq/step/")] == \
        ["Reshape", "Slice", "Sub", "Abs", "ArgMin"]
    sample = np.zeros((1, 4, 4, 4), np.float32)
    for t, want in ((950, 0), (700, 0), (699, 1), (400, 1), (399, 3), (200, 2), (0, 2), (300, 3)):
        got = tg.run(out, {"sample": sample, "timestep": np.array([t], np.float32)})[-1]
        assert int(got[0]) == want == recipe.step_index(t)
    # pipelines feed the timestep as [1], as [batch] (every entry the same step) or as a scalar: the first decides
    for dims, t in ((["steps"], np.array([699, 699, 699], np.float32)), (["steps"], np.array([699, 950], np.float32)),
                    ([], np.array(699, np.float32))):
        declared = tg.layers_model()
        declared.graph.input[1].CopyFrom(onnx.helper.make_tensor_value_info("timestep", onnx.TensorProto.FLOAT, dims))
        graph = InsertStepIndex().run(gs.import_onnx(declared), PassContext(recipe, []))
        graph.outputs.append(graph.tensors()["dgq.step_index"])
        assert int(tg.run(export_model(graph), {"sample": sample, "timestep": t})[-1][0]) == 1
    with pytest.raises(PassError, match="already has a 'dgq.step_index'"):
        InsertStepIndex().run(gs.import_onnx(out), PassContext(recipe, []))


def test_static_variant_equals_dynamic_graph_at_its_step(tg):
    entries = [tg.uniform_entry("down.conv", "input", bits=6, axis="pixel", n=16, groups=4, seed=1),
               tg.uniform_entry("proj", "input", axis="channel", n=6, groups=3, seed=2),
               tg.uniform_entry("time", "input", axis="tensor", seed=3)]
    recipe = tg.make_recipe(entries)
    dynamic, ctx = tg.compile_model(tg.layers_model(), recipe, [InsertStepIndex(), InsertActivationQdq()])
    sample = np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)
    import onnx_graphsurgeon as gs
    for step, t in enumerate(recipe.timesteps):
        static = export_model(MakeStaticVariant(step).run(gs.import_onnx(dynamic), ctx), ctx)
        onnx.checker.check_model(static, full_check=True)
        names = {i.name for i in static.graph.initializer}
        assert "dgq.schedule" not in names and not any(n.endswith("_table") or n.endswith("group_map") for n in names)
        assert "ArgMin" not in tg.ops(static) and tg.ops(static).count("QuantizeLinear") == 3
        assert [i.name for i in static.graph.input] == ["sample", "timestep"]
        q = next(n for n in static.graph.node if n.name == "dgq/proj/input/QuantizeLinear")
        assert q.input[1] in names  # a constant per-index scale vector
        feed = {"sample": sample, "timestep": np.array([t], np.float32)}
        for a, b in zip(tg.run(static, {**feed, "timestep": np.array([0.0], np.float32)}), tg.run(dynamic, feed)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(PassError, match=r"static step 3 is outside the calibrated schedule \(0..2\)"):
        MakeStaticVariant(3).run(gs.import_onnx(dynamic), ctx)


def test_encodings_list_every_quantized_tensor_with_per_step_parameters(tg):
    from passes.quantize_weights import QuantizeWeights
    entries = [tg.uniform_entry("down.conv", "input", bits=6, axis="pixel", n=16, groups=4, seed=1, shared=True),
               tg.uniform_entry("proj", "input", axis="channel", n=6, groups=3, seed=2),
               tg.weight_entry("proj", 8, bits=4)]
    recipe = tg.make_recipe(entries)
    out, ctx = tg.compile_model(tg.layers_model(), recipe,
                                [InsertStepIndex(), QuantizeWeights(), InsertActivationQdq(), WriteEncodings()])
    doc = json.loads(ctx.artifacts["encodings.json"])
    assert doc["format"] == "dgq-encodings" and doc["timesteps"] == [900, 500, 100]
    acts = {(e["module"], e["role"]): e for e in doc["activations"]}
    conv = acts[("down.conv", "input")]
    assert (conv["bits"], conv["axis"], conv["groups"], conv["tensor"], conv["group_map_shared"]) == (6, "pixel", 4, "sample", True)
    np.testing.assert_array_equal(np.array(conv["scale"], np.float32), entries[0].scale)
    np.testing.assert_array_equal(conv["group_map"], entries[0].group_map)
    assert len(acts[("proj", "input")]["group_map"]) == 3  # one map per step
    nodes = {n.name for n in out.graph.node}
    assert all(e["node"] in nodes for e in doc["activations"] + doc["weights"])
    (w,) = doc["weights"]
    assert (w["module"], w["storage"], w["onnx_axis"], w["quantized_tensor"]) == ("proj", "int4", 1, "onnx::MatMul_1_quantized")
    np.testing.assert_array_equal(w["zero_point"], entries[2].zero_point)
