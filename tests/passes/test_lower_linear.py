"""lower_linear: MatMul/Gemm with integer weights -> MatMulInteger (u8 x s8) + float epilogue, on tiny graphs.

Structure (no float MatMul/Gemm left for a quantized module, one accumulator per group), exactness (every int32
accumulator equals an int64 numpy reference computed from the graph's own float input and the recipe), and
numerics (the output equals the QDQ graph's up to float32 rounding of the epilogue)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from passes.lower_common import zero_point_rows
from passes.lower_linear import LowerLinear
from passes.pipeline import compile_passes

STEPS = (0, 1, 2)


def reference_linear(x, tq, step, w_int, axis):
    """int64 accumulators per group: codes from x with the step's parameters, times (w - zw)."""
    s, z = tq.scale[step], tq.zero_point[step].astype(np.int64)
    if tq.axis == "tensor":
        q = np.clip(np.rint(x / s[0]) + z[0], 0, 2 ** tq.bits - 1).astype(np.int64)
        return {-1: (q - z[0]) @ w_int}
    gm = tq.group_map[0 if tq.group_map.shape[0] == 1 else step]
    shape = [1] * x.ndim
    shape[axis] = -1
    q = np.clip(np.rint(x / s[gm].reshape(shape)) + z[gm].reshape(shape), 0, 2 ** tq.bits - 1).astype(np.int64)
    ints = q - z[gm].reshape(shape)
    if tq.axis == "pixel":
        return {-1: ints @ w_int}
    return {g: ints[..., gm == g] @ w_int[gm == g] for g in range(s.shape[0])}


def _recipe(tg, proj_axis, time_axis, bits=8, wbits=8, shared=False):
    entries = [tg.uniform_entry("proj", "input", bits=bits, axis=proj_axis, n=16 if proj_axis == "pixel" else 6,
                                groups=3, seed=2, shared=shared),
               tg.uniform_entry("time", "input", bits=bits, axis=time_axis, n=6, groups=2, seed=3, shared=shared),
               tg.weight_entry("proj", 8, bits=wbits, seed=4), tg.weight_entry("time", 5, bits=wbits, seed=5)]
    return tg.make_recipe(entries)


def _weights(qdq_model, name, transpose=False):
    inits = {t.name: t for t in qdq_model.graph.initializer}
    from passes.lower_common import _int4_values
    codes = inits[f"{name}_quantized"]
    codes = _int4_values(codes) if codes.data_type == onnx.TensorProto.INT4 else numpy_helper.to_array(codes)
    zero = inits[f"{name}_zero_point"]
    zero = _int4_values(zero) if zero.data_type == onnx.TensorProto.INT4 else numpy_helper.to_array(zero)
    w = codes.astype(np.int64)
    if transpose:
        return w.T - zero.astype(np.int64)[None, :]
    return w - zero.astype(np.int64)[None, :]


@pytest.mark.parametrize("proj_axis,time_axis,bits,wbits,shared", [
    ("tensor", "tensor", 8, 8, False), ("pixel", "channel", 8, 8, False), ("channel", "channel", 6, 4, False),
    ("pixel", "tensor", 5, 4, True)])
@pytest.mark.parametrize("max_inflation", [0.0, float("inf")])  # channel groups: one product per group / one batched
def test_lowered_linears_are_exact_and_match_the_qdq_graph(tg, proj_axis, time_axis, bits, wbits, shared,
                                                           max_inflation):
    recipe = _recipe(tg, proj_axis, time_axis, bits, wbits, shared)
    model = tg.layers_model()
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    passes = compile_passes()
    lowered, ctx = tg.compile_model(model, recipe, passes[:-1] + [LowerLinear(max_inflation)] + passes[-1:])
    ops = tg.ops(lowered)
    # structure: the two quantized linears are integer products; the unquantized gram MatMul stays
    assert "Gemm" not in ops and ops.count("MatMul") == 1
    expected = {"proj": 3 if proj_axis == "channel" else 1, "time": 2 if time_axis == "channel" else 1}
    batched = max_inflation == float("inf")   # channel groups as one batched product, or one product per group
    assert ops.count("MatMulInteger") == (2 if batched else sum(expected.values()))
    rows = json.loads(ctx.artifacts["lowering.json"])
    assert {r["module"]: r["accumulators"] for r in rows} == expected
    w_proj, w_time = _weights(qdq, "onnx::MatMul_1"), _weights(qdq, "time_w", transpose=True)
    for step, t in enumerate(tg.TIMESTEPS):
        feed = {"sample": (np.random.default_rng(step).standard_normal((1, 4, 4, 4)) * 2).astype(np.float32),
                "timestep": np.array([t], np.float32)}
        values, _ = tg.lowered_values(lowered, feed)
        for module, w_int in (("proj", w_proj), ("time", w_time)):
            tq = recipe.tensors[(module, "input")]
            nodes = tg.accumulator_nodes(lowered, module)
            x = values[next(iter(nodes.values()))[1]]
            ref = reference_linear(x, tq, step, w_int, 1 if tq.axis == "pixel" else x.ndim - 1)
            assert set(nodes) == set(ref)
            for g, (acc, _x) in nodes.items():
                np.testing.assert_array_equal(values[acc].astype(np.int64), ref[g].reshape(values[acc].shape))
            # the parameters of the step matter: another step's codes give other accumulators
            other = reference_linear(x, tq, (step + 1) % 3, w_int, 1 if tq.axis == "pixel" else x.ndim - 1)
            assert any(o.size != values[nodes[g][0]].size or not np.array_equal(o.ravel(), values[nodes[g][0]].ravel())
                       for g, o in other.items() if g in nodes)
        y_low, z_low = values["y"], values["z"]
        y_qdq, z_qdq, _ = tg.run(qdq, feed)
        np.testing.assert_allclose(y_low, y_qdq, rtol=1e-5, atol=1e-5 * float(np.abs(y_qdq).max()))
        np.testing.assert_allclose(z_low, z_qdq, rtol=1e-5, atol=1e-5 * float(np.abs(z_qdq).max()))


def test_zero_point_rows_carry_the_per_row_zero_point_correction():
    rng = np.random.default_rng(0)
    for k, zw_span in ((1, 0), (7, 10), (300, 120)):
        w = rng.integers(-128, 128, (k, 9)).astype(np.int8)
        zw = rng.integers(-zw_span, zw_span + 1, 9).astype(np.int8)
        d = zero_point_rows(w, zw)
        assert d.dtype == np.int8
        a = rng.integers(0, 256, (5, k))
        z = rng.integers(0, 256, (5, 1))
        exact = (a - z) @ (w.astype(np.int64) - zw)
        wide = np.concatenate([a, np.repeat(z, d.shape[0], axis=1)], axis=1) @ (
            np.concatenate([w, d]).astype(np.int64) - zw)
        np.testing.assert_array_equal(wide, exact)
        # without the rows the per-row zero points are lost
        assert not np.array_equal(a @ (w.astype(np.int64) - zw), exact) or not z.any()


def test_a_channel_group_empty_at_one_step_adds_nothing(tg):
    """K-means may leave a group empty at some step: its split-K product must be 0, not a zero-width
    MatMulInteger (onnxruntime leaves that output uninitialised)."""
    from dgq_compiler.recipe import TensorQuant
    from passes.lower_conv import LowerConv

    def emptied(module, n):
        e = tg.uniform_entry(module, "input", axis="channel", n=n, groups=3, seed=2)
        gm = e.group_map.copy()
        gm[1][gm[1] == 2] = 0
        return TensorQuant(e.module, e.role, e.quantizer, e.bits, e.axis, e.scale, e.zero_point, gm)
    recipe = tg.make_recipe([emptied("proj", 6), emptied("down.conv", 4), emptied("time", 6),
                             tg.weight_entry("proj", 8), tg.weight_entry("down.conv", 6), tg.weight_entry("time", 5)])
    model = tg.layers_model()
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    passes = compile_passes()
    lowered, _ = tg.compile_model(model, recipe, passes[:-1] + [LowerLinear(), LowerConv()] + passes[-1:])
    w_proj = _weights(qdq, "onnx::MatMul_1")
    for step, t in enumerate(tg.TIMESTEPS):
        feed = {"sample": np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32),
                "timestep": np.array([t], np.float32)}
        values, _ = tg.lowered_values(lowered, feed)
        nodes = tg.accumulator_nodes(lowered, "proj")
        x = values[nodes[0][1]]
        ref = reference_linear(x, recipe.tensors[("proj", "input")], step, w_proj, -1)
        for g, (acc, _x) in nodes.items():
            np.testing.assert_array_equal(values[acc].astype(np.int64), ref[g].reshape(values[acc].shape))
        if step == 1:
            assert not values[nodes[2][0]].any()
        for name, want in zip(("y", "z", "gram"), tg.run(qdq, feed)):
            np.testing.assert_allclose(values[name], want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
