"""Tiny hand-built graphs (onnx.helper) shaped like the export, recipes for them, and numpy references."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dgq_compiler.config import QuantConfig
from dgq_compiler.recipe import Recipe, TensorQuant
from dgq_compiler.runtime import session
from passes.base import PassContext
from passes.graph_io import export_model
from passes.manager import run_passes
from passes.module_map import build_module_map

TIMESTEPS = (900, 500, 100)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def layers_model(seed=0) -> onnx.ModelProto:
    """sample [1,4,4,4] -> Conv (down.conv) -> [1,16,6] tokens -> MatMul (proj) -> y ; mean -> Gemm (time) -> z."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["sample", "conv_w", "conv_b"], ["c"], name="/unet/down/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "tok_shape"], ["c3"], name="/unet/Reshape"),
        helper.make_node("Transpose", ["c3"], ["tokens"], name="/unet/Transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "onnx::MatMul_1"], ["y"], name="/unet/proj/MatMul"),
        helper.make_node("ReduceMean", ["c", "axes"], ["pooled"], name="/unet/ReduceMean", keepdims=0),
        helper.make_node("Gemm", ["pooled", "time_w", "time_b"], ["z"], name="/unet/time/Gemm", transB=1),
        helper.make_node("MatMul", ["tokens", "tokensT"], ["gram"], name="/unet/gram/MatMul"),  # two activations
        helper.make_node("Transpose", ["tokens"], ["tokensT"], name="/unet/gram/Transpose", perm=[0, 2, 1]),
    ]
    inits = [init("conv_w", f(6, 4, 3, 3)), init("conv_b", f(6)), init("tok_shape", np.array([1, 6, 16])),
             init("onnx::MatMul_1", f(6, 8)), init("axes", np.array([2, 3])), init("time_w", f(5, 6)),
             init("time_b", f(5))]
    nodes = nodes[:6] + [nodes[7], nodes[6]]
    return make_model(nodes, [vi("sample", [1, 4, 4, 4]), vi("timestep", [1])],
                      [vi("y", [1, 16, 8]), vi("z", [1, 5]), vi("gram", [1, 16, 16])], inits)


def _heads(prefix, src, n, out, transpose_k=False):
    nodes = [helper.make_node("Reshape", [src, f"shape_{n}_4"], [f"{out}_r"], name=f"{prefix}/Reshape_{out}"),
             helper.make_node("Transpose", [f"{out}_r"], [f"{out}_t"], name=f"{prefix}/Transpose_{out}", perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", [f"{out}_t", f"shape_{n}_3"], [out], name=f"{prefix}/Reshape2_{out}")]
    if transpose_k:
        nodes[-1].output[0] = f"{out}_pre"
        nodes.append(helper.make_node("Transpose", [f"{out}_pre"], [out], name=f"{prefix}/Transpose_kT", perm=[0, 2, 1]))
    return nodes


def attention_model(seed=0, softmax="Softmax") -> onnx.ModelProto:
    """x [2,6,8] -> attn1 (self) -> attn2 (cross, keys from encoder_hidden_states [2,5,4]) -> out [2,6,8]; 2 heads."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    nodes, inits = [], [init("scale", np.array(0.5, np.float32))]
    for n in (6, 5):
        inits += [init(f"shape_{n}_4", np.array([2, n, 2, 4])), init(f"shape_{n}_3", np.array([4, n, 4]))]
    inits += [init("merge_4", np.array([2, 2, 6, 4])), init("merge_3", np.array([2, 6, 8]))]
    src = "x"
    for name, ctx_in, d_in in (("attn1", None, 8), ("attn2", "encoder_hidden_states", 4)):
        p = f"/unet/{name}"
        kv_src = ctx_in or src
        nkv = 5 if ctx_in else 6
        for proj, inp, d in (("to_q", src, 8), ("to_k", kv_src, d_in), ("to_v", kv_src, d_in)):
            w = f"onnx::MatMul_{name}_{proj}"
            inits.append(init(w, f(d, 8)))
            nodes.append(helper.make_node("MatMul", [inp, w], [f"{name}_{proj}"], name=f"{p}/{proj}/MatMul"))
        nodes += _heads(p, f"{name}_to_q", 6, f"{name}_qh")
        nodes += _heads(p, f"{name}_to_k", nkv, f"{name}_kh", transpose_k=True)
        nodes += _heads(p, f"{name}_to_v", nkv, f"{name}_vh")
        nodes += [helper.make_node("MatMul", [f"{name}_qh", f"{name}_kh"], [f"{name}_s"], name=f"{p}/MatMul"),
                  helper.make_node("Mul", [f"{name}_s", "scale"], [f"{name}_ss"], name=f"{p}/Mul"),
                  helper.make_node(softmax, [f"{name}_ss"], [f"{name}_p"], name=f"{p}/Softmax", axis=-1),
                  helper.make_node("Cast", [f"{name}_p"], [f"{name}_pc"], name=f"{p}/Cast", to=TensorProto.FLOAT),
                  helper.make_node("MatMul", [f"{name}_pc", f"{name}_vh"], [f"{name}_o"], name=f"{p}/MatMul_1"),
                  helper.make_node("Reshape", [f"{name}_o", "merge_4"], [f"{name}_o4"], name=f"{p}/Reshape_o"),
                  helper.make_node("Transpose", [f"{name}_o4"], [f"{name}_ot"], name=f"{p}/Transpose_o", perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{name}_ot", "merge_3"], [f"{name}_om"], name=f"{p}/Reshape_om")]
        w = f"onnx::MatMul_{name}_out"
        inits.append(init(w, f(8, 8)))
        out = "out" if name == "attn2" else f"{name}_h"
        nodes.append(helper.make_node("MatMul", [f"{name}_om", w], [out], name=f"{p}/to_out.0/MatMul"))
        src = out
    return make_model(nodes, [vi("x", [2, 6, 8]), vi("timestep", [1]), vi("encoder_hidden_states", [2, 5, 4])],
                      [vi("out", [2, 6, 8])], inits)


def make_recipe(tensors, timesteps=TIMESTEPS) -> Recipe:
    return Recipe(model_name="test", config_sha256="0" * 64, config=QuantConfig(), timesteps=timesteps,
                  resolution=(4, 4), tensors={(t.module, t.role): t for t in tensors})


def uniform_entry(module, role, *, bits=8, axis="tensor", n=0, groups=1, steps=len(TIMESTEPS), seed=0,
                  shared=False, exclude_bos=False, span=6.0) -> TensorQuant:
    rng = np.random.default_rng(seed)
    g = 1 if axis == "tensor" else groups
    lo = -rng.uniform(0.5, span / 2, (steps, g))
    hi = rng.uniform(0.5, span / 2, (steps, g))
    scale = ((hi - lo) / (2 ** bits - 1)).astype(np.float32)
    zero = np.clip(np.rint(-lo / scale), 0, 2 ** bits - 1)
    gm = None
    if axis != "tensor":
        gm = np.stack([rng.permutation(np.arange(n) % g) for _ in range(1 if shared else steps)])
    return TensorQuant(module, role, "uniform", bits, axis, scale, zero, gm, exclude_bos=exclude_bos)


def weight_entry(module, c_out, bits=8, seed=0) -> TensorQuant:
    rng = np.random.default_rng(seed)
    half = 2 ** (bits - 1)
    return TensorQuant(module, "weight", "uniform", bits, "out_channel",
                       rng.uniform(0.01, 0.05, c_out) * (8 / bits) ** 2, rng.integers(-half // 4, half // 4 + 1, c_out))


def fake_quant(x, scale, zero, bits):
    """The contract's uniform quantizer in float32 (numpy rounds half to even)."""
    x = x.astype(np.float32)
    q = np.clip(np.round(x / scale.astype(np.float32)) + zero, 0, 2 ** bits - 1)
    return ((q - zero) * scale).astype(np.float32)


def per_index(tq, step, n):
    """(scale, zero) broadcastable vectors of one step: [G] gathered through the group map, or scalars."""
    if tq.axis == "tensor":
        return tq.scale[step, 0], tq.zero_point[step, 0].astype(np.float32)
    gm = tq.group_map[0 if tq.group_map.shape[0] == 1 else step]
    return tq.scale[step][gm], tq.zero_point[step][gm].astype(np.float32)


def log_fake_quant(a, s, bits):
    r = (a / np.float32(s)).astype(np.float32)
    with np.errstate(divide="ignore"):
        q = np.clip(np.round(-np.log2(r.astype(np.float64))), 0, 2 ** bits - 1)
    return (np.float32(s) * np.exp2(-q)).astype(np.float32), q.astype(np.uint8)


def compile_model(model, recipe, passes):
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    ctx = PassContext(recipe, build_module_map(model))
    graph = run_passes(passes, graph, ctx)
    out = export_model(graph, ctx)
    onnx.checker.check_model(out, full_check=True)
    return out, ctx


def run(model, feed):
    return session(model, "reference").run(None, feed)


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def lowered_values(model, feed):
    """Run in a default onnxruntime session with every lowered input and accumulator exposed."""
    from dgq_compiler.runtime import run_all, with_outputs

    extra = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if node.op_type == "MatMulInteger" and "dgq.lowered_input" in meta:
            extra[node.output[0]] = onnx.TensorProto.INT32
            extra[meta["dgq.lowered_input"]] = onnx.TensorProto.FLOAT
    m = with_outputs(model, extra)
    values = run_all(session(m, "default"), feed)
    for node in model.graph.node:  # a batched split-K product: group g's accumulator is its slice g on the group axis
        meta = {p.key: p.value for p in node.metadata_props}
        if node.op_type == "MatMulInteger" and meta.get("dgq.group") == "batched":
            acc, axis = values[node.output[0]], int(meta["dgq.group_axis"])
            values.update({f"{node.output[0]}[{g}]": np.take(acc, g, axis=axis) for g in range(acc.shape[axis])})
    return values, m


def accumulator_nodes(model, module):
    """{group: (accumulator value name, float input name)}; group g of a batched product is `{output}[g]`
    (lowered_values adds those slices)."""
    out = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if node.op_type == "MatMulInteger" and meta.get("dgq.module") == module:
            if meta["dgq.group"] == "batched":
                out.update({g: (f"{node.output[0]}[{g}]", meta["dgq.lowered_input"])
                            for g in range(int(meta["dgq.group_count"]))})
            else:
                out[int(meta["dgq.group"])] = (node.output[0], meta["dgq.lowered_input"])
    return out


class Graphs:
    layers_model = staticmethod(layers_model)
    attention_model = staticmethod(attention_model)
    make_recipe = staticmethod(make_recipe)
    uniform_entry = staticmethod(uniform_entry)
    weight_entry = staticmethod(weight_entry)
    fake_quant = staticmethod(fake_quant)
    per_index = staticmethod(per_index)
    log_fake_quant = staticmethod(log_fake_quant)
    compile_model = staticmethod(compile_model)
    run = staticmethod(run)
    ops = staticmethod(ops)
    make_model = staticmethod(make_model)
    lowered_values = staticmethod(lowered_values)
    accumulator_nodes = staticmethod(accumulator_nodes)
    TIMESTEPS = TIMESTEPS


@pytest.fixture(scope="session")
def tg():
    """Helpers for tiny graphs: builders, recipes, references (see tests/passes/conftest.py)."""
    return Graphs
