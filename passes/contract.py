"""The compiled-graph contract: every name, key and table the compiler writes and the simulator, verifier and
reports read back. Writers build with these functions and readers parse with them; no other module spells them.

What a compiled graph holds (fp32 export + recipe -> passes -> this):

1. **Step index.** `dgq/step/*` nodes compute `dgq.step_index` (int64 [1]) = argmin |dgq.schedule - t| with t
   the first entry of `timestep` (a scalar, [1] or [batch]: 1-D of dynamic length as optimum declares it): the
   nearest calibrated timestep, so the compiled graph has exactly the fp32 graph's inputs and outputs.
2. **Activation quantizers.** For (module, role) the nodes are named `dgq/{module}/{role}/{Op}` (e.g.
   `dgq/down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q/input/QuantizeLinear`); their initializers
   `{module}/{role}/{suffix}` with the suffixes `scale_table` (float32 [T, G]), `zero_point_table` (uint8 [T, G])
   and `group_map` (uint8, or int32 when G > 256; [T, N] per-step maps or [1, N] one shared map).
   Uniform: Gather(table, step) -> Reshape -> Gather(., group map) -> QuantizeLinear(axis) [-> Clip for
   b < 8 on uint8 storage] -> DequantizeLinear. Log2 (attention probabilities): `dgq.QuantizeLog` /
   `dgq.DequantizeLog`, model-local functions of domain `dgq` (passes/log_functions.py), scale = each sample's
   maximum (dynamic: `{prefix}/scale/*` nodes, ReduceMax per row then per sample, [B*heads, 1, 1]) or the step's
   calibrated scale. In a lowered graph (`--target onnxruntime-cpu`) a pair whose codes feed only its DequantizeLog
   is one node, `dgq.QuantizeDequantizeLog` named `{prefix}/QuantizeDequantizeLog` with the QuantizeLog's metadata
   (quantizer and dequantizer at once; passes/fuse_log_quantizers.py); its body needs opset 26 (BitCast), so
   lowered graphs import opset 26.
   Pixel/token group maps are defined on the calibrated grid and resampled to the run-time
   size by `{prefix}/resample/*` nodes and `{prefix}/group_map/Resample` (passes/pixel_groups.py).
   **Blocked form.** A uniform quantizer whose per-index axis is the last axis of the tensor it reads (channel
   groups of [B, N, C] and [B, C], pixel groups of a flattened [B, C, H*W]) is written as opset 21's blocked
   QuantizeLinear/DequantizeLinear(axis=BLOCK_AXIS (-2), block_size=BLOCK_SIZE): the per-index scale and zero point
   [L] are broadcast by `{prefix}/block/Expand_scale` / `Expand_zero_point` to the tensor's shape with its
   second-to-last extent K replaced by ceil(K / BLOCK_SIZE), computed from the run-time shape by `{prefix}/block/*`
   nodes (passes/block_axis_quantizers.py). Same scales, zero points and codes as the per-axis form (which
   onnxruntime's CPU kernel runs one element per call, ~10x slower); readers take the per-index vector behind the
   Expand (`per_index_param`) and the quantized axis from `quantized_axis` (-1 for a blocked quantizer).
   Other per-axis quantizers (channels of [B, C, H, W], tokens of [B, N, C]) keep QuantizeLinear(axis).
3. **Quantizer metadata.** Every QuantizeLinear / QuantizeLog node carries `metadata_props`: `dgq.module`,
   `dgq.role`, `dgq.bits`, `dgq.axis`, `dgq.quantizer` (uniform | log2) and, for log2, `dgq.dynamic` (0/1):
   `QuantizerRecord.to_props()` writes them, `QuantizerRecord.from_node()` reads them.
4. **<start> split.** Cross-attention with the BOS token kept FP: `dgq/{module}/split/*` nodes, summed by
   `dgq/{module}/split/Add` (FP branch + quantized branch) into the original A.V output tensor.
4b. **<start> row of the text embedding** (MixDQ's BOS-aware quantizer, recipe entries (attn2.to_k|to_v, input)
   with exclude_bos): `dgq/{module}/input/Slice_bos` (token 0, FP) and `.../Slice_rest` (tokens 1.., quantized),
   joined by `dgq/{module}/input/Concat` on the token axis in front of the projection (passes/quantize_text_embedding.py);
   the same three names split a cross-attention's k/v rows (insert_activation_qdq).
5. **Weights.** Initializer `{w}` becomes `{w}_quantized` (INT8, or INT4 for b <= 4), `{w}_scale`,
   `{w}_zero_point` and a node `{w}_DequantizeLinear` with output `{w}_dequantized` (axis = output channels).
6. **Fusion barriers.** A MatMul/Gemm whose activation input is not a per-tensor DequantizeLinear reads its
   dequantized weight through a Reshape to the weight's own shape, named `{node}/KeepFloat/Reshape`: a
   layout op for every reader, and what keeps onnxruntime's default session from fusing the product into
   kernels that refuse per-group zero points or re-quantize a float activation (passes/insert_fusion_barriers.py).
6b. **Integer lowering** (`--target onnxruntime-cpu`, passes/lower_*.py). Every integer product is a
   MatMulInteger named `dgq/{module}/lower/acc*` whose metadata names the float input (LOWERED_INPUT), the kernel,
   the accumulator layout and its group: LOWERED_GROUP = g (one product per recipe group or kernel tap; -1 when the
   op has one accumulator) or GROUPS_BATCHED for channel (split-K) groups lowered as ONE batched product (where
   padding the groups to one width is cheap, passes/lower_batched.py), whose slice g along axis LOWERED_GROUP_AXIS
   is group g's int32 accumulator, g < LOWERED_GROUP_COUNT ([G, M, N] for a linear, [B, G, Ho*Wo, Co] for a
   convolution).
   The per-op rows of `lowering.json` name the module, kernel, weight initializer and accumulator count.
7. **Model metadata.** `dgq.compiled`, `dgq.model`, `dgq.recipe_config` (JSON), `dgq.timesteps` (JSON), and on
   static variants `dgq.static_step` / `dgq.static_timestep`.

Roles are the recipe's: input, weight, q, k, v, attn_probs. conv_in / conv_out stay full precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

NAMESPACE = "dgq"                 # node-name prefix, metadata-key prefix and custom-op domain
NODE_PREFIX = NAMESPACE + "/"
LOG_DOMAIN = NAMESPACE
QUANTIZE_LOG = "QuantizeLog"
DEQUANTIZE_LOG = "DequantizeLog"
QUANTIZE_DEQUANTIZE_LOG = "QuantizeDequantizeLog"   # the fused pair of a lowered graph (no codes tensor)

STEP_INDEX = "dgq.step_index"     # int64 [1]: the calibrated step nearest to the timestep input
SCHEDULE = "dgq.schedule"         # float32 [T]: the calibrated timesteps
STEP_PREFIX = "dgq/step"          # the nodes that compute the step index
TIMESTEP_INPUT = "timestep"
SAMPLE_INPUT = "sample"          # the latent [B, C, H, W]: its H, W size pixel-group maps at run time
FUSION_BARRIER_SUFFIX = "/KeepFloat/Reshape"  # {MatMul/Gemm node}{suffix}: weight DQ -> Reshape -> the product

ROLES = ("input", "weight", "q", "k", "v", "attn_probs")
ATTENTION_ROLES = ("q", "k", "v", "attn_probs")
QKV_ROLES = ("q", "k", "v")
FP_MODULES = ("conv_in", "conv_out")  # kept full precision, weights and activations
SPLIT = "split"                   # the <start>-token split of a cross-attention: dgq/{module}/split/*
BOS_SLICE = "Slice_bos"           # dgq/{module}/{role}/Slice_bos: the <start> token row, kept FP
REST_SLICE = "Slice_rest"         # dgq/{module}/{role}/Slice_rest: the other tokens, quantized
BOS_JOIN = "Concat"               # dgq/{module}/{role}/Concat: FP row 0 + dequantized rows 1.. on the token axis

BLOCK = "block"                   # dgq/{module}/{role}/block/*: a last-axis quantizer's blocked parameters
BLOCK_AXIS = -2                   # the blocked axis (the one before the quantized last axis)
BLOCK_SIZE = 64                   # its block; the parameters' extent there is ceil(K / 64) at run time

# table suffixes of the per-point initializers {module}/{role}/{suffix}
SCALE_TABLE = "scale_table"
ZERO_POINT_TABLE = "zero_point_table"
GROUP_MAP = "group_map"

# quantizer node metadata keys
META_MODULE = "dgq.module"
META_ROLE = "dgq.role"
META_BITS = "dgq.bits"
META_AXIS = "dgq.axis"
META_QUANTIZER = "dgq.quantizer"
META_DYNAMIC = "dgq.dynamic"

# model metadata keys
MODEL_COMPILED = "dgq.compiled"
MODEL_NAME = "dgq.model"
MODEL_RECIPE_CONFIG = "dgq.recipe_config"
MODEL_TIMESTEPS = "dgq.timesteps"
MODEL_STATIC_STEP = "dgq.static_step"
MODEL_STATIC_TIMESTEP = "dgq.static_timestep"

# integer lowering (`dgq compile --target onnxruntime-cpu`, passes/lower_*.py; read by dgq verify)
LOWER_ROLE = "lower"                           # lowered nodes and initializers: dgq/{module}/lower/...
LOWERED = f"{NAMESPACE}.lowered"               # model metadata: the target the graph was lowered for
LOWERED_INPUT = f"{NAMESPACE}.lowered_input"   # MatMulInteger metadata: the float tensor the op quantizes
LOWERED_KERNEL = f"{NAMESPACE}.kernel"
LOWERED_GROUP = f"{NAMESPACE}.group"           # the recipe group (or kernel tap) of this accumulator (-1: the only one)
GROUPS_BATCHED = "batched"                     # LOWERED_GROUP of a batched split-K product: acc[g] is group g's
LOWERED_GROUP_COUNT = f"{NAMESPACE}.group_count"  # ... accumulator, g < this count, ...
LOWERED_GROUP_AXIS = f"{NAMESPACE}.group_axis"    # ... g indexing this axis (passes/lower_batched.py)
LOWERED_LAYOUT = f"{NAMESPACE}.acc_layout"     # nlc (rows x out channels) | nhwc (conv, channels last) | tap
LOWERING_REPORT = "lowering.json"              # beside the lowered graph: one row per lowered op

# ONNX element types narrower than a byte -> their bit width (the one table of them)
NARROW_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2}
SIGNED_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.INT16, onnx.TensorProto.INT2})


# ---------------------------------------------------------------- names

def node_prefix(module: str, role: str) -> str:
    """`dgq/{module}/{role}`: the prefix of every node the compiler adds for one quantization point."""
    return f"{NODE_PREFIX}{module}/{role}"


def init_prefix(node_prefix_: str) -> str:
    """The initializer prefix for a node prefix: `dgq/{module}/{role}` -> `{module}/{role}`."""
    return node_prefix_[len(NODE_PREFIX):] if node_prefix_.startswith(NODE_PREFIX) else node_prefix_


def table_name(prefix: str, suffix: str) -> str:
    """`{module}/{role}/{suffix}` from a node or initializer prefix."""
    return f"{init_prefix(prefix)}/{suffix}"


def split_prefix(module: str) -> str:
    return node_prefix(module, SPLIT)


def bos_row_names(prefix: str) -> dict[str, str]:
    """The nodes that keep token row 0 FP at a quantization point `dgq/{module}/{role}`."""
    return {"bos": f"{prefix}/{BOS_SLICE}", "rest": f"{prefix}/{REST_SLICE}", "join": f"{prefix}/{BOS_JOIN}"}


def is_compiler_node(name: str) -> bool:
    return name.startswith(NODE_PREFIX)


def is_split_add(name: str) -> bool:
    return name.startswith(NODE_PREFIX) and name.endswith(f"/{SPLIT}/Add")


def parse_node_name(name: str) -> tuple[str, str, str] | None:
    """`dgq/{module}/{role}/{rest}` -> (module, role, rest); None for a node the compiler did not add.
    Module paths use dots, never slashes, so the first two components are unambiguous."""
    if not name.startswith(NODE_PREFIX):
        return None
    parts = name[len(NODE_PREFIX):].split("/", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def dequantizer_name(quantizer_node: str, op_type: str) -> str:
    """The DequantizeLinear / DequantizeLog node paired with a QuantizeLinear / QuantizeLog node."""
    if op_type == QUANTIZE_DEQUANTIZE_LOG:
        return quantizer_node
    dq = DEQUANTIZE_LOG if op_type == QUANTIZE_LOG else "DequantizeLinear"
    return quantizer_node.rsplit("/", 1)[0] + "/" + dq


def block_names(prefix: str) -> dict[str, str]:
    """The nodes that broadcast a quantizer's per-index scale / zero point to the blocked form."""
    return {"scale": f"{prefix}/{BLOCK}/Expand_scale", "zero_point": f"{prefix}/{BLOCK}/Expand_zero_point",
            "shape": f"{prefix}/{BLOCK}/shape"}


def is_block_expand(node) -> bool:
    """One of the Expand nodes of block_names (onnx NodeProto or onnx-graphsurgeon Node)."""
    op = getattr(node, "op_type", None) or getattr(node, "op", None)
    return op == "Expand" and node.name.startswith(NODE_PREFIX) and \
        node.name.rsplit("/", 2)[-2:] in ([BLOCK, "Expand_scale"], [BLOCK, "Expand_zero_point"])


def per_index_param(producer: dict, tensor: str) -> str:
    """The per-index (or scalar) scale / zero-point tensor behind a quantizer's parameter input: the input of a
    blocked form's Expand, else the tensor itself. `producer`: tensor name -> onnx NodeProto."""
    node = producer.get(tensor)
    return node.input[0] if node is not None and is_block_expand(node) else tensor


def quantized_axis(node) -> int:
    """The axis a QuantizeLinear / DequantizeLinear node's per-index parameters run along (onnx NodeProto): -1 for
    the blocked form, else the `axis` attribute (default 1; moot for a per-tensor node: one-element parameters)."""
    attrs = {a.name: a.i for a in node.attribute}
    return -1 if attrs.get("block_size", 0) else int(attrs.get("axis", 1))


def weight_names(weight: str) -> dict[str, str]:
    """The tensors and node a quantized weight initializer `weight` becomes."""
    return {"quantized": f"{weight}_quantized", "scale": f"{weight}_scale", "zero_point": f"{weight}_zero_point",
            "node": f"{weight}_DequantizeLinear", "dequantized": f"{weight}_dequantized"}


def is_quantizer_node(node) -> bool:
    """A QuantizeLinear, or the project's QuantizeLog or fused QuantizeDequantizeLog (onnx NodeProto)."""
    return node.op_type == "QuantizeLinear" or (
        node.domain == LOG_DOMAIN and node.op_type in (QUANTIZE_LOG, QUANTIZE_DEQUANTIZE_LOG))


def is_dequantizer_node(node) -> bool:
    """A DequantizeLinear, or the project's DequantizeLog or fused QuantizeDequantizeLog (onnx NodeProto)."""
    return node.op_type == "DequantizeLinear" or (
        node.domain == LOG_DOMAIN and node.op_type in (DEQUANTIZE_LOG, QUANTIZE_DEQUANTIZE_LOG))


def node_props(node) -> dict[str, str]:
    """A node's metadata_props as a dict (onnx NodeProto or ModelProto)."""
    return {p.key: p.value for p in node.metadata_props}


# ---------------------------------------------------------------- the quantizer record

@dataclass(frozen=True)
class QuantizerRecord:
    """What a quantizer node's metadata says about it: the recipe key and its quantizer."""
    module: str
    role: str
    quantizer: str           # uniform | log2
    bits: int
    axis: str                # tensor | channel | pixel
    dynamic: bool = False    # log2: scale = max of the tensor at run time

    def to_props(self) -> dict[str, str]:
        props = {META_MODULE: self.module, META_ROLE: self.role, META_BITS: str(self.bits), META_AXIS: self.axis,
                 META_QUANTIZER: self.quantizer}
        if self.quantizer == "log2":
            props[META_DYNAMIC] = str(int(self.dynamic))
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> QuantizerRecord | None:
        """None when the props do not name a recipe key (a quantizer some other tool wrote)."""
        if META_MODULE not in props or META_ROLE not in props:
            return None
        quantizer = props.get(META_QUANTIZER, "uniform")
        return cls(props[META_MODULE], props[META_ROLE], quantizer, int(props.get(META_BITS, 8)),
                   props.get(META_AXIS, "tensor"), props.get(META_DYNAMIC, "0") == "1")

    @classmethod
    def from_node(cls, node) -> QuantizerRecord | None:
        return cls.from_props(node_props(node))
