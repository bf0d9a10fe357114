"""simulator.shapes: the fast shape helpers agree with numpy, including the errors."""
import numpy as np
import pytest

from simulator.shapes import broadcast_shape, numel


@pytest.mark.parametrize("a, b", [((), ()), ((3,), ()), ((), (2, 1)), ((2, 3), (2, 3)), ((2, 1, 4), (3, 1)),
                                  ((1,), (5, 4)), ((16, 256, 256), (1, 1, 256)), ((2, 0, 3), (1, 3)), ((4, 1), (0,))])
def test_broadcast_shape_equals_numpy(a, b):
    assert broadcast_shape(a, b) == np.broadcast_shapes(a, b) == broadcast_shape(b, a)


@pytest.mark.parametrize("a, b", [((2, 3), (3, 2)), ((4,), (5,)), ((2, 0), (3,))])
def test_broadcast_shape_refuses_what_numpy_refuses(a, b):
    with pytest.raises(ValueError):
        np.broadcast_shapes(a, b)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        broadcast_shape(a, b)


def test_numel():
    assert numel(()) == 1 and numel((2, 3, 4)) == 24 and numel((5, 0)) == 0 and numel(np.array([2, 2])) == 4
