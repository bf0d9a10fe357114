"""The onnxruntime helper: named modes, example feeds, intermediate outputs, external weights, graph paths."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dgq_compiler import runtime
from dgq_compiler.errors import DgqError


def _model(sdxl=False):
    inputs = [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 4, "h", "w"]),
              helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1]),
              helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, ["batch", 77, 8])]
    if sdxl:
        inputs += [helper.make_tensor_value_info("time_ids", TensorProto.FLOAT, ["batch", 6])]
    w = numpy_helper.from_array(np.full((4, 4, 1, 1), 0.5, np.float32), "w")
    nodes = [helper.make_node("Conv", ["sample", "w"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["out_sample"], name="relu")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, None)],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_modes_set_what_their_names_say():
    import onnxruntime as ort

    levels = {mode: runtime.session_options(mode).graph_optimization_level for mode in runtime.MODES}
    assert levels["reference"] == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert levels["basic"] == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert levels["default"] == ort.SessionOptions().graph_optimization_level
    with pytest.raises(RuntimeError):  # the stock options do not set it
        runtime.session_options("default").get_session_config_entry("session.disable_quant_qdq")
    with pytest.raises(ValueError, match="onnxruntime mode 'fast'"):
        runtime.session_options("fast")


def test_example_feeds_shapes_time_ids_and_determinism():
    feeds = runtime.example_feeds(_model(sdxl=True), (6, 10), batch=3, seed=1, timestep=321.0)
    assert feeds["sample"].shape == (3, 4, 6, 10) and feeds["encoder_hidden_states"].shape == (3, 77, 8)
    assert feeds["timestep"].tolist() == [321.0]
    np.testing.assert_array_equal(feeds["time_ids"], np.tile(runtime.SDXL_TIME_IDS, (3, 1)))
    again = runtime.example_feeds(_model(sdxl=True), (6, 10), batch=3, seed=1, timestep=321.0)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    other = runtime.example_feeds(_model(sdxl=True), 6, batch=3, seed=2)
    assert other["sample"].shape == (3, 4, 6, 6) and not np.array_equal(other["sample"][..., :6, :6],
                                                                         feeds["sample"][..., :6, :6])


def test_intermediate_outputs_and_every_mode_agree():
    model = _model()
    feeds = runtime.example_feeds(model, 4, batch=2)
    probed = runtime.with_outputs(model, {"conv": TensorProto.FLOAT})
    assert [o.name for o in model.graph.output] == ["out_sample"]  # the original is not changed
    outs = [runtime.run_all(runtime.session(probed, mode), feeds) for mode in runtime.MODES]
    expected = np.einsum("oi,bihw->bohw", np.full((4, 4), 0.5, np.float32), feeds["sample"])
    for values in outs:
        np.testing.assert_allclose(values["conv"], expected, rtol=1e-6)
        np.testing.assert_array_equal(values["out_sample"], np.maximum(values["conv"], 0))


def test_external_weights_are_read_from_the_graph_folder(tmp_path):
    onnx.save(_model(), str(tmp_path / "unet.onnx"), save_as_external_data=True, location="unet.onnx.data",
              size_threshold=0)
    header = onnx.load(str(tmp_path / "unet.onnx"), load_external_data=False)
    feeds = runtime.example_feeds(header, 4, batch=1)
    got = runtime.session(header, "reference", base_dir=tmp_path).run(None, feeds)[0]
    np.testing.assert_array_equal(got, runtime.session(_model(), "reference").run(None, feeds)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]  # nothing written
    with pytest.raises(ValueError, match="base_dir"):
        runtime.session(header, "reference")


def test_resolve_graph(tmp_path):
    (tmp_path / "unet.onnx").write_bytes(b"")
    assert runtime.resolve_graph(tmp_path) == tmp_path / "unet.onnx"
    assert runtime.resolve_graph(tmp_path / "unet.onnx") == tmp_path / "unet.onnx"
    with pytest.raises(DgqError, match=r"graph '.*missing' not found \(expected a compiled folder\)"):
        runtime.resolve_graph(tmp_path / "missing", "a compiled folder")


def test_timed_runs_and_kernel_time_by_op_read_a_profiled_session(tmp_path):
    sess = runtime.session(_model(), "default", profile_prefix=str(tmp_path / "profile"))
    feeds = runtime.example_feeds(_model(), 4, batch=2)
    sess.run(None, feeds)
    times = runtime.timed_runs(sess, feeds, 3)
    assert len(times) == 3 and all(t > 0 for t in times)
    kinds, runs = runtime.kernel_time_by_op(sess.end_profiling())
    assert runs == 4                                   # the warm-up and the three timed calls
    assert "Conv" in kinds and all(us >= 0 for us in kinds.values())
    assert "Relu" not in kinds   # kernels as onnxruntime ran them: the default session fuses Relu into the Conv
