"""Less."""
import numpy as np

from simulator.ops._common import compare

run = compare(np.less)
