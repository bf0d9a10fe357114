"""lower_common: pixel-group maps of the integer lowering are resampled to the run-time size like the QDQ graph's.

The levels model (pixel groups on a 3x3 conv, a 3x3 stride-2 conv and a token Linear, calibrated at 4x4) is lowered
and run at other latent sizes: its output equals the QDQ graph's (which resamples, tests/passes/test_pixel_groups.py)
up to float32 rounding of the epilogue, and every tap accumulator of the first conv equals an int64 reference made
with the nearest-below resampled map (a tiled map gives other accumulators, so the test can tell)."""
from __future__ import annotations

import numpy as np
import pytest

from passes.lower_conv import LowerConv
from passes.lower_linear import LowerLinear
from passes.pipeline import compile_passes
from tests.passes.test_pixel_groups import _nearest_below, _recipe, _tiled, levels_model


def _tap_reference(x, tq, step, w_int, resample):
    """int64 accumulators of each tap t of a 3x3 pad-1 conv with per-pixel codes (map resampled to x's size)."""
    _, _, h, w = x.shape
    row = tq.group_map[0 if tq.group_map.shape[0] == 1 else step]
    gm = resample(row, (4, 4), (h, w)).reshape(h, w)
    s, z = tq.scale[step][gm], tq.zero_point[step][gm].astype(np.float32)
    q = np.clip(np.rint(x / s) + z, 0, 2 ** tq.bits - 1) - z                          # [1, C, h, w] integers
    padded = np.pad(q.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    return [np.einsum("bchw,oc->bhwo", padded[:, :, i:i + h, j:j + w], w_int[:, :, i, j])
            for i in range(3) for j in range(3)]


@pytest.mark.parametrize("shared", [False, True])
def test_lowered_pixel_groups_resample_like_the_qdq_graph(tg, shared):
    from dgq_compiler.runtime import session
    from onnx import numpy_helper

    model, activations = levels_model(), _recipe(tg, shared)
    recipe = tg.make_recipe(list(activations.tensors.values()) + [
        tg.weight_entry("down.conv", 6, seed=4), tg.weight_entry("mid.conv", 6, seed=5), tg.weight_entry("proj", 5, seed=6)])
    qdq, _ = tg.compile_model(model, recipe, compile_passes())
    passes = compile_passes()
    lowered, _ = tg.compile_model(model, recipe, passes[:-1] + [LowerLinear(), LowerConv()] + passes[-1:])
    assert "Conv" not in tg.ops(lowered) and "dgq/down.conv/lower/group_map/Resample" in {
        n.name for n in lowered.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    w_int = inits["w1_quantized"].astype(np.int64) - inits["w1_zero_point"].astype(np.int64)[:, None, None, None]
    reference = session(qdq, "default")
    tq = recipe.tensors[("down.conv", "input")]
    rng = np.random.default_rng(0)
    for t, step in ((900, 0), (100, 2)):
        for h, w in ((4, 4), (8, 8), (6, 10), (2, 2)):
            feed = {"sample": (rng.standard_normal((1, 4, h, w)) * 2).astype(np.float32),
                    "timestep": np.array([t], np.float32)}
            values, _ = tg.lowered_values(lowered, feed)
            want = reference.run(None, feed)[0]
            np.testing.assert_allclose(values["y"], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
            taps = tg.accumulator_nodes(lowered, "down.conv")
            assert sorted(taps) == list(range(9))
            ref = _tap_reference(feed["sample"], tq, step, w_int, _nearest_below)
            for tap, (acc, _x) in taps.items():
                np.testing.assert_array_equal(values[acc].astype(np.int64), ref[tap].reshape(values[acc].shape))
            if max(h, w) > 4:  # another resampling gives other accumulators
                wrong = _tap_reference(feed["sample"], tq, step, w_int, _tiled)
                assert any(not np.array_equal(values[acc].astype(np.int64), wrong[tap].reshape(values[acc].shape))
                           for tap, (acc, _x) in taps.items())
