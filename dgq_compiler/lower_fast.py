"""The fast variant's two measurements (`dgq compile --target onnxruntime-cpu-fast`), on the exact lowering:
the output range of every per-tensor Conv/MatMul at every calibrated step (its QLinear output grid), and the
fast graph's extra error against the exact lowering on the same inputs.

Ranges come from random inputs (the compile's example feeds), like the compile's other checks: a deployment
should calibrate them on real latents; the extra error printed says what the requantization costs here.
"""
from __future__ import annotations

import json

import numpy as np


def output_ranges(model, recipe, lowering_json: str, batch: int = 1, seed: int = 0, base_dir=None) -> dict:
    """module -> [T, 2] (min, max) of the op's output at each calibrated step, for per-tensor Convs/MatMuls.
    `base_dir`: the folder of the weights file the model's unchanged (FP) initializers still point into."""
    import onnx

    from dgq_compiler import runtime

    rows = [r for r in json.loads(lowering_json) if r["axis"] == "tensor" and r["op"] in ("Conv", "MatMul")]
    if not rows:
        return {}
    probe = runtime.with_outputs(model, {r["output"]: onnx.TensorProto.FLOAT for r in rows})
    session = runtime.session(probe, "default", base_dir=base_dir)
    ranges = {r["module"]: np.zeros((len(recipe.timesteps), 2), np.float32) for r in rows}
    for k, t in enumerate(recipe.timesteps):
        values = runtime.run_all(session, runtime.example_feeds(model, recipe.resolution, batch, seed + k, float(t)))
        for r in rows:
            v = values[r["output"]]
            ranges[r["module"]][k] = (float(v.min()), float(v.max()))
    return ranges


def extra_error(exact_model, fast_model, recipe, batch: int = 2, seed: int = 100, base_dir=None) -> dict:
    """timestep -> max |fast - exact| / max |exact| of the UNet output (first, middle and last calibrated step),
    on inputs other than the calibration ones."""
    from dgq_compiler import runtime

    exact = runtime.session(exact_model, "default", base_dir=base_dir)
    fast = runtime.session(fast_model, "default", base_dir=base_dir)
    steps = sorted({0, len(recipe.timesteps) // 2, len(recipe.timesteps) - 1})
    errors = {}
    for k in steps:
        t = recipe.timesteps[k]
        feed = runtime.example_feeds(exact_model, recipe.resolution, batch, seed + k, float(t))
        a, b = exact.run(None, feed)[0], fast.run(None, feed)[0]
        errors[str(t)] = float(np.max(np.abs(b - a)) / max(float(np.max(np.abs(a))), 1e-12))
    return errors
