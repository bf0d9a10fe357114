"""Trace a UNet's ONNX graph without its weights, then say where each initializer's values come from.

The legacy TorchScript exporter (torch.onnx.export, dynamo=False) traces a skeleton: the UNet's modules
with every parameter replaced by a zero-stride placeholder (one scalar broadcast to the parameter's
shape), so the trace costs activations only. `export_params=False` makes the exporter declare the
initializers as extra graph inputs instead of writing them; the exporter still folds what it folds
(Linear weights transposed for MatMul, norm weights unsqueezed to [C, 1, 1]) and merges initializers of
equal value. Placeholders carry a content-class id (equal weights share one), so the exporter merges
exactly what it would merge with the real weights, and the graph is the one a full export gives.

`bind_initializers` then maps every such input back to a UNet parameter: by name for parameters the
exporter kept, and for folded ones (`onnx::MatMul_123`) by the scope of the node that reads them and the
shape, transposed when the shape is reversed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from dgq_compiler.errors import DgqError

SCOPE_PREFIX = "unet."  # the export wrapper's attribute: parameters are named unet.<diffusers path>


@dataclass(frozen=True)
class Binding:
    initializer: str   # the graph's initializer name
    parameter: str     # the diffusers parameter name (without the wrapper prefix)
    shape: tuple       # the initializer's shape
    transpose: bool    # the initializer is the 2-D parameter transposed (else a reshape of its values)


def placeholder_value(class_id: int, float16: bool):
    """A scalar distinct for every class id: id / 1024 in float32; in float16 (2048 integers at most) the
    bit pattern of 1.0 plus the id, distinct up to 16383 ids."""
    import torch

    if not float16:
        return torch.full((), class_id / 1024.0)
    if not 0 < class_id < 0x7C00 - 0x3C00:
        raise DgqError(f"too many distinct weights ({class_id}) for float16 placeholders")
    return torch.tensor(0x3C00 + class_id, dtype=torch.int16).view(torch.float16)


def placeholder_skeleton(config: dict, classes: dict[str, int], float16: bool = False):
    """A UNet whose parameters are broadcast scalars (one per content class): the structure, no weight memory."""
    import torch

    from models.zoo import unet_from_config

    unet = unet_from_config(config, device="meta")
    for prefix, module in unet.named_modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            qualified = f"{prefix}.{name}" if prefix else name
            if qualified not in classes:
                raise DgqError(f"the weights have no {qualified!r}: expected the state dict of a diffusers "
                               "UNet2DConditionModel with this config (saved by a current diffusers)")
            value = placeholder_value(classes[qualified], float16)
            module._parameters[name] = torch.nn.Parameter(value.expand(param.shape), requires_grad=False)
    return unet.eval()


def trace_graph(wrapper, inputs: dict, path: Path, opset: int, dynamic_axes: dict) -> None:
    """The legacy exporter's graph of `wrapper` with its parameters as named, valueless graph inputs."""
    import torch

    names = list(inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(inputs.values()), str(path), input_names=names,
                          output_names=["out_sample"], dynamic_axes=dynamic_axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True, export_params=False)


def _dims(value_info) -> tuple:
    return tuple(d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _reading_scope(name: str, consumers: dict) -> tuple[str, str]:
    """(module path, op type) of the first node that reads `name`, looking through the exporter's Identity."""
    from passes.module_map import module_path

    frontier = [name]
    while frontier:
        tensor = frontier.pop(0)
        for node in consumers.get(tensor, []):
            if node.op_type == "Identity":
                frontier.extend(node.output)
            else:
                return module_path(node.name), node.op_type
    raise DgqError(f"traced graph: initializer {name!r} is read by no node")


def bind_initializers(model, data_inputs: list[str], shapes: dict[str, tuple]) -> list[Binding]:
    """One Binding per valueless graph input (every input not in `data_inputs`), in graph order."""
    consumers: dict = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    bindings = []
    for value in model.graph.input:
        if value.name in data_inputs:
            continue
        shape = _dims(value)
        if value.name.startswith(SCOPE_PREFIX) and value.name[len(SCOPE_PREFIX):] in shapes:
            parameter = value.name[len(SCOPE_PREFIX):]
            if shapes[parameter] != shape:
                raise DgqError(f"traced graph: {value.name!r} has shape {shape}, the parameter {shapes[parameter]}")
            bindings.append(Binding(value.name, parameter, shape, False))
            continue
        module, op_type = _reading_scope(value.name, consumers)
        wanted = {"Mul": ("weight",), "Add": ("bias",)}.get(op_type, ("weight", "bias"))
        candidates = [f"{module}.{role}" for role in wanted
                      if f"{module}.{role}" in shapes and math.prod(shapes[f"{module}.{role}"]) == math.prod(shape)]
        if len(candidates) != 1:
            raise DgqError(f"traced graph: cannot tell which parameter of {module or 'the UNet'!r} the folded "
                           f"initializer {value.name!r} {shape} holds (candidates: {candidates or 'none'})")
        parameter = candidates[0]
        # MatMul reads a Linear weight as [in, out]: the exporter folded a transpose; elsewhere a reshape
        transpose = op_type == "MatMul"
        if transpose and (len(shape) != 2 or shapes[parameter] != shape[::-1]):
            raise DgqError(f"traced graph: MatMul operand {value.name!r} {shape} is not {parameter!r} "
                           f"{shapes[parameter]} transposed")
        bindings.append(Binding(value.name, parameter, shape, transpose))
    return bindings

