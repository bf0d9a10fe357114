"""Benchmark: onnxruntime's per-axis QuantizeLinear against equivalent standard forms, on DGQ's activation shapes.

Why: in a DGQ W8A8 G8 QDQ graph of the embedded model at the quality stage's batch (128 x latent 16), profiling
puts 47.6% of the UNet call in QuantizeLinear: every channel- or pixel-group quantizer is a per-axis
QuantizeLinear, and onnxruntime's CPU kernel for that is far slower than its per-tensor one. This measures, on
the same tensor and scales, Q -> DQ pairs spelled as:
- per-axis   QuantizeLinear(axis) -> DequantizeLinear(axis)           (passes/qdq.py's form)
- blocked    the scale expanded to [B, 1, C] and QuantizeLinear(axis=1, block_size=N) (opset 21), same DQ
             (compiled QDQ graphs use this form for last-axis quantizers: passes/block_axis_quantizers.py;
             benchmarks/qdq_graph_speed.py times it on the whole UNet)
- per-tensor one scale (the speed floor; not the same numbers)
and checks that the blocked codes equal the per-axis ones bit for bit in onnxruntime and in onnx.reference
(whose blocked kernel repeats each scale `block_size` times: a block size far above the real extent costs
memory there, so a graph would have to pick it from the run-time shape).

    python benchmarks/ort_axis_quantize.py [--runs 5] [--batch 128] [--tokens 256] [--channels 64]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

OPSET, IR_VERSION = 21, 10


def pair_model(batch: int, tokens: int, channels: int, form: str, scale: np.ndarray, zero: np.ndarray):
    """x [B, N, C] -> Q -> DQ -> y, with per-channel (scale, zero) spelled as `form`."""
    from onnx import TensorProto, helper, numpy_helper

    if form == "per-axis":
        attrs, s, z = {"axis": 2}, scale, zero
    elif form == "blocked":
        attrs = {"axis": 1, "block_size": tokens}
        s = np.broadcast_to(scale, (batch, 1, channels)).copy()
        z = np.broadcast_to(zero, (batch, 1, channels)).copy()
    elif form == "per-tensor":
        attrs, s, z = {}, np.float32(scale.mean()), np.uint8(128)
    else:
        raise ValueError(form)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, tokens, channels])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(s), "s"), numpy_helper.from_array(np.asarray(z), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def main(argv=None) -> int:
    from onnx.reference import ReferenceEvaluator

    from dgq_compiler import runtime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.batch, args.tokens, args.channels)) * 3).astype(np.float32)
    x[0, 0, :4] = [0.5 * 0.02, 1.5 * 0.02, -2.5 * 0.02, 1e3]  # ties (half-even) and saturation
    scale = (rng.random(args.channels) * 0.03 + 0.005).astype(np.float32)
    scale[:4] = 0.02
    zero = rng.integers(100, 156, args.channels).astype(np.uint8)

    outputs, rows = {}, []
    for form in ("per-axis", "blocked", "per-tensor"):
        model = pair_model(args.batch, args.tokens, args.channels, form, scale, zero)
        session = runtime.session(model.SerializeToString(), "default", threads=2)
        outputs[form] = session.run(None, {"x": x})[0]
        times = runtime.timed_runs(session, {"x": x}, args.runs)
        rows.append((form, statistics.median(times)))
    same_ort = np.array_equal(outputs["per-axis"], outputs["blocked"])
    reference = ReferenceEvaluator(pair_model(args.batch, args.tokens, args.channels, "blocked", scale, zero))
    same_reference = np.array_equal(reference.run(None, {"x": x})[0], outputs["per-axis"])

    floor = dict(rows)["per-tensor"]
    print(f"Q -> DQ of x [{args.batch}, {args.tokens}, {args.channels}] float32, per-channel scales, "
          f"default onnxruntime session, 2 threads, median of {args.runs}")
    print(f"{'form':<12} {'ms':>9} {'x per-tensor':>13}")
    for form, seconds in rows:
        print(f"{form:<12} {seconds * 1e3:9.2f} {seconds / floor:13.1f}")
    print(f"blocked = per-axis, bit for bit: onnxruntime {same_ort}, onnx.reference {same_reference}")
    return 0 if same_ort and same_reference else 1


if __name__ == "__main__":
    sys.exit(main())
