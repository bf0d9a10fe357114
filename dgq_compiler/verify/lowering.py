"""Verify an integer-lowered graph (`dgq compile --target onnxruntime-cpu`): its int32 accumulators in a default
onnxruntime session against the simulator's integer kernels, bit for bit, at every lowered op.

Teacher-forced per op: the graph's float input x of the op, its uint8 codes and every accumulator
(MatMulInteger output) become graph outputs. From x and the step's parameters (encodings.json) the simulator's
quantizer gives the reference codes (q = clamp(rint(x / s) + z), float32 division, as simulator/ops/
quantize_linear.py), and from those codes and the graph's integer weights the simulator's exact integer
kernels (simulator.integer: int_matmul, int_conv2d, int_conv2d_pixel_groups) give the reference accumulators,
one per recipe group (a batched split-K product holds them as slices of one accumulator tensor: the contract's
LOWERED_GROUP_AXIS). Reported per op: codes compared / differing, accumulator elements compared / differing and
the largest difference. Exact means zero differing accumulators.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dgq_compiler.errors import DgqError


@dataclass
class OpResult:
    module: str
    kernel: str
    grouping: str
    accumulators: int
    codes: int = 0
    code_mismatches: int = 0
    elements: int = 0
    mismatches: int = 0
    max_abs_diff: int = 0


@dataclass
class LoweringVerifyReport:
    graph: str
    timesteps: list
    ops: list = field(default_factory=list)
    requantized: int = 0          # QLinear ops of the fast variant: requantized inside, not compared

    @property
    def exact(self) -> bool:
        return all(op.mismatches == 0 and op.code_mismatches == 0 for op in self.ops) and bool(self.ops)

    def to_json(self) -> str:
        return json.dumps({"graph": self.graph, "timesteps": self.timesteps, "exact": self.exact,
                           "requantized_ops": self.requantized,
                           "ops": [asdict(o) for o in self.ops]}, indent=1, sort_keys=True)


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise DgqError(f"{what} {str(path)!r} is missing: verify the folder that "
                       "`dgq compile --target onnxruntime-cpu` wrote")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DgqError(f"{what} {str(path)!r} is not readable JSON: {exc}") from None


def _reference_codes(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, axis: int | None) -> np.ndarray:
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    q = np.rint(x.astype(np.float32) / s) + np.asarray(zero, np.float32).reshape(shape)
    return np.clip(q, 0, 2 ** bits - 1).astype(np.int64)


def _step_params(enc: dict, step: int):
    """(per-group scale [G], zero [G], group map [N] or None) of one activation entry at one step."""
    scale = np.asarray(enc["scale"][step], np.float32)
    zero = np.asarray(enc["zero_point"][step], np.int64)
    gmap = enc.get("group_map")
    if gmap is None:
        return scale, zero, None
    return scale, zero, np.asarray(gmap[0 if len(gmap) == 1 else step], np.int64)


def reference_accumulators(row: dict, enc: dict, step: int, x: np.ndarray, w_int: np.ndarray):
    """-> (reference codes [as the op quantizes them], {group: int64 accumulators in the graph's layout})."""
    from simulator.integer import int_conv2d, int_conv2d_pixel_groups, int_matmul

    scale, zero, gmap = _step_params(enc, step)
    axis, bits = row["axis"], int(enc["bits"])
    conv = row["op"] == "Conv"
    if axis == "tensor":
        codes = _reference_codes(x, scale, zero, bits, None)
        ints = codes - int(zero[0])
    elif axis == "channel":
        ch = 1 if conv else x.ndim - 1
        codes = _reference_codes(x, scale[gmap], zero[gmap], bits, ch)
        shape = [1] * x.ndim
        shape[ch] = -1
        ints = codes - zero[gmap].reshape(shape)
    else:
        flat = x.reshape(x.shape[0], x.shape[1], -1) if conv else x
        codes = _reference_codes(flat, scale[gmap], zero[gmap], bits, 2 if conv else 1)
        ints = (codes - zero[gmap].reshape((1, 1, -1) if conv else (1, -1, 1))).reshape(x.shape)
        codes = codes.reshape(x.shape)
    w_max = int(np.abs(w_int).max()) if w_int.size else 0
    x_max = 2 ** bits
    out = {}
    if not conv:
        if axis == "channel":
            for g in range(len(scale)):
                idx = np.nonzero(gmap == g)[0]
                out[g] = np.asarray(int_matmul(ints[..., idx], w_int[idx], x_max, w_max)).astype(np.int64)
        else:
            out[-1] = np.asarray(int_matmul(ints, w_int, x_max, w_max)).astype(np.int64)
        return codes, out
    strides, pads, dil = row["strides"], row["pads"], row["dilations"]
    if axis == "pixel" and row["accumulators"] > 1:
        acc = int_conv2d_pixel_groups(ints, w_int, gmap.reshape(x.shape[2], x.shape[3]), len(scale), x_max, w_max,
                                      strides, pads, dil)
        return codes, {g: np.asarray(acc[g]).astype(np.int64).transpose(0, 2, 3, 1) for g in range(len(scale))}
    if axis == "channel":
        for g in range(len(scale)):
            idx = np.nonzero(gmap == g)[0]
            acc = int_conv2d(ints[:, idx], w_int[:, idx], x_max, w_max, strides, pads, dil)
            out[g] = np.asarray(acc).astype(np.int64).transpose(0, 2, 3, 1)
        return codes, out
    acc = np.asarray(int_conv2d(ints, w_int, x_max, w_max, strides, pads, dil)).astype(np.int64)
    if axis == "pixel":  # 1x1 per-row product: [B, H*W, Co]
        out[-1] = acc.reshape(acc.shape[0], acc.shape[1], -1).transpose(0, 2, 1)
    else:
        out[-1] = acc.transpose(0, 2, 3, 1)
    return codes, out


def tap_group_sums(row: dict, taps: dict, gmap: np.ndarray, size: tuple, n_groups: int) -> dict:
    """Per-tap accumulators {t: [B, Ho, Wo, Co]} -> per-pixel-group accumulators {g: ...}: tap t at output o adds to
    the group of the input pixel it reads (padding reads group 0 and adds 0)."""
    from simulator.integer import conv_windows

    kh, kw = row["kernel_shape"]
    gid = gmap.reshape(1, 1, *size)
    windows = dict(conv_windows(gid, (kh, kw), row["strides"], row["pads"], row["dilations"]))
    out = {}
    for t, acc in taps.items():
        group_of = windows[divmod(t, kw)][0, 0][None, :, :, None]          # [1, Ho, Wo, 1]
        for g in range(n_groups):
            part = np.where(group_of == g, acc.astype(np.int64), 0)
            out[g] = part if g not in out else out[g] + part
    return out


def _weight_ints(row: dict, init: dict, zero: np.ndarray) -> np.ndarray:
    if "per-tap" in row["kernel"]:  # one [C + r, Co] matrix per tap: w0, w1, ...
        base = row["weight"][:-1]
        c = row["in_channels"]
        kh, kw = row["kernel_shape"]
        w = np.stack([init[f"{base}{t}"][:c] for t in range(kh * kw)]).reshape(kh, kw, c, -1).transpose(3, 2, 0, 1)
        return w.astype(np.int64) - zero.astype(np.int64)[:, None, None, None]
    w = init[row["weight"]]
    if row["op"] != "Conv":
        k = row["in_features"]
        w = w.reshape(-1, w.shape[-1])[:k]
        return w.astype(np.int64) - zero.astype(np.int64)[None, :]
    kh, kw = row["kernel_shape"]
    c = row["in_channels"]
    co = w.shape[-1]
    if w.ndim == 3:  # channel groups: [taps, C + 1, Co] (the last channel pads empty groups)
        w = w[:, :c]
    w = w.reshape(-1, co)[: kh * kw * c].reshape(kh, kw, c, co).transpose(3, 2, 0, 1)
    return w.astype(np.int64) - zero.astype(np.int64)[:, None, None, None]


def _unpadded(got: np.ndarray, shape: tuple, row: dict) -> np.ndarray:
    """The graph's codes of the op's input: a batched conv quantizes its zero-padded input (a padded pixel's code is
    then its channel's zero point, as the convolution's zero padding needs), so its codes are cropped."""
    if got.shape == tuple(shape) or row["op"] != "Conv" or got.ndim != 4:
        return got.reshape(shape)
    top, left = row["pads"][0], row["pads"][1]
    return got[:, :, top: top + shape[2], left: left + shape[3]]


@dataclass
class OpenedLowering:
    """A lowered graph read for verification, with its session (which exposes x, codes and accumulators): what
    `verify_lowered` needs before it runs. Opening is mostly the session's creation (seconds for a channel-grouped
    graph), which onnxruntime does without the GIL, so a caller can open one beside other work (report/deploy.py)."""
    graph: Path
    model: object
    rows: list
    requantized: int
    by_module: dict
    schedule: np.ndarray
    init: dict
    accs: dict
    inputs: dict
    code_names: dict
    session: object


def open_lowered(graph: str | Path, modules=None) -> OpenedLowering:
    """Read a lowered graph's reports and weights and open its session with x, codes and accumulators as outputs
    (`modules`: only those ops)."""
    import onnx
    from onnx import numpy_helper

    from dgq_compiler import runtime
    from passes.contract import (GROUPS_BATCHED, LOWER_ROLE, LOWERED_GROUP, LOWERED_GROUP_AXIS, LOWERED_GROUP_COUNT,
                                 LOWERED_INPUT, LOWERING_REPORT, META_MODULE, node_prefix)

    graph = runtime.resolve_graph(graph, "a compiled folder or its unet.onnx")
    all_rows = _read_json(graph.parent / LOWERING_REPORT, "lowering report")
    rows = [r for r in all_rows if r["accumulators"] > 0]  # QLinear ops (fast variant): no accumulator to compare
    encodings = _read_json(graph.parent / "encodings.json", "encodings file")
    by_module = {e["module"]: e for e in encodings["activations"] if e["role"] == "input"}
    schedule = np.asarray(encodings["timesteps"], np.float32)
    model = onnx.load(str(graph))
    if modules is not None:
        rows = [r for r in rows if r["module"] in modules]
    weights = {r["weight"] for r in rows} | {f"{r['weight'][:-1]}{t}" for r in rows if "per-tap" in r["kernel"]
                                                for t in range(r["kernel_shape"][0] * r["kernel_shape"][1])}
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name in weights or t.name.endswith("/w_zero_point")}
    accs, inputs, code_names = {}, {}, {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if node.op_type == "MatMulInteger" and meta.get(META_MODULE) in {r["module"] for r in rows}:
            group = meta[LOWERED_GROUP]
            groups = range(int(meta[LOWERED_GROUP_COUNT])) if group == GROUPS_BATCHED else [int(group)]
            axis = int(meta.get(LOWERED_GROUP_AXIS, 0))
            for g in groups:  # a batched product holds group g's accumulator as its slice g on the group axis
                at = (g, axis) if group == GROUPS_BATCHED else None
                accs.setdefault(meta[META_MODULE], {})[g] = (node.output[0], at)
            inputs[meta[META_MODULE]] = meta[LOWERED_INPUT]
    for node in model.graph.node:
        for r in rows:
            prefix = node_prefix(r["module"], LOWER_ROLE) + "/"
            if node.name in (prefix + "QuantizeLinear", prefix + "Clip"):
                code_names[r["module"]] = node.output[0]  # the Clip (b < 8) comes after the Q: it wins
    acc_names = {n for a in accs.values() for n, _ in a.values()}
    wanted = sorted(set(inputs.values()) | set(code_names.values()) | acc_names)
    types = {**{n: onnx.TensorProto.FLOAT for n in inputs.values()},
             **{n: onnx.TensorProto.UINT8 for n in code_names.values()},
             **{n: onnx.TensorProto.INT32 for n in acc_names}}
    session = runtime.session(runtime.with_outputs(model, {n: types[n] for n in wanted}), "default",
                              base_dir=graph.parent)
    return OpenedLowering(graph, model, rows, len(all_rows) - len(rows), by_module, schedule, init, accs, inputs,
                          code_names, session)


def verify_lowered(graph: str | Path | OpenedLowering, timesteps=None, batch: int = 2, seed: int = 0,
                   latent_size: int | None = None, modules=None, progress=None) -> LoweringVerifyReport:
    """`graph`: a compiled folder or its unet.onnx, or one already opened (`open_lowered`, `modules` then ignored)."""
    from dgq_compiler import runtime
    from dgq_compiler.verify.integer import latent_size_of
    from passes.contract import LOWER_ROLE, node_prefix

    opened = graph if isinstance(graph, OpenedLowering) else open_lowered(graph, modules)
    rows, by_module, schedule, init = opened.rows, opened.by_module, opened.schedule, opened.init
    accs, inputs, code_names, model = opened.accs, opened.inputs, opened.code_names, opened.model
    size = latent_size_of(model, opened.graph, latent_size)
    resolution = (size, size)
    if not timesteps:  # the first, middle and last calibrated step
        timesteps = [int(schedule[0]), int(schedule[len(schedule) // 2]), int(schedule[-1])]
    results = {r["module"]: OpResult(r["module"], r["kernel"], r["axis"], r["accumulators"]) for r in rows}
    for k, t in enumerate(timesteps):
        step = int(np.argmin(np.abs(schedule - np.float32(t))))
        values = runtime.run_all(opened.session, runtime.example_feeds(model, resolution, batch, seed + k, float(t)))
        for r in rows:
            m = r["module"]
            res = results[m]
            enc = by_module[m]
            zero_w = init[node_prefix(m, LOWER_ROLE) + "/w_zero_point"]
            zero_w = zero_w.reshape(-1, zero_w.shape[-1])[0]  # [N], or [G, 1, N] for a batched product
            codes, ref = reference_accumulators(r, enc, step, values[inputs[m]], _weight_ints(r, init, zero_w))
            got_codes = _unpadded(values[code_names[m]], codes.shape, r).astype(np.int64)
            res.codes += codes.size
            res.code_mismatches += int(np.count_nonzero(got_codes != codes))
            got_accs = {g: values[name] if at is None else np.take(values[name], at[0], axis=at[1])
                        for g, (name, at) in accs[m].items()}
            if "per-tap" in r["kernel"]:
                x = values[inputs[m]]
                gmap = _step_params(enc, step)[2]
                got_accs = tap_group_sums(r, got_accs, gmap, x.shape[2:], len(ref))
            for g, got in got_accs.items():
                got = got.astype(np.int64)
                want = ref[g].reshape(got.shape)
                diff = np.abs(got - want)
                res.elements += diff.size
                res.mismatches += int(np.count_nonzero(diff))
                res.max_abs_diff = max(res.max_abs_diff, int(diff.max()) if diff.size else 0)
        if progress:
            progress(k + 1)
    return LoweringVerifyReport(str(opened.graph), [float(t) for t in timesteps], list(results.values()),
                                requantized=opened.requantized)
