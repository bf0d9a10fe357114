"""Pixel groups at any resolution: the calibrated map resampled in the graph (nearest calibrated pixel below)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes.insert_activation_qdq import InsertActivationQdq
from passes.insert_step_index import InsertStepIndex
from passes.pixel_groups import LevelGrid, level_grid, resample_map_numpy

PASSES = [InsertStepIndex(), InsertActivationQdq()]


def test_level_grid_finds_the_downsampling_factor_or_nothing():
    assert level_grid(256, (16, 16)) == LevelGrid(16, 16, 1)
    assert level_grid(64, (16, 16)) == LevelGrid(8, 8, 2)
    assert level_grid(16, (16, 16)) == LevelGrid(4, 4, 4)
    assert level_grid(24, (16, 24)) == LevelGrid(4, 6, 4)
    assert level_grid(9, (5, 5)) == LevelGrid(3, 3, 2)  # odd sizes halve rounding up, as a stride-2 conv does
    assert level_grid(77, (16, 16)) is None  # text tokens: no level has 77 pixels
    assert level_grid(100, (16, 16)) is None


def test_numpy_resampling_is_repeat_up_and_stride_down():
    row = np.arange(16)
    grid = LevelGrid(4, 4, 1)
    m = row.reshape(4, 4)
    np.testing.assert_array_equal(resample_map_numpy(row, grid, 4, 4), row)
    np.testing.assert_array_equal(resample_map_numpy(row, grid, 8, 8), m.repeat(2, 0).repeat(2, 1).reshape(-1))
    np.testing.assert_array_equal(resample_map_numpy(row, grid, 2, 2), m[::2, ::2].reshape(-1))
    np.testing.assert_array_equal(resample_map_numpy(row, grid, 4, 8), m.repeat(2, 1).reshape(-1))


def levels_model(seed=0) -> onnx.ModelProto:
    """sample [1, 4, H, W] (dynamic H, W) -> Conv 3x3 (down.conv) -> Conv 3x3 stride 2 (mid.conv) -> [1, 6, H/2, W/2]
    -> tokens [1, H*W/4, 6] -> MatMul (proj) -> y. Pixel-groupable points at level 1 (nchw) and level 2 (nchw, nlc)."""
    from tests.passes.conftest import init, vi

    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["sample", "w1", "b1"], ["c1"], name="/unet/down/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], name="/unet/mid/conv/Conv", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Reshape", ["c2", "flat"], ["c3"], name="/unet/Reshape"),
        helper.make_node("Transpose", ["c3"], ["tokens"], name="/unet/Transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "onnx::MatMul_1"], ["y"], name="/unet/proj/MatMul"),
    ]
    inits = [init("w1", f(6, 4, 3, 3)), init("b1", f(6)), init("w2", f(6, 6, 3, 3)), init("b2", f(6)),
             init("flat", np.array([0, 0, -1])), init("onnx::MatMul_1", f(6, 5))]
    graph = helper.make_graph(nodes, "g", [vi("sample", [1, 4, "height", "width"]), vi("timestep", [1])],
                              [vi("y", [1, "tokens", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _recipe(tg, shared=False):
    # calibrated at 4x4: down.conv sees 16 pixels, mid.conv 16 (its input is level 1), proj 4 tokens (level 2)
    entries = [tg.uniform_entry("down.conv", "input", bits=6, axis="pixel", n=16, groups=4, seed=1, shared=shared),
               tg.uniform_entry("mid.conv", "input", axis="pixel", n=16, groups=3, seed=2, shared=shared),
               tg.uniform_entry("proj", "input", axis="pixel", n=4, groups=2, seed=3, shared=shared)]
    return tg.make_recipe(entries)


def _reference(tg, model, recipe, feed, step, resample):
    """numpy forward of levels_model with each point's map resampled by `resample(row, (h0, w0), (h, w))`."""
    from onnx import numpy_helper
    import torch

    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def qdq(module, x2d_or_tokens, h0w0, hw, layout):
        tq = recipe.tensors[(module, "input")]
        row = tq.group_map[0 if tq.group_map.shape[0] == 1 else step]
        gm = resample(row, h0w0, hw)
        s, z = tq.scale[step][gm], tq.zero_point[step][gm].astype(np.float32)
        shape = (1, -1, 1) if layout == "nlc" else (1, 1, hw[0], hw[1])
        return tg.fake_quant(x2d_or_tokens, s.reshape(shape), z.reshape(shape), tq.bits)

    def conv(x, wn, bn, stride=1):
        return torch.nn.functional.conv2d(torch.from_numpy(np.array(x)), torch.from_numpy(w[wn].copy()), torch.from_numpy(w[bn].copy()),
                                          stride=stride, padding=1).numpy()
    x = feed["sample"]
    h, wd = x.shape[2:]
    c1 = conv(qdq("down.conv", x, (4, 4), (h, wd), "nchw"), "w1", "b1")
    c2 = conv(qdq("mid.conv", c1, (4, 4), (h, wd), "nchw"), "w2", "b2", stride=2)
    tokens = c2.reshape(1, 6, -1).transpose(0, 2, 1)
    return qdq("proj", tokens, (2, 2), ((h + 1) // 2, (wd + 1) // 2), "nlc") @ w["onnx::MatMul_1"]


def _nearest_below(row, h0w0, hw):
    (h0, w0), (h, w) = h0w0, hw
    m = np.asarray(row).reshape(h0, w0)
    return m[[i * h0 // h for i in range(h)]][:, [j * w0 // w for j in range(w)]].reshape(-1)


def _tiled(row, h0w0, hw):  # a plausible wrong resampling: the calibrated map repeated like wallpaper
    (h0, w0), (h, w) = h0w0, hw
    m = np.asarray(row).reshape(h0, w0)
    return m[[i % h0 for i in range(h)]][:, [j % w0 for j in range(w)]].reshape(-1)


@pytest.mark.parametrize("shared", [False, True])
def test_pixel_groups_run_at_any_size_and_match_nearest_resampling(tg, shared):
    from simulator.executor import Simulator

    model = levels_model()
    recipe = _recipe(tg, shared)
    out, ctx = tg.compile_model(model, recipe, PASSES)
    names = {n.name for n in out.graph.node}
    for module in ("down.conv", "mid.conv", "proj"):
        assert f"dgq/{module}/input/resample/rows/Range" in names
        assert f"dgq/{module}/input/group_map/Resample" in names
    # the token point's level size comes from `sample` (factor 2), the conv points' from their own input
    assert "dgq/proj/input/resample/height/Div" in names and "dgq/down.conv/input/resample/height/Div" not in names
    from dgq_compiler.runtime import session
    ort, sim = session(out, "reference"), Simulator(out, integer=False)
    rng = np.random.default_rng(0)
    for t, step in ((900, 0), (100, 2)):
        for h, w in ((4, 4), (8, 8), (2, 2), (6, 10), (8, 4)):
            feed = {"sample": (rng.standard_normal((1, 4, h, w)) * 2).astype(np.float32),
                    "timestep": np.array([t], np.float32)}
            got = ort.run(None, feed)[0]
            np.testing.assert_allclose(got, _reference(tg, model, recipe, feed, step, _nearest_below),
                                       rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(sim.run(feed).outputs["y"], got, rtol=1e-5, atol=1e-5)
            if max(h, w) > 4:  # a different resampling is a different quantizer, and the test can tell
                wrong = _reference(tg, model, recipe, feed, step, _tiled)
                assert np.abs(got - wrong).max() > 1e-2


def test_text_token_maps_keep_their_length(tg):
    """Cross-attention k/v and layers reading encoder_hidden_states group text tokens: no resampling nodes."""
    model = tg.attention_model()
    entries = [tg.uniform_entry("attn2", "k", axis="pixel", n=5, groups=2, seed=2),
               tg.uniform_entry("attn2.to_k", "input", axis="pixel", n=5, groups=2, seed=3)]
    out, _ = tg.compile_model(model, tg.make_recipe(entries), PASSES)
    assert not any("/resample/" in n.name for n in out.graph.node)
    assert any(n.name == "dgq/attn2/k/GatherGroups" or n.name.startswith("dgq/attn2/k/") for n in out.graph.node)
