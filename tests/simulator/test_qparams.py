"""simulator/ops/_qparams.broadcast_param on blocked parameters (ONNX opset 21): element i along the axis reads
block i // block_size, the last block may be partial; parameters constant along an axis come back collapsed
there (a per-index vector broadcast to the blocked form reads as the per-axis [1, 1, L], the shape the integer
kernels take scale structure from); shapes that do not fit are refused."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.errors import SimulatorError
from simulator.ops._qparams import broadcast_param


def _explicit(p, x_shape, axis, block):
    out = np.empty(x_shape, p.dtype)
    for index in np.ndindex(*x_shape):
        src = list(index)
        src[axis] //= block
        out[index] = p[tuple(src)]
    return out


@pytest.mark.parametrize("x_shape,axis,block", [((2, 7, 5), 1, 3), ((2, 7, 5), -2, 4), ((3, 6), 0, 2),
                                               ((2, 3, 4, 5), 2, 64)])
def test_blocked_parameters_repeat_each_block_and_cut_the_last(x_shape, axis, block):
    rng = np.random.default_rng(len(x_shape) + block)
    shape = list(x_shape)
    shape[axis] = -(-x_shape[axis] // block)
    p = rng.integers(0, 255, shape).astype(np.uint8)
    got = broadcast_param(p, x_shape, axis, block)
    np.testing.assert_array_equal(np.broadcast_to(got, x_shape), _explicit(p, x_shape, axis % len(x_shape), block))


def test_a_vector_broadcast_to_the_blocked_form_reads_as_the_per_axis_vector():
    x_shape = (4, 130, 6)  # K = 130 tokens: 3 blocks of 64, the last partial
    vector = np.array([0.5, 0.25, 0.125, 1.0, 2.0, 0.75], np.float32)
    blocked = np.broadcast_to(vector, (4, 3, 6)).copy()
    got = broadcast_param(blocked, x_shape, -2, 64)
    per_axis = broadcast_param(vector, x_shape, 2)
    assert got.shape == per_axis.shape == (1, 1, 6)
    np.testing.assert_array_equal(got, per_axis)
    # varying along the blocked axis: not collapsed there, repeated to the input's extent
    blocked[:, 1] *= 2
    varying = broadcast_param(blocked, x_shape, -2, 64)
    assert varying.shape == (1, 130, 6)
    np.testing.assert_array_equal(varying[0, 64:128], np.broadcast_to(vector * 2, (64, 6)))


@pytest.mark.parametrize("shape", [(4, 2, 6), (4, 3), (1, 3, 6)])
def test_blocked_parameters_of_the_wrong_shape_are_refused(shape):
    with pytest.raises(SimulatorError, match="blocked parameter of shape"):
        broadcast_param(np.ones(shape, np.float32), (4, 130, 6), 1, 64)
