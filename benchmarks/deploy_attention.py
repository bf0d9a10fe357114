"""Benchmark: attention blocks of the integer-lowered graph (`dgq compile --target onnxruntime-cpu`) against fp32, at
SD v1.4's 256 px sizes, in default onnxruntime sessions with 2 threads. Cheap (seconds, < 1 GB).

A self-attention (2 x 1024 tokens, 320 channels, 8 heads) and a cross-attention (keys/values from 2 x 77 text tokens
of 768 channels) as the export writes them (MatMul -> Softmax -> MatMul), quantized as DGQ does: q, k, v with 8
channel groups (per-step group maps), log2 attention probabilities with each sample's maximum as the scale, the
<start> token in floating point in the cross-attention. The projections stay fp32, so the figures are the
attention's own quantization cost. Prints the step time of each block, fp32 and lowered, and the lowered graph's
time per node kind.

    python benchmarks/deploy_attention.py [--runs 8]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

STEPS = (900, 500, 100)
BLOCKS = (  # label, module, tokens, channels, heads, (text tokens, text channels) or None
    ("self-attention 2x1024 tokens, 320 ch, 8 heads", "attn1", 1024, 320, 8, None),
    ("cross-attention 2x1024 x 77 text tokens, 320 ch", "attn2", 1024, 320, 8, (77, 768)),
)


def block_model(module, tokens, dim, heads, text, rng):
    """x [2, N, C] (+ encoder_hidden_states) -> attention as diffusers' AttnProcessor exports it -> out [2, N, C]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    head = dim // heads
    p = f"/unet/{module}"
    n_kv, kv_dim, kv_src = (text[0], text[1], "encoder_hidden_states") if text else (tokens, dim, "x")
    inits = [numpy_helper.from_array(np.array(head ** -0.5, np.float32), "scale")]
    nodes = []
    for proj, src, d in (("to_q", "x", dim), ("to_k", kv_src, kv_dim), ("to_v", kv_src, kv_dim)):
        w = f"onnx::MatMul_{proj}"
        inits.append(numpy_helper.from_array((rng.standard_normal((d, dim)) * d ** -0.5).astype(np.float32), w))
        nodes.append(helper.make_node("MatMul", [src, w], [proj], name=f"{p}/{proj}/MatMul"))
    for role, n in (("to_q", tokens), ("to_k", n_kv), ("to_v", n_kv)):
        inits += [numpy_helper.from_array(np.array([2, n, heads, head], np.int64), f"{role}_split"),
                  numpy_helper.from_array(np.array([2 * heads, n, head], np.int64), f"{role}_merge")]
        nodes += [helper.make_node("Reshape", [role, f"{role}_split"], [f"{role}_4"], name=f"{p}/Reshape_{role}"),
                  helper.make_node("Transpose", [f"{role}_4"], [f"{role}_t"], name=f"{p}/Transpose_{role}",
                                   perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{role}_t", f"{role}_merge"], [f"{role}_h"], name=f"{p}/Reshape2_{role}")]
    inits += [numpy_helper.from_array(np.array([2, heads, tokens, head], np.int64), "out_split"),
              numpy_helper.from_array(np.array([2, tokens, dim], np.int64), "out_merge")]
    nodes += [helper.make_node("Transpose", ["to_k_h"], ["k_t"], name=f"{p}/Transpose_kT", perm=[0, 2, 1]),
              helper.make_node("MatMul", ["to_q_h", "k_t"], ["scores"], name=f"{p}/MatMul"),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"], name=f"{p}/Mul"),
              helper.make_node("Softmax", ["scaled"], ["probs"], name=f"{p}/Softmax", axis=-1),
              helper.make_node("MatMul", ["probs", "to_v_h"], ["o"], name=f"{p}/MatMul_1"),
              helper.make_node("Reshape", ["o", "out_split"], ["o4"], name=f"{p}/Reshape_o"),
              helper.make_node("Transpose", ["o4"], ["ot"], name=f"{p}/Transpose_o", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "out_merge"], ["out"], name=f"{p}/Reshape_om")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, tokens, dim]),
              helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1])]
    if text:
        inputs.append(helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [2, *text]))
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, tokens, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def block_recipe(module, dim, text, rng):
    from dgq_compiler.config import QuantConfig
    from dgq_compiler.recipe import Recipe, TensorQuant

    tensors = {}
    for role in ("q", "k", "v"):
        lo, hi = -rng.uniform(0.5, 3, (len(STEPS), 8)), rng.uniform(0.5, 3, (len(STEPS), 8))
        scale = (hi - lo) / 255
        maps = np.stack([rng.permutation(np.arange(dim) % 8) for _ in STEPS])
        tensors[(module, role)] = TensorQuant(module, role, "uniform", 8, "channel", scale,
                                              np.clip(np.rint(-lo / scale), 0, 255), maps,
                                              exclude_bos=bool(text) and role != "q")
    tensors[(module, "attn_probs")] = TensorQuant(module, "attn_probs", "log2", 8, "tensor",
                                                  np.ones((len(STEPS), 1)), np.zeros((len(STEPS), 1)), None,
                                                  dynamic=True, exclude_bos=bool(text))
    return Recipe("bench", "0" * 64, QuantConfig(), STEPS, (32, 32), tensors)


def lowered(model, rec):
    import onnx_graphsurgeon as gs

    from passes.base import PassContext
    from passes.graph_io import export_model
    from passes.lower_pipeline import lowering_passes
    from passes.manager import run_passes
    from passes.module_map import build_module_map

    ctx = PassContext(rec, build_module_map(model))
    return export_model(run_passes(lowering_passes(), gs.import_onnx(model), ctx), ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="timed runs per graph (median; after two warm-ups)")
    args = parser.parse_args()
    from dgq_compiler import runtime

    def timed(model, feed, profile_dir=None):
        session = runtime.session(model, "default", threads=2, log_severity=3)
        session.run(None, feed)
        session.run(None, feed)
        times = runtime.timed_runs(session, feed, args.runs)
        kinds = {}
        if profile_dir:
            profiled = runtime.session(model, "default", threads=2, log_severity=3,
                                       profile_prefix=str(Path(profile_dir) / "attention"))
            profiled.run(None, feed)   # warm-up (arena growth) and one run: both profiled
            profiled.run(None, feed)
            kinds, _runs = runtime.kernel_time_by_op(profiled.end_profiling())
        return statistics.median(times), kinds

    rng = np.random.default_rng(0)
    print(f"{'block':<50}{'fp32 ms':>9}{'lowered ms':>12}{'x fp32':>8}")
    profiles = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, module, tokens, dim, heads, text in BLOCKS:
            model = block_model(module, tokens, dim, heads, text, rng)
            feed = {"x": rng.standard_normal((2, tokens, dim)).astype(np.float32),
                    "timestep": np.array([500], np.float32)}
            if text:
                feed["encoder_hidden_states"] = rng.standard_normal((2, *text)).astype(np.float32)
            fp, _ = timed(model, feed)
            low, kinds = timed(lowered(model, block_recipe(module, dim, text, rng)), feed, tmp)
            profiles[label] = kinds
            print(f"{label:<50}{fp * 1e3:>9.1f}{low * 1e3:>12.1f}{low / fp:>7.2f}x", flush=True)
    for label, kinds in profiles.items():
        total = sum(kinds.values()) or 1
        print(f"\n{label}, lowered: share of node time by kind (a warm-up and one run, profiled)")
        for op, dur in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {op:<26}{dur / total:>7.1%}{dur / 1e3:>9.1f} ms")


if __name__ == "__main__":
    main()
