"""Hand-made compiled-graph fragments that follow the compiled-graph contract (notes: the step index
from the timestep, [T, G] scale/zero-point tables gathered per step, group maps, QuantizeLinear ->
(Clip) -> DequantizeLinear, integer weights + DequantizeLinear, the dgq log quantizer).

Exposed as the `qdq` fixture: qdq.linear(...), qdq.conv(...), qdq.attention(...) return
(onnx.ModelProto, feeds) with random but sensible quantization parameters.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

T = 3  # calibrated steps
SCHEDULE = np.array([900.0, 500.0, 100.0], np.float32)


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.functions = [], [], []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, name, array, dtype=None):
        if dtype in (TensorProto.INT4, TensorProto.UINT4):
            t = helper.make_tensor(name, dtype, array.shape, array.reshape(-1).tolist())
        else:
            t = numpy_helper.from_array(np.asarray(array), name)
        self.inits.append(t)
        return name

    def node(self, op, inputs, n_out=1, domain="", **attrs):
        outs = [self.name(f"{op}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(f"/{op}"), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, array):
        return self.init(self.name("c"), np.asarray(array))

    def step_index(self):
        sched = self.init("dgq.schedule", SCHEDULE)
        d = self.node("Sub", [sched, "timestep"])
        a = self.node("Abs", [d])
        self.nodes.append(helper.make_node("ArgMin", [a], ["dgq.step_index"], name="dgq/step/ArgMin", axis=0,
                                           keepdims=1, select_last_index=0))
        return "dgq.step_index"

    def act_qdq(self, x, data, module, axis, groups, bits, axis_index, step):
        """Uniform QDQ of tensor x (numpy `data` used to pick ranges) along axis_index with `groups`."""
        n_axis = data.shape[axis_index] if axis != "tensor" else 1
        g = 1 if axis == "tensor" else groups
        gmap = np.stack([self.rng.permutation(np.arange(n_axis) % g) for _ in range(T)]).astype(np.int64)
        scales = np.zeros((T, g), np.float32)
        zps = np.zeros((T, g), np.uint8)
        levels = (1 << bits) - 1
        moved = np.moveaxis(data, axis_index, 0).reshape(n_axis, -1) if axis != "tensor" else data.reshape(1, -1)
        for t in range(T):
            for k in range(g):
                members = moved[gmap[t] == k] if axis != "tensor" else moved
                lo, hi = min(float(members.min()), 0.0), max(float(members.max()), 0.0)
                lo, hi = lo * self.rng.uniform(0.7, 1.1), hi * self.rng.uniform(0.7, 1.1)
                s = max(hi - lo, 1e-3) / levels
                scales[t, k] = s
                zps[t, k] = int(np.clip(np.rint(-lo / s), 0, levels))
        st = self.init(f"{module}/scale_table", scales)
        zt = self.init(f"{module}/zero_point_table", zps)
        s_row = self.node("Gather", [st, step], axis=0)
        z_row = self.node("Gather", [zt, step], axis=0)
        flat = self.const(np.array([-1], np.int64))
        if axis == "tensor":
            scalar = self.const(np.array([], np.int64))
            s_vec, z_vec = self.node("Reshape", [s_row, scalar]), self.node("Reshape", [z_row, scalar])
            qattrs = {}
        else:
            gm = self.init(f"{module}/group_map", gmap)
            m_vec = self.node("Reshape", [self.node("Gather", [gm, step], axis=0), flat])
            s_vec = self.node("Gather", [self.node("Reshape", [s_row, flat]), m_vec], axis=0)
            z_vec = self.node("Gather", [self.node("Reshape", [z_row, flat]), m_vec], axis=0)
            qattrs = {"axis": axis_index}
        q = self.node("QuantizeLinear", [x, s_vec, z_vec], **qattrs)
        mod, _, role = module.rpartition("/")
        for key, value in {"dgq.module": mod, "dgq.role": role, "dgq.bits": str(bits), "dgq.axis": axis}.items():
            self.nodes[-1].metadata_props.add(key=key, value=value)
        if bits < 8:
            q = self.node("Clip", [q, self.const(np.array(0, np.uint8)), self.const(np.array(levels, np.uint8))])
        return self.node("DequantizeLinear", [q, s_vec, z_vec], **qattrs)

    def weight_dq(self, w, axis, bits):
        """Per-output-channel asymmetric signed integer weights (INT4 initializer for 4 bits)."""
        lo_code, hi_code = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        lo, hi = moved.min(1), moved.max(1)
        s = ((hi - lo) / (hi_code - lo_code)).astype(np.float32)
        z = np.clip(np.rint(lo_code - lo / s), lo_code, hi_code).astype(np.int8)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / s.reshape(shape)) + z.reshape(shape), lo_code, hi_code).astype(np.int8)
        dtype = TensorProto.INT4 if bits == 4 else None
        qn = self.init(self.name("w_quantized"), q, dtype)
        sn = self.init(self.name("w_scale"), s)
        zn = self.init(self.name("w_zero_point"), z, dtype)
        return self.node("DequantizeLinear", [qn, sn, zn], axis=axis)

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, "qdq", inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("dgq", 1)] if self.functions else [])
        m = helper.make_model(graph, opset_imports=opsets, functions=self.functions)
        m.ir_version = 10
        onnx.checker.check_model(m)
        return m


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


class QDQGraphs:
    @staticmethod
    def linear(axis="channel", groups=4, bits=8, w_bits=8, b=2, n=12, c=16, o=8, seed=0, outliers=True):
        """x [b, n, c] -> QDQ(axis groups) -> MatMul(DQ(int W [c, o], axis=1)) -> Add bias."""
        bd = _Builder(seed)
        x = bd.rng.standard_normal((b, n, c)).astype(np.float32)
        if outliers:
            x[:, :, : c // 8 + 1] *= 6.0
            x[:, : n // 6 + 1] += 3.0
        step = bd.step_index()
        xq = bd.act_qdq("x", x, "lin/input", axis, groups, bits, 2 if axis == "channel" else 1, step)
        w = bd.rng.standard_normal((c, o)).astype(np.float32) * 0.2
        y = bd.node("MatMul", [xq, bd.weight_dq(w, 1, w_bits)])
        bd.nodes.append(helper.make_node("Add", [y, bd.init("bias", bd.rng.standard_normal(o).astype(np.float32))],
                                         ["y"], name="/lin/Add"))
        m = bd.model([_vi("x", [b, n, c]), _vi("timestep", [1])], [_vi("y", [b, n, o])])
        return m, {"x": x, "timestep": np.array([480.0], np.float32)}

    @staticmethod
    def conv(axis="pixel", groups=4, bits=8, w_bits=8, b=2, c=8, h=6, w=6, o=5, k=3, stride=1, seed=0):
        """x [b, c, h, w] -> QDQ (pixel groups via Reshape [b, c, h*w], axis 2) -> Conv(DQ(int W)) + bias."""
        bd = _Builder(seed)
        x = bd.rng.standard_normal((b, c, h, w)).astype(np.float32)
        x[:, 0] *= 5.0
        x[:, :, 0, :] += 2.0
        step = bd.step_index()
        if axis == "pixel":
            flat = bd.node("Reshape", ["x", bd.const(np.array([b, c, h * w], np.int64))])
            xq = bd.act_qdq(flat, x.reshape(b, c, h * w), "conv/input", axis, groups, bits, 2, step)
            xq = bd.node("Reshape", [xq, bd.const(np.array([b, c, h, w], np.int64))])
        else:
            xq = bd.act_qdq("x", x, "conv/input", axis, groups, bits, 1, step)
        wt = bd.rng.standard_normal((o, c, k, k)).astype(np.float32) * 0.2
        bias = bd.init("bias", bd.rng.standard_normal(o).astype(np.float32))
        pad = k // 2
        bd.nodes.append(helper.make_node("Conv", [xq, bd.weight_dq(wt, 0, w_bits), bias], ["y"], name="/conv/Conv",
                                         kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride]))
        ho = (h + 2 * pad - k) // stride + 1
        wo = (w + 2 * pad - k) // stride + 1
        m = bd.model([_vi("x", [b, c, h, w]), _vi("timestep", [1])], [_vi("y", [b, o, ho, wo])])
        return m, {"x": x, "timestep": np.array([120.0], np.float32)}

    @staticmethod
    def attention(axis="channel", groups=2, bits=8, log_bits=4, heads=2, b=2, n=10, d=4, seed=0, split_bos=False):
        """q, k, v [b, n, heads*d] quantized (channel or token groups) -> head split -> QK^T * scale ->
        Softmax -> dgq.QuantizeLog/DequantizeLog (S = ReduceMax) -> A.V -> merge heads.
        split_bos: k/v row 0 and probability column 0 stay FP; A.V = A[..., :1] @ V[:, :1] + Qlog(A[..., 1:]) @ V[:, 1:]."""
        from passes.log_functions import log_functions

        bd = _Builder(seed)
        bd.functions = log_functions()
        c = heads * d
        data = {r: bd.rng.standard_normal((b, n, c)).astype(np.float32) for r in "qkv"}
        data["q"][:, :, 0] *= 4.0
        step = bd.step_index()
        ax_index = 2 if axis == "channel" else 1

        def quant(role):
            if split_bos and role in "kv":
                row0 = bd.node("Slice", [role, bd.const(np.array([0], np.int64)), bd.const(np.array([1], np.int64)),
                                         bd.const(np.array([1], np.int64))])
                rest = bd.node("Slice", [role, bd.const(np.array([1], np.int64)), bd.const(np.array([n], np.int64)),
                                         bd.const(np.array([1], np.int64))])
                rq = bd.act_qdq(rest, data[role][:, 1:], f"attn/{role}", axis, groups, bits, ax_index, step)
                return bd.node("Concat", [row0, rq], axis=1)
            return bd.act_qdq(role, data[role], f"attn/{role}", axis, groups, bits, ax_index, step)

        def heads_split(t):
            r = bd.node("Reshape", [t, bd.const(np.array([b, n, heads, d], np.int64))])
            tr = bd.node("Transpose", [r], perm=[0, 2, 1, 3])
            return bd.node("Reshape", [tr, bd.const(np.array([b * heads, n, d], np.int64))])

        q, k, v = (heads_split(quant(r)) for r in "qkv")
        kt = bd.node("Transpose", [k], perm=[0, 2, 1])
        scores = bd.node("Mul", [bd.node("MatMul", [q, kt]), bd.const(np.array(d ** -0.5, np.float32))])
        probs = bd.node("Softmax", [scores], axis=-1)

        def qlog(p):
            s = bd.node("ReduceMax", [p], keepdims=0)
            codes = bd.node("QuantizeLog", [p, s], domain="dgq", bits=log_bits)
            for key, value in {"dgq.module": "attn", "dgq.role": "attn_probs", "dgq.bits": str(log_bits),
                               "dgq.axis": "tensor", "dgq.quantizer": "log2"}.items():
                bd.nodes[-1].metadata_props.add(key=key, value=value)
            return bd.node("DequantizeLog", [codes, s], domain="dgq")

        if split_bos:
            one, big = bd.const(np.array([1], np.int64)), bd.const(np.array([n], np.int64))
            zero, ax2, ax1 = bd.const(np.array([0], np.int64)), bd.const(np.array([2], np.int64)), bd.const(np.array([1], np.int64))
            a0 = bd.node("Slice", [probs, zero, one, ax2])
            a1 = qlog(bd.node("Slice", [probs, one, big, ax2]))
            v0 = bd.node("Slice", [v, zero, one, ax1])
            v1 = bd.node("Slice", [v, one, big, ax1])
            av = bd.node("Add", [bd.node("MatMul", [a0, v0]), bd.node("MatMul", [a1, v1])])
            bd.nodes[-1].name = "dgq/attn/split/Add"
        else:
            av = bd.node("MatMul", [qlog(probs), v])
        r = bd.node("Reshape", [av, bd.const(np.array([b, heads, n, d], np.int64))])
        tr = bd.node("Transpose", [r], perm=[0, 2, 1, 3])
        bd.nodes.append(helper.make_node("Reshape", [tr, bd.const(np.array([b, n, c], np.int64))], ["y"], name="/attn/out"))
        m = bd.model([_vi(r_, [b, n, c]) for r_ in "qkv"] + [_vi("timestep", [1])], [_vi("y", [b, n, c])])
        feeds = dict(data)
        feeds["timestep"] = np.array([700.0], np.float32)
        return m, feeds


@pytest.fixture(scope="session")
def qdq():
    return QDQGraphs
