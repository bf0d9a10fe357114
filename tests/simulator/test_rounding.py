"""Named rounding modes: integer right shifts and float rounding against exact rational arithmetic."""
from fractions import Fraction
import math

import numpy as np
import pytest

from simulator.rounding import RoundingMode, round_float, shift_right


def _exact(x: Fraction, mode: RoundingMode) -> int:
    fl = math.floor(x)
    frac = x - fl
    if mode is RoundingMode.FLOOR:
        return fl
    if mode is RoundingMode.CEIL:
        return math.ceil(x)
    if mode is RoundingMode.TRUNCATE:
        return int(x)
    if frac != Fraction(1, 2):
        return fl + (frac > Fraction(1, 2))
    return {RoundingMode.HALF_UP: fl + 1, RoundingMode.HALF_DOWN: fl,
            RoundingMode.HALF_AWAY: fl + 1 if x > 0 else fl,
            RoundingMode.HALF_EVEN: fl + (fl % 2)}[mode]


@pytest.mark.parametrize("mode", list(RoundingMode))
def test_shift_right_matches_exact_division(mode):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-2**40, 2**40, 400), np.array([-12, -10, -6, -2, 2, 6, 10, 12, 0, -1, 1])])
    for shift in (0, 1, 2, 3, 17):
        got = shift_right(x, shift, mode)
        want = [_exact(Fraction(int(v), 2 ** shift), mode) for v in x]
        assert got.tolist() == want


@pytest.mark.parametrize("mode", list(RoundingMode))
def test_round_float_matches_exact(mode):
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -2.4, 2.6, 3.0, -7.25], np.float32)
    want = [_exact(Fraction(float(v)), mode) for v in x]
    assert round_float(x, mode).astype(int).tolist() == want


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="HALF_SIDEWAYS"):
        RoundingMode.parse("HALF_SIDEWAYS")
