"""Give a traced, valueless graph its initializers, one tensor at a time.

Over 2 GB (or when asked) every initializer of 1 KiB or more goes into one external-data file, each
page-aligned so runtimes can memory-map it; smaller ones stay inline. Under 2 GB everything is inline,
as the exporter itself writes it. Memory holds one tensor (plus, inline, the graph being written).
"""
from __future__ import annotations

from pathlib import Path

INLINE_BELOW = 1024  # bytes: tiny tensors (biases of small layers, norm scales) are not worth a file seek
PAGE = 4096


def _tensor_bytes(source, binding, dtype) -> bytes:
    tensor = source.tensor(binding.parameter)
    if binding.transpose:
        tensor = tensor.t()
    return tensor.contiguous().reshape(binding.shape).to(dtype).numpy().tobytes()


def write_initializers(model, bindings, source, path: Path, *, external: bool, weights_name: str,
                       float16: bool = False, progress=None) -> None:
    """Replace the graph's valueless inputs by initializers from `source`; save to `path` and check it there."""
    import onnx
    import torch

    dtype, onnx_type = (torch.float16, onnx.TensorProto.FLOAT16) if float16 else (torch.float32, onnx.TensorProto.FLOAT)
    bound = {b.initializer for b in bindings}
    kept = [value for value in model.graph.input if value.name not in bound]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    sink = open(path.parent / weights_name, "wb") if external else None
    try:
        offset = 0
        for k, binding in enumerate(bindings):
            data = _tensor_bytes(source, binding, dtype)
            tensor = model.graph.initializer.add()
            tensor.name = binding.initializer
            tensor.data_type = onnx_type
            tensor.dims.extend(binding.shape)
            if sink is None or len(data) < INLINE_BELOW:
                tensor.raw_data = data
                continue
            pad = (-offset) % PAGE
            sink.write(b"\0" * pad)
            offset += pad
            sink.write(data)
            for key, value in (("location", weights_name), ("offset", offset), ("length", len(data))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(data)
            if progress is not None and k % 100 == 0:
                progress(k, len(bindings))
    finally:
        if sink is not None:
            sink.close()
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path), full_check=False)
