"""Compile an fp32 UNet export + a recipe into a quantized ONNX graph (passes/), checked and written atomically.

Output folder: unet.onnx (+ unet.onnx.data when large or with static variants), encodings.json, compile.json,
and with `static=True` one graph per calibrated step, unet.step<NN>.onnx, all sharing unet.onnx.data.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable

GRAPH_NAME = "unet.onnx"
WEIGHTS_NAME = "unet.onnx.data"
MODULE_MAP_NAME = "module_map.json"
REPORT_NAME = "compile.json"
INLINE_LIMIT = 1_800_000_000  # bytes of initializers above which the graph gets an external weights file
# The fake-quant check, per calibrated step, at every quantization point: the graph's dequantized tensor vs the
# torch fake-quant functions on the same input with the recipe's parameters. Both are float32; they may differ
# only where x / s lands within float error of a rounding boundary: at most this fraction of elements, by 1 LSB.
DEFAULT_TOLERANCE = 1e-4
MAX_LSB = 1.0
POINT_CHECK_LIMIT = 300_000_000  # bytes of fp32 graph: above, the point check runs only when asked (memory)


@dataclass
class CompileReport:
    graph: str
    output: str
    steps: int
    timesteps: list
    tensors: list                 # rows: role, quantizer, bits, axis, count
    fp32_bytes: int               # the source graph (+ its weights file)
    compiled_bytes: int           # unet.onnx (+ unet.onnx.data)
    static_graphs: list = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    point_check: dict = field(default_factory=dict)       # timestep -> {mismatch_rate, max_lsb} vs fake-quant
    reference_error: dict = field(default_factory=dict)   # timestep -> end-to-end output error vs the torch UNet
    fp_difference: float | None = None                     # compiled vs fp32 graph (quantization noise)
    seconds: dict = field(default_factory=dict)

    @property
    def worst_error(self) -> float:
        """End-to-end: one boundary flip early in the UNet propagates, so this is informational."""
        return max(self.reference_error.values(), default=0.0)

    @property
    def worst_mismatch(self) -> tuple[float, float]:
        rates = [v["mismatch_rate"] for v in self.point_check.values()]
        lsbs = [v["max_lsb"] for v in self.point_check.values()]
        return max(rates, default=0.0), max(lsbs, default=0.0)


def resolve_graph(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / GRAPH_NAME
    if not path.is_file():
        raise DgqError(f"graph {str(path)!r} not found (expected an export folder or its unet.onnx)")
    if not (path.parent / MODULE_MAP_NAME).is_file():
        raise DgqError(f"no {MODULE_MAP_NAME} beside {str(path)!r}: compile the folder `dgq export` wrote")
    return path


def _folder_bytes(graph: Path) -> int:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    files = {t.external_data[0].value for t in model.graph.initializer if t.external_data}
    return graph.stat().st_size + sum((graph.parent / f).stat().st_size for f in files if (graph.parent / f).is_file())


def summary_rows(records) -> list:
    counts = Counter((r.role, r.quantizer, r.bits, r.axis + (" (bos split)" if r.bos_split else "")) for r in records)
    return [[role, quantizer, bits, axis, n] for (role, quantizer, bits, axis), n in sorted(counts.items())]


def graph_signature(model) -> list:
    import onnx

    def sig(vi):
        shape = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        return (vi.name, onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type), shape)

    return [("input",) + sig(v) for v in model.graph.input] + [("output",) + sig(v) for v in model.graph.output]


def example_feed(model, resolution, batch: int = 1, seed: int = 0, timestep: float = 500.0) -> dict:
    """Random inputs for the exported UNet's inputs (symbolic batch/height/width filled in)."""
    import numpy as np
    import onnx

    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.dim_value else None for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if vi.name == "timestep":
            feed[vi.name] = np.full([d or 1 for d in dims], timestep, dtype=dtype)
            continue
        if vi.name == "sample":
            dims = [dims[0] or batch, dims[1], resolution[0], resolution[1]]
        dims = [d if d is not None else batch for d in dims]
        if vi.name == "time_ids":
            feed[vi.name] = np.tile(np.array([[1024, 1024, 0, 0, 1024, 1024]], dtype=dtype), (dims[0], 1))
        else:
            feed[vi.name] = rng.standard_normal(dims).astype(dtype)
    return feed


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference_errors(compiled: Path, model, recipe, unet, batch: int = 2, seed: int = 0) -> dict:
    """Max |onnxruntime - torch fake-quant| / max(1, max|ref|) of the UNet output at every calibrated timestep."""
    import numpy as np
    import torch

    from dgq_compiler.fakequant import apply_recipe  # the calibration stage's torch reference

    session = _session(compiled)
    errors = {}
    unet = unet.float().eval()
    with apply_recipe(unet, recipe), torch.no_grad():
        for k, t in enumerate(recipe.timesteps):
            feed = example_feed(model, recipe.resolution, batch, seed + k, float(t))
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

    model = onnx.load(str(compiled), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    points = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "QuantizeLog") or not node.name.startswith("dgq/"):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        dq = node.name.rsplit("/", 1)[0] + ("/DequantizeLinear" if node.op_type == "QuantizeLinear" else "/DequantizeLog")
        dq_node = next(n for n in model.graph.node if n.name == dq)
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        points.append((meta, list(node.input), dq_node.output[0], axis))
    wanted = sorted({t for _m, inputs, out, _a in points for t in inputs + [out]})
    known = {o.name for o in model.graph.output}
    elem = {}
    for name in wanted:
        producer = producers.get(name)
        elem[name] = onnx.TensorProto.UINT8 if producer is not None and producer.op_type in (
            "QuantizeLinear", "QuantizeLog") else (onnx.TensorProto.UINT8 if "zero_point" in name else onnx.TensorProto.FLOAT)
    model.graph.output.extend([onnx.helper.make_tensor_value_info(n, elem[n], None) for n in wanted if n not in known])
    probe = compiled.parent / ".probe.onnx"
    onnx.save(model, str(probe))
    try:
        session = _session(probe)
        names = [o.name for o in session.get_outputs()]
        results = {}
        for k, t in enumerate(recipe.timesteps):
            step = recipe.step_index(t)
            feed = example_feed(model, recipe.resolution, batch, seed + k, float(t))
            values = dict(zip(names, session.run(None, feed)))
            bad = total = 0
            worst = 0.0
            for meta, inputs, out, axis in points:
                tq = recipe.tensors[(meta["dgq.module"], meta["dgq.role"])]
                x = torch.from_numpy(values[inputs[0]])
                got = values[out]
                if tq.quantizer == "log2":
                    peak = values[inputs[1]]
                    ref = quantize_log2(x, torch.tensor(peak), tq.bits).numpy()
                    with np.errstate(divide="ignore", invalid="ignore"):
                        lsb = np.abs(np.log2(np.where(ref > 0, got / ref, 1.0)))
                else:
                    scale, zero = values[inputs[1]], values[inputs[2]].astype(np.float32)
                    expected = tq.scale[step] if tq.group_map is None else \
                        tq.scale[step][tq.group_map[0 if tq.group_map.shape[0] == 1 else step]]
                    if not np.array_equal(np.ravel(scale), np.ravel(expected).astype(np.float32)):
                        raise DgqError(f"{meta['dgq.module']}/{meta['dgq.role']}: the graph's scales at step {step} "
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
    finally:
        probe.unlink(missing_ok=True)


def compile_graph(graph_path: str | Path, recipe_path, out_path: str | Path, static: bool = False, *,
                  overwrite: bool = False, reference_unet=None, tolerance: float = DEFAULT_TOLERANCE,
                  validate: bool = True, check_points: bool | None = None, progress=print) -> CompileReport:
    """fp32 export folder (or its unet.onnx) + recipe (path or Recipe) -> compiled folder `out_path`.

    Checks: onnx.checker full check, one onnxruntime run with the FP graph's input/output signature; the fake-quant
    point check at every calibrated step (default: graphs under 300 MB; `check_points` forces it on or off),
    failing when more than `tolerance` of the quantized elements differ or any by more than 1 LSB; and with
    `reference_unet` (the torch UNet the export came from) the end-to-end output error vs torch fake-quant.
    """
    import numpy as np
    import onnx

    from dgq_compiler.recipe import Recipe
    from passes.base import PassContext
    from passes.graph_io import export_model, load_graph, save_model
    from passes.make_static_variant import MakeStaticVariant
    from passes.manager import run_passes
    from passes.module_map import load_module_map
    from passes.pipeline import compile_passes

    seconds = {}
    start = time.perf_counter()
    graph_path = resolve_graph(graph_path)
    out_path = check_writable(out_path, overwrite=overwrite, kind="folder")
    recipe = recipe_path if isinstance(recipe_path, Recipe) else Recipe.load(recipe_path)
    fp_model = onnx.load(str(graph_path), load_external_data=False)
    fp_signature = graph_signature(fp_model)
    fp_bytes = _folder_bytes(graph_path)
    del fp_model
    progress(f"compiling {graph_path} with a {recipe.config.name} recipe ({len(recipe.tensors)} tensors, "
             f"{len(recipe.timesteps)} steps) ...")
    graph = load_graph(graph_path)
    ctx = PassContext(recipe, load_module_map(graph_path.parent / MODULE_MAP_NAME))
    graph = run_passes(compile_passes(), graph, ctx)
    metadata = {"dgq.compiled": "1", "dgq.recipe_config": json.dumps(recipe.config.to_dict(), sort_keys=True),
                "dgq.timesteps": json.dumps(list(recipe.timesteps)), "dgq.model": recipe.model_name}
    model = export_model(graph, ctx, metadata)
    seconds["passes"] = time.perf_counter() - start
    if graph_signature(model) != fp_signature:
        raise DgqError("internal: the compiled graph's inputs/outputs differ from the fp32 graph's")
    initializer_bytes = sum(t.ByteSize() for t in model.graph.initializer)
    external = static or initializer_bytes > INLINE_LIMIT
    report = CompileReport(graph=str(graph_path), output=str(out_path), steps=len(recipe.timesteps),
                           timesteps=list(recipe.timesteps), tensors=summary_rows(ctx.records),
                           fp32_bytes=fp_bytes, compiled_bytes=0, tolerance=tolerance)
    with atomic_path(out_path, directory=True) as tmp:
        start = time.perf_counter()
        compiled = tmp / GRAPH_NAME
        save_model(model, compiled, source_dir=graph_path.parent, weights_name=WEIGHTS_NAME if external else None)
        del model, graph
        for name, text in ctx.artifacts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        seconds["save"] = time.perf_counter() - start
        start = time.perf_counter()
        progress("checking the compiled graph (onnx.checker full check) ...")
        onnx.checker.check_model(str(compiled), full_check=True)
        seconds["check"] = time.perf_counter() - start
        header = onnx.load(str(compiled), load_external_data=False)
        if validate:
            start = time.perf_counter()
            progress("running the compiled graph in onnxruntime ...")
            feed = example_feed(header, recipe.resolution, batch=1, timestep=float(recipe.timesteps[0]))
            out = _session(compiled).run(None, feed)[0]
            if not np.all(np.isfinite(out)):
                raise DgqError("the compiled graph produced non-finite outputs in onnxruntime")
            fp_out = _session(graph_path).run(None, feed)[0] if fp_bytes < INLINE_LIMIT else None
            if fp_out is not None:
                report.fp_difference = float(np.max(np.abs(out - fp_out)) / max(1.0, float(np.max(np.abs(fp_out)))))
            seconds["onnxruntime"] = time.perf_counter() - start
        if check_points is None:
            check_points = validate and fp_bytes < POINT_CHECK_LIMIT
        if check_points:
            start = time.perf_counter()
            progress(f"checking every quantization point against torch fake-quant at {len(recipe.timesteps)} steps ...")
            report.point_check = point_errors(compiled, recipe)
            seconds["point_check"] = time.perf_counter() - start
            rate, lsb = report.worst_mismatch
            if rate > tolerance or lsb > MAX_LSB:
                raise DgqError(f"the compiled graph does not match the torch fake-quant reference: {rate:.3g} of the "
                               f"quantized elements differ (tolerance {tolerance:g}), by up to {lsb:g} LSB (max {MAX_LSB:g})")
        if reference_unet is not None:
            start = time.perf_counter()
            progress(f"comparing the output with the torch fake-quant UNet at {len(recipe.timesteps)} steps ...")
            report.reference_error = reference_errors(compiled, header, recipe, reference_unet)
            seconds["reference"] = time.perf_counter() - start
        if static:
            start = time.perf_counter()
            progress(f"writing {len(recipe.timesteps)} static variants ...")
            shared = load_graph(compiled)
            for step, t in enumerate(recipe.timesteps):
                variant = MakeStaticVariant(step).run(shared.copy(), ctx)
                name = f"unet.step{step:02d}.onnx"
                static_meta = {**metadata, "dgq.static_step": str(step), "dgq.static_timestep": str(t)}
                save_model(export_model(variant, ctx, static_meta), tmp / name, source_dir=tmp,
                           weights_name=WEIGHTS_NAME)
                onnx.checker.check_model(str(tmp / name), full_check=True)
                report.static_graphs.append(name)
            seconds["static"] = time.perf_counter() - start
        report.compiled_bytes = _folder_bytes(compiled)
        report.seconds = {k: round(v, 3) for k, v in seconds.items()}
        (tmp / REPORT_NAME).write_text(json.dumps(asdict(report), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return report
