"""Range(start, limit, delta): ceil((limit - start) / delta) values, in the inputs' type (integers stay exact)."""
import numpy as np


def run(ctx):
    start, limit, delta = (np.asarray(ctx.value(i)).reshape(()) for i in range(3))
    dtype = start.dtype
    if np.issubdtype(dtype, np.integer):  # exact integer count: ceil division without floats
        n = max(0, -(-(int(limit) - int(start)) // int(delta)))
        return [(int(start) + int(delta) * np.arange(n, dtype=np.int64)).astype(dtype)]
    n = max(0, int(np.ceil((float(limit) - float(start)) / float(delta))))
    return [(start + delta * np.arange(n, dtype=dtype)).astype(dtype)]
