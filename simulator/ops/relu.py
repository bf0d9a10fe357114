"""Relu."""
import numpy as np

from simulator.ops._common import unary

run = unary(lambda x: np.maximum(x, 0))
