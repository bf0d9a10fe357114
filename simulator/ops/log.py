"""Log (natural logarithm, in the input dtype; log(0) = -inf as in IEEE)."""
import numpy as np

from simulator.ops._common import unary


def _log(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


run = unary(_log)
