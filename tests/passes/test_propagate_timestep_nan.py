"""propagate_timestep_nan: a NaN or infinite timestep reaches the outputs; finite timesteps change nothing."""
import numpy as np
import onnx
import pytest
from onnx import helper

from passes.insert_step_index import InsertStepIndex
from passes.propagate_timestep_nan import PropagateTimestepNan


def batch_model(timestep_dtype=onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """sample [B, 2, 2, 2], timestep [T] (T = 1 or B) -> out = sample * 3 + Cast(t)[0] (the step embedding's role)."""
    from tests.passes.conftest import init, make_model, vi

    nodes = [helper.make_node("Mul", ["sample", "three"], ["scaled"], name="/unet/Mul"),
             helper.make_node("Cast", ["timestep"], ["t_f"], name="/unet/Cast", to=onnx.TensorProto.FLOAT),
             helper.make_node("Gather", ["t_f", "zero"], ["t0"], name="/unet/Gather", axis=0),
             helper.make_node("Mul", ["t0", "small"], ["emb"], name="/unet/Mul_t"),
             helper.make_node("Add", ["scaled", "emb"], ["out_sample"], name="/unet/Add")]
    inits = [init("three", np.array(3.0, np.float32)), init("zero", np.array(0, np.int64)),
             init("small", np.array(1e-3, np.float32))]
    return make_model(nodes, [vi("sample", ["batch", 2, 2, 2]), vi("timestep", ["steps"], timestep_dtype)],
                      [vi("out_sample", ["batch", 2, 2, 2])], inits)


def _feed(t, dtype=np.float32, batch=2):
    x = np.arange(batch * 8, dtype=np.float32).reshape(batch, 2, 2, 2)
    return {"sample": x, "timestep": np.array(t, dtype)}


def test_finite_timesteps_give_the_same_output_and_nan_or_inf_reach_it(tg):
    model = batch_model()
    out, _ = tg.compile_model(model, tg.make_recipe([]), [InsertStepIndex(), PropagateTimestepNan()])
    adds = [n for n in out.graph.node if n.name.startswith("dgq/timestep_nan/")]
    assert adds and out.graph.output[0].name == "out_sample"
    assert next(n for n in out.graph.node if "out_sample" in n.output).name == "dgq/timestep_nan/0/Add"
    for t in ([500.0], [0.0], [999.0, 999.0], [3.0e38]):
        np.testing.assert_array_equal(tg.run(out, _feed(t))[0], tg.run(model, _feed(t))[0])
    for bad in (np.nan, np.inf, -np.inf):
        assert np.isnan(tg.run(out, _feed([bad]))[0]).all()
        # the fp32 graph of this test ignores the second entry; the compiled graph says which sample is broken
        got = tg.run(out, _feed([500.0, bad]))[0]
        assert np.isfinite(got[0]).all() and np.isnan(got[1]).all()
        assert np.isnan(tg.run(out, _feed([bad, 500.0]))[0]).all()  # the first entry picks everyone's step
    # the pass is what makes the difference: without it a NaN timestep gives finite output here
    plain, _ = tg.compile_model(batch_model(), tg.make_recipe([]), [InsertStepIndex()])
    assert np.isfinite(tg.run(plain, _feed([500.0, np.nan]))[0]).all()


def test_integer_timesteps_are_cast_and_unchanged(tg):
    model = batch_model(onnx.TensorProto.INT64)
    out, _ = tg.compile_model(model, tg.make_recipe([]), [InsertStepIndex(), PropagateTimestepNan()])
    feed = _feed([500], np.int64)
    np.testing.assert_array_equal(tg.run(out, feed)[0], tg.run(model, feed)[0])


def test_a_graph_without_timestep_is_refused(tg):
    from passes.errors import PassError

    from tests.passes.conftest import make_model, vi

    no_timestep = make_model([helper.make_node("Identity", ["sample"], ["out_sample"], name="/unet/Identity")],
                             [vi("sample", [1, 2])], [vi("out_sample", [1, 2])], [])
    with pytest.raises(PassError, match="no 'timestep' input"):
        tg.compile_model(no_timestep, tg.make_recipe([]), [PropagateTimestepNan()])
