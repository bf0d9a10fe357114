"""MACs of one UNet forward counted from an ONNX graph (fp32 export or compiled), by shape inference.

The graph's dynamic input dims (`batch`, `height`, `width` of `sample`, and every other input's batch)
are fixed to the values the caller gives (a dynamic batch defaults to 2; a dynamic height/width without a
resolution is an error: what `dgq export` traced is the CLI's to read, from export.json), shapes are inferred (onnxruntime's symbolic shape inference, which
propagates the Shape->Gather->Concat->Reshape chains the exporter emits; plain `onnx.shape_inference`
with data propagation as the fallback), then every node is counted:
- Conv:    MACs = output elements x (W.shape[1] x kh x kw)              -> conv
- Gemm:    MACs = M x N x K                                               -> linear
- MatMul:  MACs = output elements x K (A's last dim); operand sizes and batch x head slices are recorded; `linear` when B is a constant weight (an
           initializer, possibly through DequantizeLinear/Transpose/...), else an attention matmul:
           `attn_qk` if its output reaches a Softmax, `attn_av` if its A operand comes from one, else `other`.
Cross-attention = the K operand is projected (reshapes, a constant-weight MatMul, Q/DQ) straight from the
`encoder_hidden_states` input. Module paths come from the node scopes (`/unet/down_blocks.0/.../attn1/MatMul`
-> `down_blocks.0....attn1`; compiler-added nodes `dgq/<module>/...`); conv_in/conv_out are the
full-precision modules. A compiled cross-attention's split A.V (FP <start> column + the rest) is merged
back into one op. On a compiled graph every Conv/Linear also records the widths it was compiled with (weight:
its integer initializer's type; input: its quantizer's `dgq.bits`) and, for a BOS-aware text embedding, the
MACs of the FP <start> row, for the cost model's per-op (`compiled`) rows. Weight and parameter counts come from the initializers' dims, so the
external weights file (SD: 3.4 GB) is never read.
(About 380 lines: shape fixing, inference and the counting rules above are one procedure over one graph
index; split, each half would need the other's internals.)
"""
from __future__ import annotations

import math
from pathlib import Path

from passes.contract import (FP_MODULES, NAMESPACE, NARROW_BITS, QuantizerRecord, bos_row_names, is_compiler_node,
                             is_quantizer_node, node_prefix)
from passes.graph_query import GraphIndex, attribute
from simulator.cost.inventory import LATENT_FACTOR, CountedOp, Inventory, QuantPoint
from simulator.errors import SimulatorError

SCOPE_ROOT = "unet"
COMPILER_SCOPE = NAMESPACE   # compiler-added nodes are named dgq/<module path>/...
DEFAULT_GRAPH_BATCH = 2  # a dynamic batch: cond + uncond (classifier-free guidance)
_VALUE_NEEDED_MAX = 64  # initializers larger than this are weights, never shape data
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_WEIGHT_PATH = {"DequantizeLinear", "Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze", "Clip"}
TEXT_INPUT = "encoder_hidden_states"
_KV_PATH = {"Transpose", "Reshape", "Cast", "Identity", "Mul", "Div", "Add", "MatMul", "Unsqueeze", "Squeeze",
            "QuantizeLinear", "DequantizeLinear", "Clip", "Slice", "Concat"}
_PASS_THROUGH = {"Cast", "Identity", "Mul", "Add", "Div", "Sub", "Where", "Slice", "Clip", "Reshape",
                 "Transpose", "QuantizeLinear", "DequantizeLinear", "Squeeze", "Unsqueeze"}


def _module_path(node_name: str) -> str:
    """`/unet/down_blocks.0/resnets.0/conv1/Conv` -> `down_blocks.0.resnets.0.conv1`; nodes the compiler
    adds are named `dgq/<module path>/<role>/<op>`."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) > 2 and parts[0] == COMPILER_SCOPE:
        return parts[1]
    if parts and parts[0] == SCOPE_ROOT:
        parts = parts[1:]
    return ".".join(parts[:-1])


def _merge_split_attention(ops: list, points: list) -> tuple:
    """A compiled cross-attention computes A.V as two matmuls (the FP <start> column, K = 1, and the rest):
    one op per attention module and kind again, contraction lengths added, so graph and config agree."""
    merged, seen = [], {}
    for op in ops:
        key = (op.module, op.kind)
        if op.kind not in ("attn_qk", "attn_av") or key not in seen:
            seen.setdefault(key, len(merged))
            merged.append(op)
            continue
        first = merged[seen[key]]
        merged[seen[key]] = CountedOp(first.module, first.kind, first.macs + op.macs,
                                      max(first.outputs, op.outputs), cross=first.cross or op.cross,
                                      keys=first.keys + op.keys, a_elements=first.a_elements + op.a_elements,
                                      b_elements=first.b_elements + op.b_elements, slices=first.slices)
    unique = {}
    for point in points:
        unique.setdefault((point.module, point.role), point)
    return merged, list(unique.values())


def load_graph(path: str | Path):
    """The graph proto without external weights (dims only)."""
    import onnx

    path = Path(path)
    if path.is_dir():
        path = path / "unet.onnx"
    if not path.is_file():
        raise SimulatorError(f"ONNX graph {str(path)!r} not found")
    try:
        return onnx.load(str(path), load_external_data=False), path
    except Exception as exc:  # protobuf DecodeError and friends: the file is not an ONNX model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimulatorError(f"ONNX graph {str(path)!r} cannot be read: {reason}") from None


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _sample_input(graph):
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    for i in inputs:
        if i.name == "sample":
            return i
    four_d = [i for i in inputs if len(_dims(i)) == 4]
    if not four_d:
        raise SimulatorError("ONNX graph has no 4-D `sample` input: expected a diffusion UNet")
    return four_d[0]


def graph_downsamples(graph) -> int:
    """Stride-2 convolutions (the down blocks' Downsample2D)."""
    count = 0
    for node in graph.node:
        if node.op_type == "Conv":
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1, 1])
            count += any(s == 2 for s in strides)
    return count


def _resolve_dims(graph, path: Path, batch: int | None, resolution: int | None) -> tuple:
    """(batch, (h, w)): the arguments, else the graph's own concrete dims; a dynamic batch defaults to 2 (CFG).
    Reading the reports `dgq export` / `dgq compile` write beside a graph is the caller's business."""
    from simulator.cost.macs_from_config import check_latent, latent_from_resolution

    dims = _dims(_sample_input(graph))
    downsamples = graph_downsamples(graph)
    what = f"the graph {path.name!r}"
    if resolution is not None:
        latent = latent_from_resolution(resolution, downsamples, what)
        fixed = tuple(d for d in dims[2:] if isinstance(d, int))
        if len(fixed) == 2 and fixed != latent:
            raise SimulatorError(f"graph {path.name!r} has a fixed latent size {fixed[0]}x{fixed[1]} "
                                 f"({fixed[0] * LATENT_FACTOR} px): --resolution {resolution} does not match")
    elif all(isinstance(d, int) for d in dims[2:]):
        latent = tuple(dims[2:])
    else:
        raise SimulatorError(f"graph {path.name!r} has dynamic height/width: pass the resolution "
                             "(--resolution PX)")
    check_latent(latent, downsamples, what)
    if batch is None:
        batch = dims[0] if isinstance(dims[0], int) else DEFAULT_GRAPH_BATCH
    elif isinstance(dims[0], int) and dims[0] != batch:
        raise SimulatorError(f"graph {path.name!r} has a fixed batch {dims[0]}: --batch {batch} does not match")
    if not isinstance(batch, int) or batch < 1:
        raise SimulatorError(f"batch must be a positive integer, got {batch!r}")
    return batch, latent


def _fix_input_dims(graph, batch: int, latent: tuple) -> None:
    sample = _sample_input(graph)
    named = {}
    for axis, value in ((0, batch), (2, latent[0]), (3, latent[1])):
        dim = sample.type.tensor_type.shape.dim[axis]
        if dim.dim_param:
            named[dim.dim_param] = value
    initializers = {t.name for t in graph.initializer}
    for value_info in graph.input:
        if value_info.name in initializers:
            continue
        for axis, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            if dim.dim_param in named:
                dim.dim_value = named[dim.dim_param]
            elif axis == 0:
                dim.dim_value = batch
            else:
                raise SimulatorError(f"graph input {value_info.name!r} has a dynamic dim {dim.dim_param!r} "
                                     f"(axis {axis}) the cost model cannot fix: expected batch/height/width only")


def _weights_as_inputs(model):
    """A copy whose large initializers are typed graph inputs: shape inference never needs their values,
    and reading them would touch the external weights file (which `load_graph` skips)."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto()
    light.CopyFrom(model)
    keep, moved = [], []
    for init in light.graph.initializer:
        external = init.data_location == onnx.TensorProto.EXTERNAL
        if external or math.prod(init.dims) > _VALUE_NEEDED_MAX:
            moved.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del light.graph.initializer[:]
    light.graph.initializer.extend(keep)
    light.graph.input.extend(moved)
    return light


def infer_shapes(model) -> dict:
    """Tensor name -> concrete dims (None where unknown), after symbolic shape inference."""
    import onnx

    from simulator.check import shape_inference_view

    dims = {init.name: list(init.dims) for init in model.graph.initializer}
    model = _weights_as_inputs(shape_inference_view(model))
    inferred = None
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=False)
    except Exception:  # unknown custom ops etc.: fall back to onnx's own inference
        inferred = None
    if inferred is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:
            raise SimulatorError(f"shape inference failed on the graph: {str(exc).splitlines()[0]}") from None
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = [d if isinstance(d, int) and d > 0 else None for d in _dims(vi)]
    shapes.update(dims)
    return shapes


class _Graph(GraphIndex):
    """The structural questions the classifier asks, on the shared producer/consumer index."""

    def reads_text(self, tensor: str) -> bool:
        """Whether an attention K/V operand is projected from `encoder_hidden_states` (cross-attention):
        walk its data producers (reshapes, the to_k/to_v projection, Q/DQ) back to a graph input."""
        for _ in range(16):
            if tensor == TEXT_INPUT:
                return True
            node = self.producer.get(tensor)
            if node is None or node.op_type not in _KV_PATH or (
                    node.op_type == "MatMul" and not self.is_constant(node.input[1])):
                return False
            tensor = node.input[0]
        return False

    def copies(self, name: str) -> int:
        """How many parameters an initializer stands for: the exporter dedups equal tensors (e.g. the
        ones/zeros of freshly initialised norms) into one initializer read through Identity nodes."""
        return 1 + sum(1 for user in self.consumers.get(name, []) if user.op_type == "Identity")

    def weight_root(self, tensor: str):
        """The initializer a weight operand is read from, through dequantize/transpose/..., or None."""
        for _ in range(6):
            if tensor in self.initializers:
                return self.initializers[tensor]
            if tensor in self.constants:
                return None
            node = self.producer.get(tensor)
            if node is None or node.op_type not in _WEIGHT_PATH:
                return None
            tensor = node.input[0]
        return None

    def is_constant(self, tensor: str) -> bool:
        for _ in range(6):
            if tensor in self.initializers or tensor in self.constants:
                return True
            node = self.producer.get(tensor)
            if node is None or node.op_type not in _WEIGHT_PATH:
                return False
            tensor = node.input[0]
        return False

    def _is_pass_through(self, node) -> bool:
        return node.op_type in _PASS_THROUGH or node.domain not in ("", "ai.onnx")

    def feeds_softmax(self, tensor: str) -> bool:
        frontier = [tensor]
        for _ in range(5):
            nxt = []
            for name in frontier:
                for user in self.consumers.get(name, []):
                    if user.op_type == "Softmax":
                        return True
                    if self._is_pass_through(user):
                        nxt.extend(user.output)
            frontier = nxt
        return False

    def from_softmax(self, tensor: str) -> bool:
        frontier = [tensor]
        for _ in range(5):
            nxt = []
            for name in frontier:
                node = self.producer.get(name)
                if node is None:
                    continue
                if node.op_type == "Softmax":
                    return True
                if self._is_pass_through(node):
                    nxt.extend(i for i in node.input if i and i not in self.initializers)
            frontier = nxt
        return False


def _compiled_widths(graph) -> tuple[dict, set]:
    """(module -> input bits from its quantizer's metadata, node names) of a compiled graph; empty for fp32."""
    bits = {}
    for node in graph.node:
        if is_quantizer_node(node) and is_compiler_node(node.name):
            record = QuantizerRecord.from_node(node)
            if record is not None and record.role == "input":
                bits[record.module] = record.bits
    return bits, {node.name for node in graph.node}


def _integer_bits(root) -> int | None:
    """The width of a quantized weight initializer (INT4 -> 4, INT8 -> 8), None for a float one."""
    if root.data_type in NARROW_BITS:
        return NARROW_BITS[root.data_type]
    return 8 if root.data_type in (2, 3) else None  # UINT8, INT8


def _known(shape, node, what: str) -> list:
    if shape is None or any(d is None for d in shape):
        raise SimulatorError(f"shape inference left the {what} of node {node.name!r} unknown ({shape}): "
                             "cannot count its MACs")
    return shape


def inventory_from_graph(path: str | Path, *, batch: int | None = None, resolution: int | None = None,
                         model: str | None = None) -> Inventory:
    """Count one forward of the graph at `batch` and `resolution` px (defaults: the graph's or its export's)."""
    proto, path = load_graph(path)
    graph = proto.graph
    batch, latent = _resolve_dims(graph, path, batch, resolution)
    _fix_input_dims(graph, batch, latent)
    shapes = infer_shapes(proto)
    index = _Graph(graph)
    input_bits, names = _compiled_widths(graph)
    ops, points = [], []
    quantized_roots, fp_roots = {}, {}
    weight_channels = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        module = _module_path(node.name)
        out = _known(shapes.get(node.output[0]), node, "output")
        outputs = math.prod(out)
        a_shape = shapes.get(node.input[0])
        if node.op_type == "Conv":
            a_shape = _known(a_shape, node, "input")
            w = _known(shapes.get(node.input[1]), node, "weight")
            reduce, kind = w[1] * math.prod(w[2:]), "conv"
            channels = w[1] * attribute(node, "group", 1)
        elif node.op_type == "Gemm":
            a_shape = _known(a_shape, node, "input")
            reduce, kind = a_shape[0] if attribute(node, "transA", 0) else a_shape[1], "linear"
            channels = reduce
        else:
            a_shape = _known(a_shape, node, "input")
            reduce = a_shape[-1]
            kind = "linear" if index.is_constant(node.input[1]) else (
                "attn_qk" if index.feeds_softmax(node.output[0]) else
                "attn_av" if index.from_softmax(node.input[0]) else "other")
            channels = reduce
        macs = outputs * reduce
        b_shape = _known(shapes.get(node.input[1]), node, "second operand")
        sizes = {"a_elements": math.prod(a_shape), "b_elements": math.prod(b_shape)}
        if kind in ("conv", "linear"):
            root = index.weight_root(node.input[1])
            if root is None:
                raise SimulatorError(f"node {node.name!r}: its weight is not an initializer of the graph")
            # in a compiled graph a layer with neither an input quantizer nor integer weights was left FP (a MixDQ
            # allocation's W32A32); in an fp32 export every layer is counted at the configuration's widths
            fp = module in FP_MODULES or (bool(input_bits) and module not in input_bits and _integer_bits(root) is None)
            bos_fp = bos_row_names(node_prefix(module, "input"))["join"] in names
            ops.append(CountedOp(module, kind, macs, outputs, full_precision=fp, weight_bits=_integer_bits(root),
                                 act_bits=input_bits.get(module), fp_macs=macs // a_shape[-2] if bos_fp else 0,
                                 **sizes))
            if fp:
                fp_roots[root.name] = root
            elif root.name not in quantized_roots:
                quantized_roots[root.name] = root
                w = shapes.get(node.input[1])
                weight_channels += (w[0] if node.op_type == "Conv" or attribute(node, "transB", 0) else w[-1])
                points.append(QuantPoint(module, "input", channels))
            continue
        cross = index.reads_text(node.input[1])
        sizes["slices"] = math.prod(a_shape[:-2])
        heads = math.prod(a_shape[:-2]) // batch
        if kind == "attn_qk":
            ops.append(CountedOp(module, kind, macs, outputs, cross=cross, keys=b_shape[-1], **sizes))
            points += [QuantPoint(module, "q", heads * a_shape[-1]), QuantPoint(module, "k", heads * b_shape[-2])]
        elif kind == "attn_av":
            ops.append(CountedOp(module, kind, macs, outputs, cross=cross, keys=reduce, **sizes))
            points.append(QuantPoint(module, "v", heads * b_shape[-1]))
        else:
            ops.append(CountedOp(module, kind, macs, outputs, **sizes))
    ops, points = _merge_split_attention(ops, points)
    quantized = sum(math.prod(t.dims) for t in quantized_roots.values())
    fp_params = sum(math.prod(t.dims) * index.copies(name) for name, t in index.initializers.items()
                    if name not in quantized_roots and t.data_type in _FLOAT_TYPES
                    and not _is_qparam(name, index) and math.prod(t.dims) > 1)
    return Inventory(source="graph", model=model or str(path), batch=batch, latent=tuple(latent),
                     ops=tuple(ops), quantized_weight_elements=quantized, weight_channels=weight_channels,
                     fp_param_elements=fp_params, points=tuple(points))


def _is_qparam(name: str, index: _Graph) -> bool:
    """Scales / zero points of Q/DQ nodes, and the [T, G] tables / group maps gathered into them (through the
    blocked form's Expand too: passes/block_axis_quantizers.py)."""
    def feeds_qdq_params(tensor: str, depth: int) -> bool:
        for user in index.consumers.get(tensor, []):
            if user.op_type in ("QuantizeLinear", "DequantizeLinear") and user.input[0] != tensor:
                return True
            if depth and user.op_type in ("Gather", "Reshape", "Cast", "Squeeze", "Unsqueeze", "Identity", "Expand") \
                    and feeds_qdq_params(user.output[0], depth - 1):
                return True
        return False

    return feeds_qdq_params(name, 4)
