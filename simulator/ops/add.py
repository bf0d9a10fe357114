"""Add (float32/int arithmetic in the input dtype)."""
import numpy as np

from simulator.ops._common import binary

run = binary(np.add)
