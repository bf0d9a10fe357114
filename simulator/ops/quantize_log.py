"""dgq.QuantizeLog(X, S) -> uint8 codes, computed as integer hardware does.

q = clamp(round(-log2(x / S)), 0, 2^bits - 1). With r = x / S = m * 2^E (m in [1, 2)):
round(-log2 r) = -E - [m > sqrt(2)] exactly (no tie is possible: sqrt(2) is irrational), so the
exponent and one mantissa comparison give the code; x == 0 gives the largest code.
S is a scalar or one scale per leading index (the dynamic scale: one per sample, repeated for its heads,
[B*heads, 1, 1]); each leading block is then coded with its own S.
"""
import numpy as np

# float32(1/sqrt 2) rounded down: for a float32 mantissa f in [0.5, 1), f > HALF_SQRT2 <=> 2f > sqrt(2) exactly
HALF_SQRT2 = np.float32(np.frombuffer(np.array([0x3F3504F3], np.uint32).tobytes(), np.float32)[0])
assert float(HALF_SQRT2) < np.sqrt(0.5) < float(np.nextafter(HALF_SQRT2, np.float32(1)))
CHUNK = 1 << 16  # elements per chunk: the temporaries stay in cache


def log_codes(x: np.ndarray, s, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """Codes of a whole tensor, a chunk at a time (attention probabilities can be ~10^8 elements)."""
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.uint8) if out is None else out.reshape(-1)
    top = (1 << bits) - 1
    s = np.float32(s)
    for start in range(0, flat.size, CHUNK):
        r = flat[start:start + CHUNK].astype(np.float32) / s
        mant, exp = np.frexp(r)                   # r = mant * 2^exp, mant in [0.5, 1)
        q = (1 - exp.astype(np.int32)) - (mant > HALF_SQRT2)   # -E - [m > sqrt 2] with E = exp - 1
        q = np.where(r > 0, q, top)               # zero (and negative) probabilities: the clamp
        out[start:start + CHUNK] = np.clip(q, 0, top)
    return out.reshape(x.shape)


def leading_blocks(s: np.ndarray, shape) -> int:
    """How many leading blocks a scale broadcastable to `shape` selects: s varies only along leading axes it
    shares with the tensor (then its size), 0 when it does not have that form."""
    s = np.asarray(s)
    if s.ndim > len(shape):
        return 0
    s_shape = (1,) * (len(shape) - s.ndim) + s.shape
    lead = 0
    while lead < len(shape) and s_shape[lead] == shape[lead]:
        lead += 1
    return int(s.size) if all(d == 1 for d in s_shape[lead:]) else 0


def run(ctx):
    return [codes_of(ctx)]


def codes_of(ctx) -> np.ndarray:
    """The codes of the node's input X with scale S (inputs 0 and 1) and its `bits` attribute."""
    x, s = ctx.value(0), np.asarray(ctx.value(1), dtype=np.float32)
    bits = int(ctx.attr("bits", 8))
    out = ctx.empty(x.shape, np.uint8)
    if s.size == 1:
        return log_codes(x, s.reshape(-1)[0], bits, out)
    blocks = leading_blocks(s, x.shape)
    if not blocks:
        raise ValueError(f"QuantizeLog scale of shape {list(s.shape)} is neither a scalar nor one per leading index "
                         f"of the input {list(x.shape)}")
    rows, flat_out, scales = x.reshape(blocks, -1), out.reshape(blocks, -1), s.reshape(-1)
    for i in range(blocks):
        log_codes(rows[i], scales[i], bits, flat_out[i])
    return out
