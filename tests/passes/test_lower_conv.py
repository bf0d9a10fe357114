"""lower_conv: Conv with integer weights -> NHWC im2col on uint8 codes + MatMulInteger + float epilogue.

Three convs (3x3 pad 1, 1x1, 3x3 stride 2 pad 1) under every grouping: structure (no float Conv left, one
accumulator per group), exactness (every int32 accumulator equals an int64 numpy direct convolution of the codes
made from the graph's own float input), numerics (the output equals the QDQ graph's up to float32 rounding)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from passes.lower_conv import LowerConv
from passes.pipeline import compile_passes

CONVS = {"a": dict(k=3, stride=1, pad=1, c_in=4, c_out=6), "b": dict(k=1, stride=1, pad=0, c_in=6, c_out=5),
         "c": dict(k=3, stride=2, pad=1, c_in=5, c_out=3)}
SIZE = 6


def convs_model(tg, seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, src = [], [], "sample"
    for name, c in CONVS.items():
        w = rng.standard_normal((c["c_out"], c["c_in"], c["k"], c["k"])).astype(np.float32)
        inits += [helper.make_tensor(f"{name}_w", 1, w.shape, w.ravel()),
                  helper.make_tensor(f"{name}_b", 1, [c["c_out"]], rng.standard_normal(c["c_out"]).astype(np.float32))]
        out = "out" if name == "c" else f"{name}_y"
        nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [out], name=f"/unet/{name}/Conv",
                                      pads=[c["pad"]] * 4, strides=[c["stride"]] * 2))
        src = out
    return tg.make_model(
        nodes, [helper.make_tensor_value_info("sample", 1, [1, 4, SIZE, SIZE]),
                helper.make_tensor_value_info("timestep", 1, [1])],
        [helper.make_tensor_value_info("out", 1, [1, 3, 3, 3])], inits)


def int_conv(ints, w_int, stride, pad):
    """Direct integer convolution in int64: [B, C, H, W] x [Co, C, k, k] -> [B, Co, Ho, Wo]."""
    b, c, h, wd = ints.shape
    co, _, k, _ = w_int.shape
    xp = np.pad(ints, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((b, co, ho, wo), np.int64)
    for i in range(k):
        for j in range(k):
            win = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("bchw,oc->bohw", win, w_int[:, :, i, j])
    return out


def reference_conv(x, tq, step, w_int, stride, pad):
    s, z = tq.scale[step], tq.zero_point[step].astype(np.int64)
    if tq.axis == "tensor":
        q = np.clip(np.rint(x / s[0]) + z[0], 0, 2 ** tq.bits - 1).astype(np.int64)
        return {-1: int_conv(q - z[0], w_int, stride, pad)}
    gm = tq.group_map[0 if tq.group_map.shape[0] == 1 else step]
    if tq.axis == "channel":
        shape = (1, -1, 1, 1)
        q = np.clip(np.rint(x / s[gm].reshape(shape)) + z[gm].reshape(shape), 0, 2 ** tq.bits - 1).astype(np.int64)
        ints = q - z[gm].reshape(shape)
        return {g: int_conv(ints[:, gm == g], w_int[:, gm == g], stride, pad) for g in range(s.shape[0])}
    shape = (1, 1) + x.shape[2:]
    sp, zp = s[gm].reshape(shape), z[gm].reshape(shape)
    ints = np.clip(np.rint(x / sp) + zp, 0, 2 ** tq.bits - 1).astype(np.int64) - zp
    if w_int.shape[2] == 1 and stride == 1:
        return {-1: int_conv(ints, w_int, stride, pad)}
    mask = gm.reshape(shape)
    return {g: int_conv(np.where(mask == g, ints, 0), w_int, stride, pad) for g in range(s.shape[0])}


def group_sums_of_taps(taps, tq, step, c, size):
    """Tap accumulators -> pixel-group accumulators: tap (i, j) at output (oh, ow) reads input pixel
    (oh*s - pad + i, ow*s - pad + j); it adds to that pixel's group (outside the image it adds 0)."""
    gm = tq.group_map[0 if tq.group_map.shape[0] == 1 else step].reshape(size)
    out = {}
    for t, acc in taps.items():
        i, j = divmod(t, c["k"])
        _, ho, wo, _ = acc.shape
        rows = np.arange(ho) * c["stride"] - c["pad"] + i
        cols = np.arange(wo) * c["stride"] - c["pad"] + j
        inside = (rows[:, None] >= 0) & (rows[:, None] < size[0]) & (cols[None] >= 0) & (cols[None] < size[1])
        assert not acc[:, ~inside].any()          # padded taps add nothing
        groups = gm[np.clip(rows, 0, size[0] - 1)][:, np.clip(cols, 0, size[1] - 1)]
        for g in range(tq.scale.shape[1]):
            part = np.where(((groups == g) & inside)[None, :, :, None], acc, 0)
            out[g] = out.get(g, 0) + part
    return out


def _weights(qdq, name):
    from passes.lower_common import _int4_values
    inits = {t.name: t for t in qdq.graph.initializer}
    read = lambda t: _int4_values(t) if t.data_type == onnx.TensorProto.INT4 else numpy_helper.to_array(t)  # noqa: E731
    return read(inits[f"{name}_quantized"]).astype(np.int64) - read(inits[f"{name}_zero_point"]).astype(
        np.int64)[:, None, None, None]


@pytest.mark.parametrize("axes,bits,wbits,shared", [
    (("tensor", "tensor", "tensor"), 8, 8, False), (("channel", "pixel", "pixel"), 8, 8, False),
    (("pixel", "channel", "channel"), 6, 4, False), (("channel", "pixel", "tensor"), 7, 8, True)])
@pytest.mark.parametrize("max_inflation", [0.0, float("inf")])  # channel groups: one product per group / one batched
def test_lowered_convs_are_exact_and_match_the_qdq_graph(tg, axes, bits, wbits, shared, max_inflation):
    entries = []
    size = SIZE
    for (name, c), axis, seed in zip(CONVS.items(), axes, range(10, 20)):
        n = c["c_in"] if axis == "channel" else size * size
        entries += [tg.uniform_entry(name, "input", bits=bits, axis=axis, n=n, groups=3, seed=seed, shared=shared),
                    tg.weight_entry(name, c["c_out"], bits=wbits, seed=seed + 1)]
        size = (size + 2 * c["pad"] - c["k"]) // c["stride"] + 1
    recipe = tg.make_recipe(entries)
    model = convs_model(tg)
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    passes = compile_passes()
    lowered, ctx = tg.compile_model(model, recipe, passes[:-1] + [LowerConv(max_inflation)] + passes[-1:])
    assert "Conv" not in tg.ops(lowered) and "DequantizeLinear" not in tg.ops(lowered)
    rows = {r["module"]: r for r in json.loads(ctx.artifacts["lowering.json"])}
    # pixel groups on a kxk conv: one product per kernel tap; channel groups: one per group
    expected = {name: 1 if axis == "tensor" or (axis == "pixel" and CONVS[name]["k"] == 1)
                else (CONVS[name]["k"] ** 2 if axis == "pixel" else 3) for name, axis in zip(CONVS, axes)}
    assert {m: r["accumulators"] for m, r in rows.items()} == expected
    # batched: one integer product per op, except pixel groups on a kxk conv (one per tap)
    batched = max_inflation == float("inf")
    assert tg.ops(lowered).count("MatMulInteger") == sum(
        v if a == "pixel" or not batched else 1 for v, a in zip(expected.values(), axes))
    for step, t in enumerate(tg.TIMESTEPS):
        feed = {"sample": (np.random.default_rng(step).standard_normal((1, 4, SIZE, SIZE)) * 2).astype(np.float32),
                "timestep": np.array([t], np.float32)}
        values, _ = tg.lowered_values(lowered, feed)
        for name, c in CONVS.items():
            tq = recipe.tensors[(name, "input")]
            nodes = tg.accumulator_nodes(lowered, name)
            x = values[next(iter(nodes.values()))[1]]
            ref = reference_conv(x, tq, step, _weights(qdq, f"{name}_w"), c["stride"], c["pad"])
            got = {g: values[acc].astype(np.int64) for g, (acc, _x) in nodes.items()}
            if tq.axis == "pixel" and c["k"] > 1:
                got = group_sums_of_taps(got, tq, step, c, x.shape[2:])
            assert set(got) == set(ref)
            for g, acc in got.items():
                want = ref[g].transpose(0, 2, 3, 1)   # the lowered product is channels-last
                np.testing.assert_array_equal(acc, want.reshape(acc.shape))
        (y_qdq,) = tg.run(qdq, feed)
        np.testing.assert_allclose(values["out"], y_qdq, rtol=1e-4, atol=1e-5 * float(np.abs(y_qdq).max()))


def test_a_wrong_zero_point_padding_would_be_caught(tg):
    """Padding the codes with 0 instead of the zero point changes the border accumulators: the reference sees it."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (1, 2, 4, 4))
    w = rng.integers(-8, 8, (3, 2, 3, 3))
    z = 100
    right = int_conv(codes - z, w, 1, 1)
    wrong = int_conv(np.pad(codes, ((0, 0), (0, 0), (1, 1), (1, 1))) - z, w, 1, 0)
    assert np.array_equal(right[..., 1:-1, 1:-1], wrong[..., 1:-1, 1:-1])
    assert not np.array_equal(right, wrong)


@pytest.mark.parametrize("axis,max_inflation", [("tensor", 1.5), ("channel", 0.0), ("channel", float("inf")),
                                                ("pixel", 1.5)])
def test_every_integer_product_fuses_with_its_rescale_in_onnxruntime(tg, axis, max_inflation, tmp_path):
    """A default session turns MatMulInteger -> Cast -> Mul into MatMulIntegerToFloat for every product: an unfused
    product writes and re-reads int32 and float copies of its output (a shared weight-scale product blocked this for
    the per-tap products of pixel groups: onnxruntime merges identical scale products, and a shared one is not fused)."""
    import onnxruntime as ort

    entries = [tg.uniform_entry(name, "input", axis=axis, n=SIZE * SIZE if axis == "pixel" and name == "a" else
                                c["c_in"], groups=3, seed=i) for i, (name, c) in enumerate(CONVS.items()) if name == "a"]
    entries += [tg.weight_entry("a", CONVS["a"]["c_out"], seed=9)]
    passes = compile_passes()
    lowered, _ = tg.compile_model(convs_model(tg), tg.make_recipe(entries),
                                  passes[:-1] + [LowerConv(max_inflation)] + passes[-1:])
    products = sum(n.op_type == "MatMulInteger" for n in lowered.graph.node)
    assert products == {"tensor": 1, "channel": 1 if max_inflation else 3, "pixel": 9}[axis]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(lowered.SerializeToString(), options, providers=["CPUExecutionProvider"])
    kinds = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert kinds.count("MatMulIntegerToFloat") == products and "MatMulInteger" not in kinds
