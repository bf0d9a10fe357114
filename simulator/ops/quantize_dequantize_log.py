"""dgq.QuantizeDequantizeLog(X, S) -> S * 2^-q: a lowered graph's fused log2 quantizer, run as its two halves
(simulator/ops/quantize_log.py codes, then simulator/ops/dequantize_log.py), so the output carries the codes and the
A.V product downstream runs as shift-and-add exactly as after a QuantizeLog -> DequantizeLog pair."""
from simulator.ops import dequantize_log, quantize_log


def run(ctx):
    return [dequantize_log.dequantized(ctx, quantize_log.codes_of(ctx), ctx.value(1))]
