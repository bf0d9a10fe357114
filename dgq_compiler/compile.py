"""Compile an fp32 UNet export + a recipe into a quantized ONNX graph (passes/), checked and written atomically.

Output folder: unet.onnx (+ unet.onnx.data when large or with static variants), encodings.json, compile.json,
and with `static=True` one graph per calibrated step, unet.step<NN>.onnx, all sharing unet.onnx.data.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgq_compiler import runtime
from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable, relative_path, report_json
from dgq_compiler.verify.fakequant import DEFAULT_TOLERANCE, MAX_LSB, point_errors, reference_errors
from passes.contract import LOWERING_REPORT

GRAPH_NAME = runtime.GRAPH_NAME
WEIGHTS_NAME = "unet.onnx.data"
MODULE_MAP_NAME = "module_map.json"
REPORT_NAME = "compile.json"
INLINE_LIMIT = 1_800_000_000  # bytes of initializers above which the graph gets an external weights file
# targets compiled by lowering to integer ops (passes/lower_pipeline.py); -fast: QLinear ops where per tensor
LOWERING_TARGETS = ("onnxruntime-cpu", "onnxruntime-cpu-fast")
POINT_CHECK_LIMIT = 300_000_000  # bytes of fp32 graph: above, the point check runs only when asked (memory)


@dataclass
class CompileReport:
    graph: str
    output: str
    steps: int
    timesteps: list
    latent_size: int              # the recipe's calibrated latent height/width (verify, check, cost default to it)
    tensors: list                 # rows: role, quantizer, bits, axis, count
    fp32_bytes: int               # the source graph (+ its weights file)
    compiled_bytes: int           # unet.onnx (+ unet.onnx.data)
    static_graphs: list = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    point_check: dict = field(default_factory=dict)       # timestep -> {mismatch_rate, max_lsb} vs fake-quant
    reference_error: dict = field(default_factory=dict)   # timestep -> end-to-end output error vs the torch UNet
    fp_difference: float | None = None                     # compiled vs fp32 graph (quantization noise)
    seconds: dict = field(default_factory=dict)
    target: str | None = None                              # compiled for this target (adapt.py; lowering targets)
    gave_up: list = field(default_factory=list)            # rows: what, tensors, before, after
    kernels: list = field(default_factory=list)            # lowering: rows kernel, ops, accumulators
    fast_extra_error: dict = field(default_factory=dict)   # -fast: timestep -> max|fast - exact| / max|exact|

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
    """The fp32 graph of an export folder (or its unet.onnx), with the module map beside it."""
    from dgq_compiler.runtime import resolve_graph as resolve

    path = resolve(path, "an export folder or its unet.onnx")
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


def kernel_rows(lowering_json: str | None) -> list:
    """The lowering report (one row per lowered op) counted by kernel: [kernel, ops, accumulators]."""
    if not lowering_json:
        return []
    counts: dict = {}
    for row in json.loads(lowering_json):
        ops, accs = counts.get(row["kernel"], (0, 0))
        counts[row["kernel"]] = (ops + 1, accs + row["accumulators"])
    return [[kernel, ops, accs] for kernel, (ops, accs) in sorted(counts.items())]


def graph_signature(model) -> list:
    import onnx

    def sig(vi):
        shape = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        return (vi.name, onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type), shape)

    return [("input",) + sig(v) for v in model.graph.input] + [("output",) + sig(v) for v in model.graph.output]


@dataclass(frozen=True)
class CompileOptions:
    """How to compile and what to check (see compile_graph)."""
    static: bool = False                # also one graph per calibrated step with constant scales
    overwrite: bool = False
    tolerance: float = DEFAULT_TOLERANCE  # share of quantized elements allowed to differ from fake-quant by <= 1 LSB
    validate: bool = True               # run the compiled and the fp32 graph in onnxruntime
    check_points: bool | None = None    # the fake-quant point check; None: when validating graphs under 300 MB
    paths_relative_to: str | None = None  # write compile.json's paths relative to this folder (a report folder)
    target: str | None = None           # adapt the recipe to this target (preset or file); static if it needs
                                        # it; onnxruntime-cpu[-fast] (LOWERING_TARGETS) also lower to integer ops


def compile_graph(graph_path: str | Path, recipe, out_path: str | Path, options: CompileOptions | None = None,
                  **kwargs) -> CompileReport:
    """`_compile_export` on a `dgq export` folder, or on a UNet graph from another exporter (optimum-cli's
    unet/model.onnx, an optimum pipeline folder, an .onnx file) imported first (dgq_compiler/import_graph.py)."""
    import tempfile

    from dgq_compiler.import_graph import OPSET, find_unet_graph, import_unet_graph

    passed = {k: kwargs.pop(k) for k in ("reference_unet", "progress") if k in kwargs}
    if options is not None and kwargs:
        raise TypeError("compile_graph: give options or option keywords, not both")
    options = options or CompileOptions(**kwargs)
    found = find_unet_graph(graph_path)
    if (found.parent / MODULE_MAP_NAME).is_file():
        return _compile_export(found, recipe, out_path, options, **passed)
    check_writable(out_path, overwrite=options.overwrite, kind="folder")  # before the import's work
    with tempfile.TemporaryDirectory(prefix="dgq-import-") as work:
        passed.get("progress", print)(f"importing {found}: module map from its node scopes, opset {OPSET} ...")
        return _compile_export(import_unet_graph(found, Path(work)), recipe, out_path, options, **passed)


def _compile_export(graph_path: str | Path, recipe, out_path: str | Path, options: CompileOptions | None = None, *,
                    reference_unet=None, progress=print, **option_values) -> CompileReport:
    """fp32 export folder (or its unet.onnx) + recipe (path or Recipe) -> compiled folder `out_path`.

    Checks: onnx.checker full check, one onnxruntime run with the FP graph's input/output signature; the fake-quant
    point check at every calibrated step (verify/fakequant.py), failing when more than `tolerance` of the
    quantized elements differ or any by more than 1 LSB; and with `reference_unet` (the torch UNet the export
    came from) the end-to-end output error vs torch fake-quant. Options come as `options` or as its fields.
    `target` onnxruntime-cpu: every quantized Conv/Linear lowered to integer ops (passes/lower_*.py); the point
    check is replaced by `dgq verify --target onnxruntime-cpu`, which compares the int32 accumulators.
    """
    import onnx

    from dgq_compiler.recipe import Recipe
    from dgq_compiler.timing import StageTimer
    from passes.graph_io import save_model

    if options is not None and option_values:
        raise TypeError("compile_graph: give options or option keywords, not both")
    options = options or CompileOptions(**option_values)
    lowering = options.target in LOWERING_TARGETS
    if lowering and options.static:
        raise DgqError(f"--static and --target {options.target} cannot be combined (static variants are QDQ graphs)")
    timer = StageTimer(progress)
    graph_path = resolve_graph(graph_path)
    out_path = check_writable(out_path, overwrite=options.overwrite, kind="folder")
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    gave_up = []
    if options.target is not None:
        from dataclasses import replace

        from dgq_compiler.adapt import adapt_recipe, kxk_conv_modules, needs_static

        adapt_to = "onnxruntime-cpu" if lowering else options.target  # -fast: the same target, other kernels
        recipe, gave_up = adapt_recipe(recipe, adapt_to, kxk_conv_modules(graph_path))
        options = replace(options, static=options.static or needs_static(adapt_to))
    with timer.stage("passes"):
        fp_model = onnx.load(str(graph_path), load_external_data=False)
        fp_signature = graph_signature(fp_model)
        fp_bytes = _folder_bytes(graph_path)
        del fp_model
        progress(f"compiling {graph_path} with a {recipe.config.name} recipe ({len(recipe.tensors)} tensors, "
                 f"{len(recipe.timesteps)} steps) ...")
        model, ctx, metadata, fast_error = _compiled_model(graph_path, recipe,
                                                            options.target if lowering else None, progress)
    if graph_signature(model) != fp_signature:
        raise DgqError("internal: the compiled graph's inputs/outputs differ from the fp32 graph's")
    initializer_bytes = sum(t.ByteSize() for t in model.graph.initializer)
    external = options.static or initializer_bytes > INLINE_LIMIT
    shown = (lambda p: str(p)) if options.paths_relative_to is None else \
        (lambda p: os.path.relpath(p, options.paths_relative_to))
    report = CompileReport(graph=shown(graph_path), output=shown(out_path), steps=len(recipe.timesteps),
                           timesteps=list(recipe.timesteps), latent_size=int(recipe.resolution[0]),
                           tensors=summary_rows(ctx.records),
                           fp32_bytes=fp_bytes, compiled_bytes=0, tolerance=options.tolerance,
                           target=options.target, gave_up=[list(asdict(g).values()) for g in gave_up],
                           kernels=kernel_rows(ctx.artifacts.get(LOWERING_REPORT)), fast_extra_error=fast_error)
    with atomic_path(out_path, directory=True) as tmp:
        compiled = tmp / GRAPH_NAME
        with timer.stage("save"):
            save_model(model, compiled, source_dir=graph_path.parent, weights_name=WEIGHTS_NAME if external else None)
            del model
            for name, text in ctx.artifacts.items():
                (tmp / name).write_text(text, encoding="utf-8")
        with timer.stage("check", "checking the compiled graph (onnx.checker full check) ..."):
            onnx.checker.check_model(str(compiled), full_check=True)
        header = onnx.load(str(compiled), load_external_data=False)
        if options.validate:
            with timer.stage("onnxruntime", "running the compiled graph in onnxruntime ..."):
                report.fp_difference = _run_in_onnxruntime(compiled, graph_path, header, recipe, fp_bytes)
        check_points = options.check_points
        if check_points is None:
            check_points = options.validate and fp_bytes < POINT_CHECK_LIMIT
        if lowering:
            check_points = False  # lowered graphs: dgq verify compares their accumulators instead
        if check_points:
            with timer.stage("point_check", "checking every quantization point against torch fake-quant at "
                                            f"{len(recipe.timesteps)} steps ..."):
                report.point_check = point_errors(compiled, recipe)
            rate, lsb = report.worst_mismatch
            if rate > options.tolerance or lsb > MAX_LSB:
                raise DgqError(f"the compiled graph does not match the torch fake-quant reference: {rate:.3g} of the "
                               f"quantized elements differ (tolerance {options.tolerance:g}), by up to {lsb:g} LSB "
                               f"(max {MAX_LSB:g})")
        if reference_unet is not None:
            with timer.stage("reference", "comparing the output with the torch fake-quant UNet at "
                                          f"{len(recipe.timesteps)} steps ..."):
                report.reference_error = reference_errors(compiled, header, recipe, reference_unet)
        if options.static:
            with timer.stage("static", f"writing {len(recipe.timesteps)} static variants ..."):
                report.static_graphs = _write_static_variants(compiled, recipe, ctx, metadata)
        report.compiled_bytes = _folder_bytes(compiled)
        report.seconds = dict(timer.seconds)
        on_disk = asdict(report)
        if options.paths_relative_to is None:  # paths as seen from compile.json: identical runs, identical files
            on_disk.update(graph=relative_path(graph_path, out_path), output=".")
        (tmp / REPORT_NAME).write_text(report_json(on_disk), encoding="utf-8")
    return report


def _compiled_model(graph_path: Path, recipe, target: str | None = None, progress=print):
    """The standard passes over the fp32 graph (with a lowering target: the lowering pass list) -> (ModelProto,
    the pass context, the model metadata, the fast variant's extra error per timestep or {})."""
    from passes.base import PassContext
    from passes.contract import MODEL_COMPILED, MODEL_NAME, MODEL_RECIPE_CONFIG, MODEL_TIMESTEPS
    from passes.graph_io import export_model, load_graph
    from passes.contract import LOWERED
    from passes.lower_pipeline import lowering_passes
    from passes.manager import run_passes
    from passes.module_map import load_module_map
    from passes.pipeline import compile_passes

    def build(passes):
        ctx = PassContext(recipe, load_module_map(graph_path.parent / MODULE_MAP_NAME))
        return export_model(run_passes(passes, load_graph(graph_path), ctx), ctx, metadata), ctx

    metadata = {MODEL_COMPILED: "1", MODEL_RECIPE_CONFIG: json.dumps(recipe.config.to_dict(), sort_keys=True),
                MODEL_TIMESTEPS: json.dumps(list(recipe.timesteps)), MODEL_NAME: recipe.model_name,
                **({LOWERED: target} if target else {})}
    model, ctx = build(lowering_passes() if target else compile_passes())
    fast_error = {}
    if target == "onnxruntime-cpu-fast":  # output grids measured on the exact lowering, then lowered again
        from dgq_compiler.lower_fast import extra_error, output_ranges

        progress("measuring per-tensor op output ranges on the exact lowering (fast variant) ...")
        exact = model
        ranges = output_ranges(exact, recipe, ctx.artifacts.get(LOWERING_REPORT, "[]"), base_dir=graph_path.parent)
        model, ctx = build(lowering_passes(ranges))
        progress("measuring the fast variant's extra error against the exact lowering ...")
        fast_error = extra_error(exact, model, recipe, base_dir=graph_path.parent)
    return model, ctx, metadata, fast_error


def _run_in_onnxruntime(compiled: Path, graph_path: Path, header, recipe, fp_bytes: int) -> float | None:
    """One run of the compiled graph (finite outputs or an error); its difference to the fp32 graph's output
    (quantization noise, informational), when the fp32 graph is small enough to run too."""
    import numpy as np

    feed = runtime.example_feeds(header, recipe.resolution, batch=1, timestep=float(recipe.timesteps[0]))
    out = runtime.session(compiled, "reference").run(None, feed)[0]
    if not np.all(np.isfinite(out)):
        raise DgqError("the compiled graph produced non-finite outputs in onnxruntime")
    if fp_bytes >= INLINE_LIMIT:
        return None
    fp_out = runtime.session(graph_path, "reference").run(None, feed)[0]
    return float(np.max(np.abs(out - fp_out)) / max(1.0, float(np.max(np.abs(fp_out)))))


def _write_static_variants(compiled: Path, recipe, ctx, metadata: dict) -> list[str]:
    """unet.step<NN>.onnx beside `compiled`, one per calibrated step, sharing its weights file."""
    import onnx

    from passes.contract import MODEL_STATIC_STEP, MODEL_STATIC_TIMESTEP
    from passes.graph_io import export_model, load_graph, save_model
    from passes.make_static_variant import MakeStaticVariant

    shared = load_graph(compiled)
    names = []
    for step, t in enumerate(recipe.timesteps):
        variant = MakeStaticVariant(step).run(shared.copy(), ctx)
        name = f"unet.step{step:02d}.onnx"
        static_meta = {**metadata, MODEL_STATIC_STEP: str(step), MODEL_STATIC_TIMESTEP: str(t)}
        save_model(export_model(variant, ctx, static_meta), compiled.parent / name, source_dir=compiled.parent,
                   weights_name=WEIGHTS_NAME)
        onnx.checker.check_model(str(compiled.parent / name), full_check=True)
        names.append(name)
    return names
