"""Benchmark: the log2 attention quantizer of a lowered graph, as the QuantizeLog -> DequantizeLog pair of the QDQ
graph and as the fused QuantizeDequantizeLog (passes/fuse_log_quantizers.py), on SD v1.4's largest attention map at
256 px: probabilities [16, 1024, 1024] (batch 2 x 8 heads), each sample's maximum as the scale. Default onnxruntime
sessions, 2 threads, the two graphs timed in alternation (a busy machine slows both alike). Checks that both give
the same values bit for bit on these probabilities first. Cheap (seconds, < 1 GB).

    python benchmarks/deploy_log_quantizer.py [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

SHAPE = (16, 1024, 1024)


def models():
    """(pair, fused): x [16, N, N] float, s [16, 1, 1] -> y, as the compiled and the lowered graph spell it."""
    from onnx import TensorProto, helper

    from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG
    from passes.log_functions import FUSED_LOG_OPSET, log_functions, quantize_dequantize_log_function

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE)),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, [SHAPE[0], 1, 1])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))]

    def model(nodes, opset, functions):
        graph = helper.make_graph(nodes, "log2", inputs, outputs)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                       helper.make_opsetid(LOG_DOMAIN, 1)],
                                 ir_version=10 if opset <= 21 else 13, functions=functions)

    pair = model([helper.make_node(QUANTIZE_LOG, ["x", "s"], ["q"], domain=LOG_DOMAIN, bits=8),
                  helper.make_node(DEQUANTIZE_LOG, ["q", "s"], ["y"], domain=LOG_DOMAIN)], 21, log_functions())
    fused = model([helper.make_node(QUANTIZE_DEQUANTIZE_LOG, ["x", "s"], ["y"], domain=LOG_DOMAIN, bits=8)],
                  FUSED_LOG_OPSET, [quantize_dequantize_log_function()])
    return pair, fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per graph (median; after one warm-up)")
    args = parser.parse_args()
    from dgq_compiler import runtime

    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 2.0, SHAPE).astype(np.float32)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    feed = {"x": probs, "s": probs.reshape(SHAPE[0], -1).max(axis=1).reshape(-1, 1, 1)}
    sessions = {name: runtime.session(m, "default", threads=2, log_severity=3)
                for name, m in zip(("pair (QuantizeLog -> DequantizeLog)", "fused (QuantizeDequantizeLog)"), models())}
    outs = [s.run(None, feed)[0] for s in sessions.values()]
    same = np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    times = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, s in sessions.items():
            times[name] += runtime.timed_runs(s, feed, 1)
    print(f"log2 quantize -> dequantize of [{', '.join(map(str, SHAPE))}] float32, default sessions, 2 threads, "
          f"median of {args.runs}; outputs equal bit for bit: {'yes' if same else 'NO'}")
    base = statistics.median(next(iter(times.values())))
    for name, t in times.items():
        print(f"  {name:<40}{statistics.median(t) * 1e3:>9.1f} ms{statistics.median(t) / base:>7.2f}x")


if __name__ == "__main__":
    main()
