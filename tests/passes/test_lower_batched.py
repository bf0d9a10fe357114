"""lower_batched: channel (split-K) groups as one batched MatMulInteger per op.

The slot layout (every channel once per step, padding slots against the zero-point weight row, zero-point slots),
the zero-point correction rows (numpy and the run-time graph agree, negative targets included; without them, or
with another zero point, the accumulators differ), and on a lowered tiny graph: one integer product per grouped
op whose slices equal the per-group int64 reference, and not the reference of a permuted group map."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from passes.lower_batched import correction_rows_of, group_column_sums, padded_group_layout
from passes.lower_common import correction_count, correction_rows
from passes.lower_linear import LowerLinear
from passes.pipeline import compile_passes


def _group_map(rng, steps, k, groups):
    gm = rng.integers(0, groups, (steps, k))
    gm[1][gm[1] == groups - 1] = 0  # a group empty at step 1
    return gm


def test_every_channel_has_one_slot_per_step_and_padding_adds_nothing():
    rng = np.random.default_rng(0)
    k, groups, zero_slots = 11, 3, 2
    gm = _group_map(rng, 3, k, groups)
    perm_a, perm_w, kp = padded_group_layout(gm, groups, zero_slots)
    assert kp == max(np.bincount(row, minlength=groups).max() for row in gm)
    assert perm_a.shape == (3, groups * (kp + zero_slots)) and perm_w.shape == (3, groups * kp)
    for t, row in enumerate(gm):
        a = perm_a[t].reshape(groups, kp + zero_slots)
        w = perm_w[t].reshape(groups, kp)
        for g in range(groups):
            members = np.nonzero(row == g)[0]
            assert list(w[g][w[g] < k]) == list(members) and list(a[g, : len(members)]) == list(members)
            assert (w[g][len(members):] == k).all()                   # padding: the zero-point weight row
            assert (a[g, kp:] == k + g).all()                         # zero-point slots: group g's row
    assert not (perm_w.reshape(3, groups, kp)[1, groups - 1] < k).any()  # the empty group: padding only


def _batched(a_codes, z, gm_row, w, zw, groups):
    """numpy model of the lowering: slots, zero-point slots holding z_g, correction rows -> [G, M, N] int64."""
    _, perm_w, kp = padded_group_layout(gm_row[None], groups)
    padded, sums = group_column_sums(w[None], zw, perm_w, groups, kp)
    r = correction_count(sums, zw)
    perm_a, _, _ = padded_group_layout(gm_row[None], groups, r)
    with_zero = np.concatenate([a_codes, np.broadcast_to(z[None, :], (a_codes.shape[0], groups))], axis=1)
    a = with_zero[:, perm_a[0]].reshape(-1, groups, kp + r).transpose(1, 0, 2).astype(np.int64)
    w_g = np.concatenate([padded[0][perm_w[0]].reshape(groups, kp, -1), correction_rows(sums, zw, r)[0]], axis=1)
    return a @ (w_g.astype(np.int64) - zw.astype(np.int64))


def test_zero_point_slots_make_each_group_exact_and_a_wrong_zero_point_or_map_is_seen():
    rng = np.random.default_rng(1)
    k, n, groups = 13, 5, 3
    gm = rng.integers(0, groups, k)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    zw = rng.integers(-40, 41, n).astype(np.int8)
    codes = rng.integers(0, 256, (7, k))
    z = rng.integers(0, 256, groups)
    ref = np.stack([(codes[:, gm == g] - z[g]) @ (w[gm == g].astype(np.int64) - zw) for g in range(groups)])
    np.testing.assert_array_equal(_batched(codes, z, gm, w, zw, groups), ref)
    wrong_z = z.copy()
    wrong_z[1] = (wrong_z[1] + 1) % 256
    assert not np.array_equal(_batched(codes, wrong_z, gm, w, zw, groups), ref)
    swapped = gm.copy()
    i, j = np.nonzero(gm == 0)[0][0], np.nonzero(gm == 1)[0][0]
    swapped[i], swapped[j] = gm[j], gm[i]                  # two channels trade groups
    assert not np.array_equal(_batched(codes, z, swapped, w, zw, groups), ref)


@pytest.mark.parametrize("r", [1, 3, 40])
def test_run_time_correction_rows_equal_the_numpy_rows(r):
    """The graph's floor / mod arithmetic (Mod fmod=0, exact Div) gives correction_rows' rows, negative sums too."""
    from dgq_compiler.runtime import session

    rng = np.random.default_rng(r)
    groups, kp, n = 3, 6, 7
    zw = rng.integers(-20, 21, n).astype(np.int8)
    w_rows = rng.integers(-128, 128, (groups, kp, n)).astype(np.int8)
    sums = (w_rows.astype(np.int64) - zw).sum(axis=1)
    r = max(r, correction_count(sums, zw))
    graph = gs.Graph(inputs=[gs.Variable("w", np.int8, (groups, kp, n))], opset=21)
    d = correction_rows_of(graph, graph.inputs[0], zw, kp, r, [1], "t")
    graph.outputs = [d]
    model = gs.export_onnx(graph.cleanup())
    model.ir_version = 10
    (got,) = session(model, "default").run(None, {"w": w_rows})
    np.testing.assert_array_equal(got, correction_rows(sums, zw, r))
    np.testing.assert_array_equal((got.astype(np.int64) - zw).sum(axis=1), -sums)


def test_a_channel_grouped_linear_is_one_product_whose_slices_are_the_group_accumulators(tg):
    recipe = tg.make_recipe([tg.uniform_entry("proj", "input", axis="channel", n=6, groups=3, seed=2),
                             tg.uniform_entry("time", "input", axis="channel", n=6, groups=2, seed=3),
                             tg.weight_entry("proj", 8, seed=4), tg.weight_entry("time", 5, seed=5)])
    model = tg.layers_model()
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    passes = compile_passes()
    lowered, _ = tg.compile_model(model, recipe, passes[:-1] + [LowerLinear(float("inf"))] + passes[-1:])
    products = [n for n in lowered.graph.node if n.op_type == "MatMulInteger"]
    assert len(products) == 2 and all(
        {p.key: p.value for p in n.metadata_props}["dgq.group"] == "batched" for n in products)
    inits = {t.name: t for t in qdq.graph.initializer}
    w = onnx.numpy_helper.to_array(inits["onnx::MatMul_1_quantized"]).astype(np.int64) - \
        onnx.numpy_helper.to_array(inits["onnx::MatMul_1_zero_point"]).astype(np.int64)
    tq = recipe.tensors[("proj", "input")]
    for step, t in enumerate(tg.TIMESTEPS):
        feed = {"sample": (np.random.default_rng(step).standard_normal((1, 4, 4, 4)) * 2).astype(np.float32),
                "timestep": np.array([t], np.float32)}
        values, _ = tg.lowered_values(lowered, feed)
        nodes = tg.accumulator_nodes(lowered, "proj")
        x = values[nodes[0][1]]
        gm = tq.group_map[step]
        s, z = tq.scale[step], tq.zero_point[step].astype(np.int64)
        q = np.clip(np.rint(x / s[gm]) + z[gm], 0, 2 ** tq.bits - 1).astype(np.int64) - z[gm]
        for g, (acc, _x) in nodes.items():
            np.testing.assert_array_equal(values[acc], (q[..., gm == g] @ w[gm == g]).reshape(values[acc].shape))
        moved = gm.copy()
        moved[np.nonzero(gm == 0)[0][0]] = 1                   # one channel in another group: other accumulators
        assert any(not np.array_equal(values[acc].ravel(), (q[..., moved == g] @ w[moved == g]).ravel())
                   for g, (acc, _x) in nodes.items())
