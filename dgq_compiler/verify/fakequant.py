"""Verification against the torch fake-quant reference (the calibration stage's arithmetic), run by compile.

- `point_errors`: every quantization point, teacher-forced: the graph's dequantized tensor vs the torch
  fake-quant functions on the graph's own input with the recipe's parameters of the step. Both are float32;
  they may differ only where x / s lands within float error of a rounding boundary: at most DEFAULT_TOLERANCE
  of the elements, by at most MAX_LSB.
- `reference_errors`: the UNet output vs the torch UNet with the recipe applied (end to end; one boundary flip
  early in the UNet propagates, so this is informational).
"""
from __future__ import annotations

from pathlib import Path

from dgq_compiler import runtime
from dgq_compiler.errors import DgqError

DEFAULT_TOLERANCE = 1e-4
MAX_LSB = 1.0


def reference_errors(compiled: Path, model, recipe, unet, batch: int = 2, seed: int = 0) -> dict:
    """Max |onnxruntime - torch fake-quant| / max(1, max|ref|) of the UNet output at every calibrated timestep."""
    import numpy as np
    import torch

    from dgq_compiler.fakequant import apply_recipe  # the calibration stage's torch reference

    session = runtime.session(compiled, "reference")
    errors = {}
    unet = unet.float().eval()
    with apply_recipe(unet, recipe), torch.no_grad():
        for k, t in enumerate(recipe.timesteps):
            feed = runtime.example_feeds(model, recipe.resolution, batch, seed + k, float(t))
            kwargs = {"encoder_hidden_states": torch.from_numpy(feed["encoder_hidden_states"])}
            if "text_embeds" in feed:
                kwargs["added_cond_kwargs"] = {"text_embeds": torch.from_numpy(feed["text_embeds"]),
                                               "time_ids": torch.from_numpy(feed["time_ids"])}
            ref = unet(torch.from_numpy(feed["sample"]), torch.from_numpy(feed["timestep"]), **kwargs,
                       return_dict=False)[0].numpy()
            got = session.run(None, feed)[0]
            errors[str(t)] = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
    return errors


def point_errors(compiled: Path, recipe, batch: int = 2, seed: int = 0) -> dict:
    """Every quantization point, teacher-forced: the graph's dequantized tensor vs the torch fake-quant functions
    applied to the graph's own input with the recipe's parameters of the step. Per timestep: the fraction of
    mismatching elements and the largest difference in LSBs (uniform) or codes (log2), over all points."""
    import numpy as np
    import onnx
    import torch

    from dgq_compiler.fakequant import quantize_log2, quantize_uniform
    from passes.contract import (QuantizerRecord, dequantizer_name, is_compiler_node, is_quantizer_node, per_index_param,
                                 quantized_axis)
    from passes.graph_query import GraphIndex, attribute
    from passes.qdq import code_type

    model = onnx.load(str(compiled), load_external_data=False)
    index = GraphIndex(model.graph)
    points = []
    for node in model.graph.node:
        record = QuantizerRecord.from_node(node) if is_quantizer_node(node) and is_compiler_node(node.name) else None
        if record is None:
            continue
        dq_node = index.node(dequantizer_name(node.name, node.op_type))
        inputs = list(node.input)  # a blocked quantizer's parameters: the per-index vectors behind its Expand nodes
        inputs[1:3] = [per_index_param(index.producer, t) for t in inputs[1:3]]
        axis = quantized_axis(node) if attribute(node, "axis") is not None or attribute(node, "block_size") else None
        points.append((record, inputs, dq_node.output[0], axis))
    wanted = sorted({t for _r, inputs, out, _a in points for t in inputs + [out]})
    signed = {inputs[2] for record, inputs, _o, _a in points  # zero points of int8 (signed symmetric) storage
              if record.quantizer == "uniform" and code_type(recipe.tensors[(record.module, record.role)]) is np.int8}
    elem = {}
    for name in wanted:
        producer = index.producer.get(name)
        codes = onnx.TensorProto.INT8 if name in signed else onnx.TensorProto.UINT8
        elem[name] = codes if producer is not None and is_quantizer_node(producer) else (
            codes if "zero_point" in name else onnx.TensorProto.FLOAT)
    model = runtime.with_outputs(model, {n: elem[n] for n in wanted})
    session = runtime.session(model, "reference", base_dir=compiled.parent)
    results = {}
    for k, t in enumerate(recipe.timesteps):
        step = recipe.step_index(t)
        feed = runtime.example_feeds(model, recipe.resolution, batch, seed + k, float(t))
        values = runtime.run_all(session, feed)
        bad = total = 0
        worst = 0.0
        for record, inputs, out, axis in points:
            tq = recipe.tensors[(record.module, record.role)]
            x = torch.from_numpy(values[inputs[0]])
            got = values[out]
            if tq.quantizer == "log2":
                peak = values[inputs[1]]
                ref = quantize_log2(x, torch.tensor(peak), tq.bits).numpy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    lsb = np.abs(np.log2(np.where(ref > 0, got / ref, 1.0)))
            else:
                scale, zero = values[inputs[1]], values[inputs[2]].astype(np.float32)
                if code_type(tq) is np.int8:  # signed symmetric storage: the recipe's zero point 128, shifted
                    zero = zero + 128
                expected = tq.scale[step] if tq.group_map is None else \
                    tq.scale[step][tq.group_map[0 if tq.group_map.shape[0] == 1 else step]]
                if not np.array_equal(np.ravel(scale), np.ravel(expected).astype(np.float32)):
                    raise DgqError(f"{record.module}/{record.role}: the graph's scales at step {step} "
                                   "differ from the recipe's")
                shape = [1] * x.ndim
                if axis is not None:
                    shape[axis] = -1
                s_t, z_t = torch.from_numpy(scale.reshape(shape)), torch.from_numpy(zero.reshape(shape))
                ref = quantize_uniform(x, s_t, z_t, tq.bits).numpy()
                lsb = np.abs(got - ref) / scale.reshape(shape)
            bad += int(np.count_nonzero(lsb > 0.5))
            total += lsb.size
            worst = max(worst, float(np.nanmax(lsb)) if lsb.size else 0.0)
        results[str(t)] = {"mismatch_rate": bad / max(total, 1), "max_lsb": round(worst, 3)}
    return results
