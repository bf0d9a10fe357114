"""Integer accumulations equal int64 reference arithmetic exactly: matmul, conv, split-K channel groups,
pixel groups, shift-and-add, accumulator width, fixed-point epilogue; random and worst-case operands,
zero points, int4."""
from fractions import Fraction

import numpy as np
import pytest

from simulator.epilogue import Epilogue, fixed_point_multiplier
from simulator.integer import (apply_accumulator_width, int_conv2d, int_conv2d_pixel_groups, int_matmul)
from simulator.qmatmul import quantized_matmul
from simulator.qconv import quantized_conv
from simulator.qtensor import LOG, QTensor
from simulator.rounding import RoundingMode, shift_right


def _ref_conv(x, w, stride, pad, dil, group):
    """Naive int64 convolution, one output at a time."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    ho = (h - dil * (kh - 1) - 1) // stride + 1
    wo = (wd - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, co, ho, wo), np.int64)
    per = co // group
    for o in range(co):
        g = o // per
        for i in range(ho):
            for j in range(wo):
                patch = x[:, g * cg:(g + 1) * cg, i * stride:i * stride + dil * (kh - 1) + 1:dil,
                          j * stride:j * stride + dil * (kw - 1) + 1:dil]
                out[:, o, i, j] = (patch * w[o].astype(np.int64)).sum(axis=(1, 2, 3))
    return out


def _codes(rng, shape, lo, hi, worst=False):
    if worst:  # every operand at a grid extreme
        return np.where(rng.random(shape) < 0.5, lo, hi)
    return rng.integers(lo, hi + 1, shape)


@pytest.mark.parametrize("worst", [False, True])
@pytest.mark.parametrize("bits_a, bits_b", [(8, 8), (6, 4), (4, 4)])
def test_int_matmul_equals_int64(worst, bits_a, bits_b):
    rng = np.random.default_rng(bits_a * 10 + bits_b + worst)
    qa = _codes(rng, (3, 17, 300), 0, 2 ** bits_a - 1, worst)            # unsigned activations
    qb = _codes(rng, (300, 9), -2 ** (bits_b - 1), 2 ** (bits_b - 1) - 1, worst)  # signed weights
    za = rng.integers(0, 2 ** bits_a, (1, 1, 1)) if not worst else np.full((1, 1, 1), 2 ** bits_a - 1)
    zb = rng.integers(-2 ** (bits_b - 1), 2 ** (bits_b - 1), (1, 9))
    a, b = (qa - za), (qb - zb)
    got = int_matmul(a, b, 2 ** bits_a - 1, 2 ** bits_b - 1)
    ref = np.matmul(a.astype(np.int64), b.astype(np.int64))
    bound = 300 * (2 ** bits_a - 1) * (2 ** bits_b - 1)
    assert got.dtype == (np.float32 if bound < 2 ** 24 else np.float64)  # the cheapest provably exact type
    assert np.array_equal(got.astype(np.int64), ref)


def test_int_matmul_falls_back_to_int64_beyond_2_pow_53():
    rng = np.random.default_rng(0)
    k = (1 << 21) + (1 << 17)
    a = rng.integers(65000, 65536, (1, k))
    b = rng.integers(65000, 65536, (k, 1))
    got = int_matmul(a, b, 65535, 65535)               # bound 65535^2 * K > 2^53: doubles are not proven exact
    assert got.dtype == np.int64
    exact = int(np.dot(a[0].astype(object), b[:, 0].astype(object)))
    assert exact > 2 ** 53 and int(got[0, 0]) == exact


@pytest.mark.parametrize("stride, pad, dil, group", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 0, 2, 1), (1, 1, 1, 2)])
@pytest.mark.parametrize("worst", [False, True])
def test_int_conv_equals_int64(stride, pad, dil, group, worst):
    rng = np.random.default_rng(stride + 3 * pad + 7 * dil + 11 * group + worst)
    x = _codes(rng, (2, 4, 7, 6), 0, 255, worst) - 128
    w = _codes(rng, (6, 4 // group, 3, 3), -8, 7, worst) - (-8 if worst else 2)   # int4 codes minus zero point
    got = int_conv2d(x, w, 255, 15, (stride, stride), (pad, pad, pad, pad), (dil, dil), group)
    assert np.array_equal(got.astype(np.int64), _ref_conv(x, w, stride, pad, dil, group))


@pytest.mark.parametrize("k", [1, 3])
def test_pixel_group_conv_equals_masked_convolutions(k):
    rng = np.random.default_rng(k)
    x = rng.integers(-255, 256, (2, 3, 6, 5))
    w = rng.integers(-255, 256, (4, 3, k, k))
    gid = rng.integers(0, 3, (6, 5))
    pad = k // 2
    acc = int_conv2d_pixel_groups(x, w, gid, 3, 255, 255, (1, 1), (pad,) * 4, (1, 1))
    for g in range(3):
        masked = np.where(gid[None, None] == g, x, 0)
        assert np.array_equal(acc[g].astype(np.int64), _ref_conv(masked, w, 1, pad, 1, 1))


def _qt(codes, scale, zp, lo, hi, kind="linear"):
    return QTensor(codes=codes, scale=np.asarray(scale, np.float32), zero_point=np.asarray(zp, np.int32),
                   kind=kind, code_range=(lo, hi))


def test_split_k_channel_groups_one_exact_accumulator_per_group():
    """Linear with channel-grouped activations: one accumulator per group, each equal to the int64 partial sum."""
    rng = np.random.default_rng(5)
    c, groups = 32, 4
    gmap = rng.permutation(np.arange(c) % groups)
    gscale = np.array([0.01, 0.02, 0.05, 0.1], np.float32)
    gzp = np.array([3, 100, 128, 250])
    qa = rng.integers(0, 256, (2, 5, c)).astype(np.uint8)
    qb = rng.integers(-8, 8, (c, 6)).astype(np.int8)                         # int4 weights
    zb = rng.integers(-8, 8, 6)
    sb = rng.uniform(0.01, 0.1, 6).astype(np.float32)
    a = _qt(qa, gscale[gmap].reshape(1, 1, c), gzp[gmap].reshape(1, 1, c), 0, 255)
    b = _qt(qb, sb.reshape(1, 6), zb.reshape(1, 6), -8, 7)
    seen = []
    y, n_groups = quantized_matmul(a, b, lambda acc, log=False, bound=None: seen.append(acc) or acc, Epilogue("float32"))
    assert n_groups == groups and len(seen) == groups
    centred_a = qa.astype(np.int64) - gzp[gmap]
    centred_b = qb.astype(np.int64) - zb
    expected = np.zeros((2, 5, 6), np.float32)
    refs = []
    for g in range(groups):
        idx = np.nonzero(gmap == g)[0]
        refs.append(centred_a[..., idx] @ centred_b[idx])
        expected += refs[-1].astype(np.float32) * (gscale[g] * sb)
    for acc in seen:  # each accumulator is one group's exact partial sum (order: by scale value)
        assert any(np.array_equal(acc.astype(np.int64), r) for r in refs)
    np.testing.assert_array_equal(y, expected)
    dequant = (centred_a * gscale[gmap]).astype(np.float64) @ (centred_b * sb).astype(np.float64)
    np.testing.assert_allclose(y, dequant, rtol=1e-5, atol=1e-5)


def test_token_groups_are_per_row_scales_and_pixel_groups_on_conv():
    rng = np.random.default_rng(6)
    qa = rng.integers(0, 256, (2, 8, 16)).astype(np.uint8)
    row_scale = rng.uniform(0.01, 0.05, (1, 8, 1)).astype(np.float32)
    a = _qt(qa, row_scale, np.full((1, 8, 1), 7), 0, 255)
    qb = rng.integers(-128, 128, (16, 4)).astype(np.int8)
    b = _qt(qb, np.full((1, 4), 0.02), np.zeros((1, 4)), -128, 127)
    seen = []
    y, groups = quantized_matmul(a, b, lambda acc, log=False, bound=None: seen.append(acc) or acc, Epilogue("float32"))
    ref = (qa.astype(np.int64) - 7) @ qb.astype(np.int64)
    assert groups == 1 and np.array_equal(seen[0].astype(np.int64), ref)
    np.testing.assert_array_equal(y, ref.astype(np.float32) * (row_scale * np.float32(0.02)))
    # pixel-grouped conv input: one accumulator per group, rescaled and summed
    x = rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8)
    gid = rng.integers(0, 2, (5, 5))
    sx = np.array([0.03, 0.07], np.float32)[gid].reshape(1, 1, 5, 5)
    w = rng.integers(-128, 128, (2, 3, 3, 3)).astype(np.int8)
    xq, wq = _qt(x, sx, np.full((1, 1, 1, 1), 9), 0, 255), _qt(w, np.full((2, 1, 1, 1), 0.5), np.zeros((2, 1, 1, 1)), -128, 127)
    y, groups = quantized_conv(xq, wq, (1, 1), (1, 1, 1, 1), (1, 1), 1, lambda acc, log=False, bound=None: acc, Epilogue("float32"))
    expected = np.zeros_like(y)
    for g, s in enumerate([0.03, 0.07]):
        masked = np.where(gid[None, None] == g, x.astype(np.int64) - 9, 0)
        expected += _ref_conv(masked, w, 1, 1, 1, 1).astype(np.float32) * (np.float32(s) * np.float32(0.5))
    assert groups == 2
    np.testing.assert_array_equal(y, expected)


def test_shift_and_add_attention_is_exact_with_max_shift():
    rng = np.random.default_rng(7)
    q = rng.integers(0, 256, (3, 4, 20)).astype(np.uint8)            # log codes
    v = rng.integers(0, 256, (3, 20, 5)).astype(np.uint8)
    s_attn, s_v, z_v, max_shift = np.float32(0.3), np.float32(0.02), 131, 12
    a = _qt(q, np.full((1, 1, 1), s_attn), np.zeros((1, 1, 1)), 0, 255, kind=LOG)
    b = _qt(v, np.full((1, 1, 1), s_v), np.full((1, 1, 1), z_v), 0, 255)
    seen = []
    y, _ = quantized_matmul(a, b, lambda acc, log=False, bound=None: seen.append((acc, log)) or acc, Epilogue("float32"), max_shift)
    terms = np.where(q.astype(np.int64) <= max_shift, 2 ** (max_shift - q.astype(np.int64).clip(0, max_shift)), 0)
    ref = terms @ (v.astype(np.int64) - z_v)
    assert seen[0][1] is True and np.array_equal(seen[0][0].astype(np.int64), ref)
    np.testing.assert_array_equal(y, ref.astype(np.float32) * (np.float32(s_attn * np.float32(2.0 ** -max_shift)) * s_v))


def test_accumulator_width_wraps_and_counts_like_hardware():
    rng = np.random.default_rng(8)
    a = np.full((4, 512), 255)
    b = np.where(rng.random((512, 3)) < 0.9, 127, -128)
    acc = int_matmul(a, b, 255, 255)
    ref = a.astype(np.int64) @ b.astype(np.int64)
    wrapped, count, peak = apply_accumulator_width(acc, 16, "wrap")
    assert count == int(np.count_nonzero((ref > 32767) | (ref < -32768))) > 0
    assert np.array_equal(wrapped.astype(np.int64), ref.astype(np.int16).astype(np.int64))
    assert peak == float(np.abs(ref).max())
    saturated, _, _ = apply_accumulator_width(acc, 16, "saturate")
    assert np.array_equal(saturated.astype(np.int64), np.clip(ref, -32768, 32767))


@pytest.mark.parametrize("mode", ["HALF_EVEN", "HALF_UP", "TRUNCATE", "FLOOR"])
def test_fixed_point_epilogue_matches_exact_rational(mode):
    rng = np.random.default_rng(9)
    acc = rng.integers(-2 ** 30, 2 ** 30, (50,)).astype(np.float64)
    scale = rng.uniform(1e-5, 1e-2, (50,)).astype(np.float32)
    ep = Epilogue("fixed_point", mode, multiplier_bits=31, output_frac_bits=16)
    got = ep.rescale_sum([(acc, scale)])
    m, n = fixed_point_multiplier(scale, 31)
    assert np.all(np.abs(m * 2.0 ** -n.astype(np.float64) - scale) <= scale * 2.0 ** -30)
    for i in range(50):
        exact = Fraction(int(acc[i]) * int(m[i]), 2 ** (int(n[i]) - 16))
        fixed = int(shift_right(np.array([int(acc[i]) * int(m[i])]), int(n[i]) - 16, RoundingMode(mode))[0])
        assert abs(Fraction(fixed) - exact) <= 1
        assert got[i] == np.float32(fixed * 2.0 ** -16)


def test_float16_epilogue_rounds_in_half_precision():
    acc = np.array([3001.0, -12345.0])
    y = Epilogue("float16").rescale_sum([(acc, np.float32(0.001))])
    np.testing.assert_array_equal(y, (acc.astype(np.float16) * np.float16(0.001)).astype(np.float32))


# ---- blocked schedules (performance paths) stay exact ------------------------------------------------
def _sequential_split_k(qa, za, sa, qb, zb, sb):
    """Reference for a [B, M, K] @ [B, K, N] product with scales/zero points varying along K on both sides
    (per batch element): int64 partial sum per distinct (scale_a, scale_b) pair, rescaled in float32 and
    added in ascending pair order."""
    out = np.zeros(qa.shape[:2] + qb.shape[2:], np.float32)
    partials = []
    for i in range(qa.shape[0]):
        ka, kb = sa[i].reshape(-1), sb[i].reshape(-1)
        a = qa[i].astype(np.int64) - za[i].reshape(1, -1)
        b = qb[i].astype(np.int64) - zb[i].reshape(-1, 1)
        for pa, pb in sorted(set(zip(ka.tolist(), kb.tolist()))):
            idx = np.nonzero((ka == pa) & (kb == pb))[0]
            part = a[:, idx] @ b[idx]
            partials.append(part)
            out[i] += part.astype(np.float32) * np.float32(np.float32(pa) * np.float32(pb))
    return out, partials


@pytest.mark.parametrize("schedule", ["one block", "many blocks on worker threads"])
def test_blocked_split_k_with_groups_on_both_operands_equals_int64(monkeypatch, schedule):
    """Q.K^T with channel groups on q and k, scales differing per head: one exact accumulator per
    (scale_q, scale_k) pair; the blocked schedule (row blocks, worker threads) gives the same bits."""
    import simulator.qmatmul as qm

    if schedule != "one block":
        monkeypatch.setattr(qm, "SMALL_PRODUCT", 0)
        monkeypatch.setattr(qm, "CHUNK_BYTES", 4096)
    rng = np.random.default_rng(11)
    heads, m, d, n = 4, 37, 12, 29
    gscale = rng.uniform(0.01, 0.1, 5).astype(np.float32)
    gq, gk = rng.integers(0, 3, (heads, d)), rng.integers(1, 5, (heads, d))
    sq, sk = gscale[gq].reshape(heads, 1, d), gscale[gk].reshape(heads, d, 1)
    zq, zk = rng.integers(0, 256, (heads, 1, d)), rng.integers(0, 256, (heads, d, 1))
    qa = _codes(rng, (heads, m, d), 0, 255, worst=True).astype(np.uint8)
    qb = rng.integers(0, 256, (heads, d, n)).astype(np.uint8)
    seen = []
    y, groups = quantized_matmul(_qt(qa, sq, zq, 0, 255), _qt(qb, sk, zk, 0, 255),
                                 lambda acc, log=False, bound=None: seen.append(acc.astype(np.int64)) or acc,
                                 Epilogue("float32"))
    expected, partials = _sequential_split_k(qa, zq, sq, qb, zk, sk)
    assert groups == max(len(set(zip(sq[i].ravel().tolist(), sk[i].ravel().tolist()))) for i in range(heads))
    np.testing.assert_array_equal(y, expected)
    # every accumulator handed to the width check is (a block of) an exact int64 partial sum
    pool = [p for p in partials]
    for acc in seen:
        block = acc.reshape(-1, acc.shape[-2], acc.shape[-1])
        for blk in block:
            assert any(any(np.array_equal(blk, p[r:r + blk.shape[0]]) for r in range(p.shape[0] - blk.shape[0] + 1))
                       for p in pool if p.shape[1] == blk.shape[1])


@pytest.mark.parametrize("chunk_bytes", [1 << 21, 2048])
def test_blocked_shift_and_add_with_token_groups_on_v_equals_int64(monkeypatch, chunk_bytes):
    """A.V with log-coded A and token-grouped v (split-K along tokens), S = 24 (float64 sums, 2^44 bound)."""
    import simulator.qmatmul as qm

    monkeypatch.setattr(qm, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(12)
    heads, m, k, d, max_shift = 3, 21, 50, 7, 24
    codes = np.where(rng.random((heads, m, k)) < 0.3, 0, rng.integers(0, 40, (heads, m, k))).astype(np.uint8)
    gid = rng.integers(0, 4, k)
    sv, zv = rng.uniform(0.01, 0.1, 4).astype(np.float32)[gid].reshape(1, k, 1), rng.integers(0, 256, 4)[gid].reshape(1, k, 1)
    v = rng.integers(0, 256, (heads, k, d)).astype(np.uint8)
    s_attn = np.float32(0.37)
    y, groups = quantized_matmul(_qt(codes, np.full((1, 1, 1), s_attn), np.zeros((1, 1, 1)), 0, 255, kind=LOG),
                                 _qt(v, sv, zv, 0, 255), lambda acc, log=False, bound=None: acc, Epilogue("float32"),
                                 max_shift)
    terms = np.where(codes <= max_shift, 2 ** (max_shift - np.minimum(codes.astype(np.int64), max_shift)), 0)
    scale_a = np.float32(s_attn * np.float32(2.0 ** -max_shift))
    expected = np.zeros((heads, m, d), np.float32)
    for g in sorted(set(gid.tolist()), key=lambda g: float(sv.ravel()[np.nonzero(gid == g)[0][0]])):
        idx = np.nonzero(gid == g)[0]
        part = terms[..., idx] @ (v[:, idx].astype(np.int64) - zv[:, idx])
        assert np.abs(part).max() < 2 ** 53
        expected += part.astype(np.float32) * np.float32(scale_a * sv.ravel()[idx[0]])
    assert groups == 4
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("bits_x, bits_w", [(6, 4), (8, 8)])
def test_torch_conv_float32_and_float64_paths_equal_int64_on_worst_case(bits_x, bits_w):
    """exact_conv2d runs on torch in the type accumulate_dtype picks (float32 when the bound < 2^24, else
    float64); worst-case operands (every product at the grid's extreme, same sign) give the int64 result."""
    from simulator.integer import accumulate_dtype, exact_conv2d

    x_max, w_max = 2 ** bits_x - 1, 2 ** bits_w - 1
    c = 24
    x = np.full((1, c, 6, 6), x_max, np.int64)
    w = np.full((3, c, 3, 3), w_max, np.int64)
    w[1] = -w_max
    dtype = accumulate_dtype(c * 9, x_max, w_max)
    bound = c * 9 * x_max * w_max
    assert dtype == (np.float32 if bound < 2 ** 24 else np.float64)
    got = exact_conv2d(x.astype(dtype), w.astype(dtype), (1, 1), (1, 1, 1, 1), (1, 1))
    assert got.dtype == dtype and float(np.abs(got).max()) == bound
    assert np.array_equal(got.astype(np.int64), _ref_conv(x, w, 1, 1, 1, 1))


@pytest.mark.parametrize("worst", [False, True])
def test_int8_dot_product_path_equals_int64(monkeypatch, worst):
    """int_conv2d / int8_matmul on the int8 engine: 8-bit codes minus zero points ([-255, 255]) split as
    2 * (v >> 1) + (v & 1) into int8 parts; int32 dot products, combined in int64, equal int64 arithmetic."""
    from simulator.integer import INT8_MAX_K, int8, int8_engine, int8_matmul, int8_parts

    monkeypatch.setattr(int8, "INT8_MIN_WORK", 0)  # small test convolutions take the int8 path too
    if not int8_engine():
        pytest.skip("no VNNI/AMX int8 dot products on this CPU: the float paths are used (tested above)")
    rng = np.random.default_rng(15 + worst)
    a = _codes(rng, (37, 700), -255, 255, worst)
    b = _codes(rng, (700, 19), -128, 127, worst)
    a[0], b[:, 0] = -255, -128
    pa, pb = int8_parts(a), int8_parts(b)
    assert len(pa) == 2 and len(pb) == 1 and a.shape[1] <= INT8_MAX_K
    assert np.array_equal(sum(f * p.astype(np.int64) for f, p in pa), a)
    assert np.array_equal(int8_matmul(pa, pb), a.astype(np.int64) @ b.astype(np.int64))
    x = _codes(rng, (2, 5, 7, 6), -255, 255, worst)
    w = _codes(rng, (4, 5, 3, 3), -255, 255, worst)
    for stride, pad, dil in [(1, 1, 1), (2, 0, 1), (1, 2, 2)]:
        got = int_conv2d(x, w, 255, 255, (stride, stride), (pad,) * 4, (dil, dil))
        assert got.dtype.kind == "i"
        assert np.array_equal(got, _ref_conv(x, w, stride, pad, dil, 1))


@pytest.mark.parametrize("int8", [False, True])
def test_pixel_group_conv_with_stride_and_dilation_equals_masked_convolutions(monkeypatch, int8):
    """Both engines of the pixel-group convolution (float scatter-add, int8 products) against masked convolutions."""
    from simulator.integer import int8 as int8_engine_module

    monkeypatch.setattr(int8_engine_module, "INT8_MIN_WORK", 0 if int8 else 1 << 62)
    rng = np.random.default_rng(13)
    x = rng.integers(-255, 256, (2, 3, 9, 8))
    w = rng.integers(-255, 256, (4, 3, 3, 3))
    gid = rng.integers(0, 4, (9, 8))
    for stride, dil in [(2, 1), (1, 2)]:
        acc = int_conv2d_pixel_groups(x, w, gid, 4, 255, 255, (stride, stride), (1, 1, 1, 1), (dil, dil))
        for g in range(4):
            masked = np.where(gid[None, None] == g, x, 0)
            assert np.array_equal(acc[g].astype(np.int64), _ref_conv(masked, w, stride, 1, dil, 1))


def test_reduced_precision_torch_matmul_is_refused():
    """A bf16/tf32 float32 matmul would not be exact: the integer kernels refuse to run under it."""
    import torch

    from simulator.errors import SimulatorError
    from simulator.integer import exact_matmul

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with pytest.raises(SimulatorError, match="precision"):
            exact_matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))
    finally:
        torch.set_float32_matmul_precision(before)


def test_blocked_softmax_equals_whole_tensor_softmax():
    """Softmax over attention maps runs a block of rows at a time; rows are independent, so the bits match."""
    from simulator.ops import softmax as softmax_op

    rng = np.random.default_rng(14)
    x = (rng.standard_normal((6, 300, 700)) * 20).astype(np.float32)
    assert x.nbytes > 4 * softmax_op.ROWS_BYTES
    np.testing.assert_array_equal(softmax_op.softmax(x, -1), softmax_op._softmax(x, -1))


@pytest.mark.parametrize("axis", ["channel", "token"])
def test_linear_on_int8_engine_equals_float_schedule_and_int64(monkeypatch, axis):
    """A Linear with a long reduction runs on int8 dot products when available; the result is bit-identical
    to the float32/float64 schedule (the same exact accumulators) and each accumulator equals int64."""
    import simulator.qmatmul as qm

    rng = np.random.default_rng(16)
    k, groups = 200, 4
    if axis == "channel":
        gid = rng.integers(0, groups, k)
        sa = rng.uniform(0.01, 0.1, groups).astype(np.float32)[gid].reshape(1, 1, k)
        za = rng.integers(0, 256, groups)[gid].reshape(1, 1, k)
    else:
        sa = rng.uniform(0.01, 0.1, (1, 30, 1)).astype(np.float32)
        za = rng.integers(0, 256, (1, 30, 1))
    qa = _codes(rng, (2, 30, k), 0, 255, worst=True).astype(np.uint8)
    qb = rng.integers(-128, 128, (k, 9)).astype(np.int8)
    sb, zb = rng.uniform(0.001, 0.01, (1, 9)).astype(np.float32), rng.integers(-3, 4, (1, 9))
    a, b = _qt(qa, sa, za, 0, 255), _qt(qb, sb, zb, -128, 127)
    seen = []
    y, _ = quantized_matmul(a, b, lambda acc, log=False, bound=None: seen.append(acc.astype(np.int64)) or acc, Epilogue("float32"))
    monkeypatch.setattr(qm, "INT8_MIN_K", 1 << 30)                  # force the float schedule
    y_float, _ = quantized_matmul(a, b, lambda acc, log=False, bound=None: acc, Epilogue("float32"))
    np.testing.assert_array_equal(y, y_float)
    centred_a, centred_b = qa.astype(np.int64) - za, qb.astype(np.int64) - zb
    if axis == "token":
        assert len(seen) == 1 and np.array_equal(seen[0], centred_a @ centred_b)
    else:
        refs = [centred_a[..., gid == g] @ centred_b[gid == g] for g in range(groups)]
        assert len(seen) == groups and all(any(np.array_equal(s, r) for r in refs) for s in seen)


@pytest.mark.parametrize("worst", [False, True])
@pytest.mark.parametrize("stride, pad, dil", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_channel_groups_in_one_grouped_conv_equal_per_group_int64(worst, stride, pad, dil):
    """Uneven channel groups (one of a single channel), zero-padded side by side: each
    output block is exactly the int64 convolution of that group's channels."""
    from simulator.integer import int_conv2d_channel_groups

    rng = np.random.default_rng(11)
    gid = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 3, 1, 1])             # group 3: one channel
    x = _codes(rng, (2, len(gid), 7, 6), -255, 255, worst)
    w = _codes(rng, (5, len(gid), 3, 3), -128, 127, worst)
    acc = int_conv2d_channel_groups(x, w, gid, 4, 255, 128, (stride, stride), (pad,) * 4, (dil, dil))
    for g in range(4):
        ref = _ref_conv(x[:, gid == g], w[:, gid == g], stride, pad, dil, 1)
        assert np.array_equal(acc[g].astype(np.int64), ref)
    wrong = _ref_conv(x[:, gid == 0], w[:, gid == 0], stride, pad, dil, 1)
    assert not np.array_equal(acc[1].astype(np.int64), wrong)  # the blocks are not interchangeable


def test_conv_channel_groups_one_grouped_conv_or_one_per_group_give_the_same_bits(monkeypatch):
    """quantized_conv with channel groups: the grouped-conv schedule and the conv-per-group schedule agree bit for bit."""
    from simulator import qconv

    rng = np.random.default_rng(12)
    c, co = 24, 8
    gid = rng.permutation(np.arange(c) % 5)
    gscale, gzp = np.array([0.01, 0.02, 0.04, 0.07, 0.3], np.float32), np.array([0, 17, 128, 200, 255])
    xq = _qt(rng.integers(0, 256, (2, c, 9, 9)).astype(np.uint8), gscale[gid].reshape(1, c, 1, 1),
             gzp[gid].reshape(1, c, 1, 1), 0, 255)
    wq = _qt(rng.integers(-8, 8, (co, c, 3, 3)).astype(np.int8), rng.uniform(0.01, 0.1, (co, 1, 1, 1)), 0, -8, 7)
    calls = []

    def run():
        return qconv.quantized_conv(xq, wq, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                                    lambda acc, log=False, bound=None: calls.append(acc.shape) or acc,
                                    Epilogue("float32"))
    grouped, n = run()
    assert n == 5 and len(calls) == 5
    monkeypatch.setattr(qconv, "GROUPED_CONV_MAX_WORK", 0)   # one convolution per group
    per_group, _ = run()
    assert np.array_equal(grouped, per_group)
    reference = sum(_ref_conv(xq.integers()[:, gid == g], wq.integers()[:, gid == g], 1, 1, 1, 1).astype(np.float32)
                    * (gscale[g] * wq.scale.reshape(1, co, 1, 1)) for g in range(5))
    np.testing.assert_allclose(grouped, reference, rtol=1e-5, atol=1e-4)
