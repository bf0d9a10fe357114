"""DGQ on planted outliers: the dimension metric, K-means groups, and their quantization error."""
import numpy as np
import pytest
import torch

from dgq_compiler.calibrate.reference_stats import tensor_partials
from dgq_compiler.calibrate.points import QuantPoint
from dgq_compiler.config import QuantConfig, preset
from dgq_compiler.fakequant import quantize_uniform
from dgq_compiler.quantize.activations import Features, dgq_activation, per_tensor_activation
from dgq_compiler.quantize.kmeans import kmeans_labels

C, H, W, STEPS = 32, 8, 8, 3
OUTLIER_CHANNELS = [5, 19, 27]
OUTLIER_PIXELS = [9, 40]


def activations(kind: str, seed: int = 0) -> list[torch.Tensor]:
    """Per step a [2, C, H, W] activation with a few outlier channels or pixels (x40)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for step in range(STEPS):
        x = torch.randn(2, C, H, W, generator=gen) * (1 + 0.2 * step)
        if kind == "channel":
            x[:, OUTLIER_CHANNELS] *= 40
        else:
            x.view(2, C, H * W)[:, :, OUTLIER_PIXELS] *= 40
        out.append(x)
    return out


def features(xs) -> Features:
    """The statistics exactly as the calibration observer computes them."""
    parts = [dict((s, (lo, hi)) for s, lo, hi in tensor_partials("input", x, False)) for x in xs]
    stack = lambda stat, i: np.stack([p[stat][i].numpy() for p in parts])  # noqa: E731
    return Features(stack("channel", 0), stack("channel", 1), stack("pixel", 0), stack("pixel", 1))


def fake_quant(x, tq, step):
    scale = torch.from_numpy(tq.scale[step])
    zero = torch.from_numpy(tq.zero_point[step].astype(np.float32))
    if tq.axis == "tensor":
        return quantize_uniform(x, scale.reshape(()), zero.reshape(()), tq.bits)
    index = torch.from_numpy(tq.group_map[step].astype(np.int64))
    shape = [1, -1, 1, 1] if tq.axis == "channel" else [1, 1, H, W]
    return quantize_uniform(x, scale[index].reshape(shape), zero[index].reshape(shape), tq.bits)


def sqnr(x, xq):
    return float(10 * torch.log10(x.pow(2).sum() / (x - xq).pow(2).sum()))


POINT = QuantPoint("down.conv", "input", "nchw", C, H * W)


@pytest.mark.parametrize("kind, outliers", [("channel", OUTLIER_CHANNELS), ("pixel", OUTLIER_PIXELS)])
def test_planted_outliers_pick_their_dimension_and_get_their_own_group(kind, outliers):
    xs = activations(kind)
    feat = features(xs)
    config = QuantConfig(groups=8, act_bits=8)
    tq, info = dgq_activation(POINT, feat, config)
    assert tq.axis == kind and info["axis"] == kind
    other = "pixel" if kind == "channel" else "channel"
    assert info["metric"][kind] > info["metric"][other]
    assert tq.scale.shape == (STEPS, 8) and tq.group_map.shape == (STEPS, C if kind == "channel" else H * W)
    per_tensor, _ = per_tensor_activation(POINT, feat, config)
    for step, x in enumerate(xs):
        labels = tq.group_map[step]
        outlier_groups = set(labels[outliers])
        normal = np.setdiff1d(np.arange(labels.size), outliers)
        assert not outlier_groups & set(labels[normal]), "an outlier shares its group with ordinary indices"
        # the outliers' own group keeps them accurately (their range is wide, but only theirs)
        flat = lambda t: t.reshape(2, C, H * W)  # noqa: E731
        pick = (lambda t: flat(t)[:, outliers]) if kind == "channel" else (lambda t: flat(t)[:, :, outliers])
        rest = (lambda t: flat(t)[:, normal]) if kind == "channel" else (lambda t: flat(t)[:, :, normal])
        dgq, tensor = fake_quant(x, tq, step), fake_quant(x, per_tensor, step)
        assert sqnr(pick(x), pick(dgq)) > 40
        # ordinary values: fine under DGQ, crushed by the outlier-stretched per-tensor scale
        assert sqnr(rest(x), rest(dgq)) > 35
        assert sqnr(rest(x), rest(tensor)) < sqnr(rest(x), rest(dgq)) - 20
        assert sqnr(x, dgq) > sqnr(x, tensor)


def test_group_tables_cover_each_groups_absolute_range():
    xs = activations("channel")
    feat = features(xs)
    tq, _ = dgq_activation(POINT, feat, QuantConfig(groups=4, act_bits=6))
    for step in range(STEPS):
        for g in range(4):
            members = tq.group_map[step] == g
            lo = min(feat.channel_lo[step][members].min(), 0)
            hi = max(feat.channel_hi[step][members].max(), 0)
            s, z = float(tq.scale[step, g]), int(tq.zero_point[step, g])
            assert s == pytest.approx((hi - lo) / 63, rel=1e-6)
            assert z == int(np.rint(-lo / s)) and 0 <= z <= 63
            # both ends of the range are on the grid (no clipping of the group's extremes)
            assert (0 - z) * s <= lo + s / 2 and (63 - z) * s >= hi - s / 2


def test_shared_map_and_one_scale_variants():
    feat = features(activations("channel"))
    shared, _ = dgq_activation(POINT, feat, QuantConfig(groups=8, shared_group_map=True))
    assert shared.group_map.shape == (1, C) and shared.scale.shape == (STEPS, 8)
    assert len(set(map(tuple, shared.scale))) == STEPS  # scales stay per step
    one, _ = dgq_activation(POINT, feat, QuantConfig(groups=8, per_step=False))
    assert one.group_map.shape == (1, C) and all(np.array_equal(one.scale[0], r) for r in one.scale)
    qd, _ = per_tensor_activation(POINT, feat, preset("qdiffusion-w8a8"))
    tf, _ = per_tensor_activation(POINT, feat, preset("tfmq-w8a8"))
    assert qd.axis == tf.axis == "tensor" and qd.scale.shape == tf.scale.shape == (STEPS, 1)
    assert np.all(qd.scale == qd.scale[0]) and len(np.unique(tf.scale)) == STEPS
    assert qd.scale[0, 0] >= tf.scale.max()  # one scale covers every step's range


def test_forced_dimension_and_points_without_pixels():
    feat = features(activations("channel"))
    tq, _ = dgq_activation(POINT, feat, QuantConfig(groups=8, dimension="pixel"))
    assert tq.axis == "pixel"
    no_pixels = Features(feat.channel_lo, feat.channel_hi, None, None)
    tq, _ = dgq_activation(QuantPoint("time_embedding.linear_1", "input", "nc", C, 0), no_pixels,
                           QuantConfig(groups=8, dimension="pixel"))
    assert tq.axis == "channel"


def test_kmeans_is_deterministic_stable_and_handles_few_points():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(30, 1, (4, 2))])
    a = kmeans_labels(f, 8, seed=0)
    assert np.array_equal(a, kmeans_labels(f.copy(), 8, seed=0))
    assert len(np.unique(a)) == 8 and a.min() == 0 and a.max() == 7
    assert len(set(a[60:])) >= 1 and not set(a[60:]) & set(a[:60])
    # groups ordered by centroid width hi - lo: group 0 narrowest
    widths = [np.mean(f[a == g, 1] - f[a == g, 0]) for g in range(8)]
    assert widths == sorted(widths)
    dup = np.array([[0.0, 1.0]] * 5 + [[0.0, 2.0]] * 5)
    labels = kmeans_labels(dup, 8)
    assert sorted(np.unique(labels)) == [0, 1] and len(set(labels[:5])) == 1
