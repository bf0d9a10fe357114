"""lower_qlinear (the fast variant): per-tensor Conv/MatMul -> QLinearConv/QLinearMatMul with a requantized output.

Structure (QLinear ops only where the input is per tensor; grouped ops stay exact), the output grid from the
ranges, and numerics: the conv output differs from the exact lowering's by the output rounding (at most half an
output step, plus half an accumulator step for the rounded bias), and does differ (the rounding is real)."""
from __future__ import annotations

import json

import numpy as np
import onnx

from passes.lower_conv import LowerConv
from passes.lower_linear import LowerLinear
from passes.lower_qlinear import LowerQlinear, output_grid
from passes.pipeline import compile_passes


def _with_output(model, name):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m


def test_output_grid_covers_the_range_and_zero():
    scale, zero = output_grid(np.array([[-2.0, 6.0], [0.5, 3.0]], np.float32))
    np.testing.assert_allclose(scale[:, 0], [8 / 255, 3 / 255], rtol=1e-6)
    assert zero[0, 0] == 64 and zero[1, 0] == 0       # 0 is on the grid; a positive range starts at 0


def test_per_tensor_ops_become_qlinear_within_one_output_rounding(tg):
    recipe = tg.make_recipe([
        tg.uniform_entry("down.conv", "input", axis="tensor", seed=1), tg.weight_entry("down.conv", 6, seed=2),
        tg.uniform_entry("proj", "input", axis="tensor", seed=3), tg.weight_entry("proj", 8, seed=4),
        tg.uniform_entry("time", "input", axis="channel", n=6, groups=2, seed=5), tg.weight_entry("time", 5, seed=6)])
    model = tg.layers_model()
    passes = compile_passes()
    exact, _ = tg.compile_model(model, recipe, passes[:-1] + [LowerLinear(), LowerConv()] + passes[-1:])
    feeds = [{"sample": (np.random.default_rng(k).standard_normal((1, 4, 4, 4)) * 2).astype(np.float32),
              "timestep": np.array([t], np.float32)} for k, t in enumerate(tg.TIMESTEPS)]
    ranges = {"down.conv": np.zeros((3, 2), np.float32), "proj": np.zeros((3, 2), np.float32)}
    for k, feed in enumerate(feeds):
        c, y = tg.run(_with_output(exact, "c"), feed)[3], tg.run(exact, feed)[0]
        ranges["down.conv"][k] = c.min(), c.max()
        ranges["proj"][k] = y.min(), y.max()
    fast, ctx = tg.compile_model(model, recipe, passes[:-1] + [LowerQlinear(ranges), LowerLinear(0.0), LowerConv()]
                                 + passes[-1:])
    ops = tg.ops(fast)
    assert ops.count("QLinearConv") == 1 and ops.count("QLinearMatMul") == 1
    assert ops.count("MatMulInteger") == 2          # the channel-grouped Gemm keeps its split-K exact lowering
    kernels = {r["module"]: r["kernel"] for r in json.loads(ctx.artifacts["lowering.json"])}
    assert kernels["down.conv"].startswith("QLinearConv") and "split-K" in kernels["time"]
    tq = recipe.tensors[("down.conv", "input")]
    w_scale = recipe.tensors[("down.conv", "weight")].scale
    for k, feed in enumerate(feeds):
        c_exact = tg.run(_with_output(exact, "c"), feed)[3]
        c_fast = tg.run(_with_output(fast, "c"), feed)[3]
        y_scale = output_grid(ranges["down.conv"])[0][k, 0]
        bound = y_scale / 2 + float(tq.scale[k, 0] * w_scale.max()) / 2 + 1e-5
        diff = np.abs(c_fast - c_exact)
        assert diff.max() <= bound and diff.max() > 0
