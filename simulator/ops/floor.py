"""Floor (elementwise, in the input dtype)."""
import numpy as np

from simulator.ops._common import unary

run = unary(np.floor)
