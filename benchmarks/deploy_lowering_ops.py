"""Benchmark: the integer lowering's formulations on single ops at SD v1.4 sizes (256 px: latent 32, batch 2),
each against the same op in fp32, in default onnxruntime sessions with 2 threads. Cheap (seconds, < 1 GB).

Per op: the exact lowering (`--target onnxruntime-cpu`) for per-tensor, channel-group (split-K, G = 8) and
pixel/token-group (G = 8) inputs, and the fast variant (QLinearConv/QLinearMatMul, per tensor) with its extra
error against the exact lowering (max |fast - exact| / max |exact|, output grid from the exact op's range).

    python benchmarks/deploy_lowering_ops.py [--runs 8]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

STEPS = (900, 500, 100)
OPS = (  # label, kind, (channels in, channels out, kernel, latent) or (tokens, in, out)
    ("conv 3x3, 320 ch, 32x32", "conv", (320, 320, 3, 32)),
    ("conv 3x3, 1280 ch, 8x8", "conv", (1280, 1280, 3, 8)),
    ("conv 1x1, 640 ch, 16x16", "conv", (640, 640, 1, 16)),
    ("linear 2x1024 tokens, 320 -> 1280", "linear", (1024, 320, 1280)),
    ("linear 2x1024 tokens, 1280 -> 320", "linear", (1024, 1280, 320)),
)


def op_model(kind, dims, rng):
    import onnx
    from onnx import helper, numpy_helper

    if kind == "conv":
        c, co, k, hw = dims
        w = (rng.standard_normal((co, c, k, k)) * 0.05).astype(np.float32)
        node = helper.make_node("Conv", ["sample", "w", "b"], ["out"], name="/unet/m/Conv", pads=[k // 2] * 4)
        bias = rng.standard_normal(co).astype(np.float32)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")]
        shape, out_shape, n_channel, n_pixel = [2, c, hw, hw], [2, co, hw, hw], c, hw * hw
    else:
        n, k, co = dims
        node = helper.make_node("MatMul", ["sample", "onnx::MatMul_1"], ["out"], name="/unet/m/MatMul")
        inits = [numpy_helper.from_array((rng.standard_normal((k, co)) * 0.05).astype(np.float32), "onnx::MatMul_1")]
        shape, out_shape, n_channel, n_pixel = [2, n, k], [2, n, co], k, n
    graph = helper.make_graph([node], "op", [helper.make_tensor_value_info("sample", 1, shape),
                                             helper.make_tensor_value_info("timestep", 1, [1])],
                              [helper.make_tensor_value_info("out", 1, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model)
    return model, shape, co, n_channel, n_pixel


def recipe(axis, n, c_out, rng):
    from dgq_compiler.config import QuantConfig
    from dgq_compiler.recipe import Recipe, TensorQuant

    g = 1 if axis == "tensor" else 8
    lo, hi = -rng.uniform(0.5, 3, (len(STEPS), g)), rng.uniform(0.5, 3, (len(STEPS), g))
    scale = (hi - lo) / 255
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    maps = None if g == 1 else np.stack([rng.permutation(np.arange(n) % g) for _ in STEPS])
    tensors = {("m", "input"): TensorQuant("m", "input", "uniform", 8, axis, scale, zero, maps),
               ("m", "weight"): TensorQuant("m", "weight", "uniform", 8, "out_channel",
                                            rng.uniform(0.001, 0.003, c_out), rng.integers(-8, 9, c_out))}
    return Recipe("bench", "0" * 64, QuantConfig(), STEPS, (1, 1), tensors)


def lowered(model, rec, ranges=None):
    import onnx_graphsurgeon as gs

    from passes.base import PassContext
    from passes.graph_io import export_model
    from passes.lower_pipeline import lowering_passes
    from passes.manager import run_passes
    from passes.module_map import build_module_map

    ctx = PassContext(rec, build_module_map(model))
    return export_model(run_passes(lowering_passes(ranges), gs.import_onnx(model), ctx), ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="timed runs per graph (median; after two warm-ups)")
    args = parser.parse_args()
    from dgq_compiler import runtime

    def timed(model, feed):
        session = runtime.session(model, "default", threads=2, log_severity=3)
        session.run(None, feed)
        session.run(None, feed)
        return statistics.median(runtime.timed_runs(session, feed, args.runs)), session

    rng = np.random.default_rng(0)
    print(f"{'op':<36}{'fp32 ms':>9}{'tensor':>8}{'channel':>9}{'pixel':>8}{'fast':>7}{'fast err':>10}")
    for label, kind, dims in OPS:
        model, shape, c_out, n_channel, n_pixel = op_model(kind, dims, rng)
        feed = {"sample": rng.standard_normal(shape).astype(np.float32), "timestep": np.array([500], np.float32)}
        fp, _ = timed(model, feed)
        ratios = {}
        for axis in ("tensor", "channel", "pixel"):
            rec = recipe(axis, n_channel if axis == "channel" else n_pixel, c_out, rng)
            t, session = timed(lowered(model, rec), feed)
            ratios[axis] = t / fp
            if axis == "tensor":
                exact_rec, exact_session = rec, session
        outs = [exact_session.run(None, {**feed, "timestep": np.array([t], np.float32)})[0] for t in STEPS]
        ranges = {"m": np.array([[o.min(), o.max()] for o in outs], np.float32)}
        t_fast, fast_session = timed(lowered(model, exact_rec, ranges), feed)
        exact_out, fast_out = exact_session.run(None, feed)[0], fast_session.run(None, feed)[0]
        err = float(np.abs(fast_out - exact_out).max() / np.abs(exact_out).max())
        print(f"{label:<36}{fp * 1e3:>9.1f}{ratios['tensor']:>7.2f}x{ratios['channel']:>8.2f}x{ratios['pixel']:>7.2f}x"
              f"{t_fast / fp:>6.2f}x{err:>10.2g}", flush=True)
    print("ratios: lowered step time / fp32 step time of the same op (exact lowering unless 'fast'); "
          "G = 8 groups, per-step group maps")


if __name__ == "__main__":
    main()
