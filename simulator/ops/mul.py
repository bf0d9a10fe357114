"""Mul."""
import numpy as np

from simulator.ops._common import binary

run = binary(np.multiply)
