"""`verify`: run a compiled graph in the integer simulator and in onnxruntime on the same inputs at
several timesteps, and compare them quantizer by quantizer.

Per quantized tensor: the code mismatch rate and the largest LSB difference between the simulator's
codes (integer accumulations, the target's epilogue) and onnxruntime's (float32 QDQ), measured in
lock-step: after each quantizer the simulator continues from onnxruntime's codes, so a tensor's figures
measure only the arithmetic since the previous quantizers (otherwise one early boundary crossing
propagates and every later tensor reports the accumulated drift of a chaotic random-weight network).
Also: accumulator overflows seen, quantized ops that could not take the integer path, and the final
output error (relative RMS, rms(sim - ort) / rms(ort)) in lock-step, which the tolerance bounds, and of a
free-running simulation, reported for information: one code that crosses a rounding boundary early
changes everything after it, so the free-running figure measures the network's sensitivity as much as
the arithmetic (a float32 numpy re-execution of the same QDQ graph drifts from onnxruntime as much).
A run passes when every figure is within the target's `verify` tolerance and no accumulator overflowed.

onnxruntime runs in the "basic" mode of dgq_compiler/runtime.py (basic graph optimisations only): its
extended QDQ fusions change the numerics of asymmetric per-channel weights, so they would not be a
reference for the QDQ semantics.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dgq_compiler import runtime
from dgq_compiler.errors import DgqError
from passes.contract import MODEL_NAME, MODEL_TIMESTEPS, node_props


@dataclass
class TensorResult:
    module: str
    role: str
    node: str
    quantizer: str
    bits: int
    axis: str
    groups: int
    codes: int = 0              # codes compared (all timesteps)
    mismatches: int = 0
    max_lsb: int = 0

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.codes if self.codes else 0.0


@dataclass
class OverflowResult:
    node: str
    op_type: str
    overflows: int
    peak: float
    acc_bits: int


@dataclass
class VerifyReport:
    graph: str
    target: str
    timesteps: list
    batch: int
    latent_size: int
    tensors: list[TensorResult] = field(default_factory=list)
    overflows: list[OverflowResult] = field(default_factory=list)
    integer_ops: int = 0
    float_fallbacks: dict = field(default_factory=dict)     # node -> reason
    output_error: dict = field(default_factory=dict)        # timestep -> rms(sim - ort) / rms(ort), lock-step
    free_output_error: dict = field(default_factory=dict)   # the same for a free-running simulation (informational)
    output_max_abs: dict = field(default_factory=dict)
    tolerance: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        data = asdict(self)
        data["passed"] = self.passed
        for row, t in zip(data["tensors"], self.tensors):
            row["mismatch_rate"] = t.mismatch_rate
        return json.dumps(data, indent=1, sort_keys=True)


def resolve_graph(path: str | Path) -> Path:
    return runtime.resolve_graph(path, "a compiled folder or its unet.onnx")


def latent_size_of(model, graph: Path, given: int | None) -> int:
    """The latent height/width to run or analyse `graph` at: given, else compile.json/export.json beside
    it, the graph's fixed input shape, or the zoo model's default resolution."""
    if given:
        return given
    for name in ("compile.json", "export.json"):
        f = graph.parent / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError) as exc:
                raise DgqError(f"{str(f)!r} is not readable JSON ({exc}): fix it or pass --latent-size") from None
            if not isinstance(data, dict):
                continue
            if data.get("latent_size"):
                return int(data["latent_size"])
            if data.get("resolution"):
                return int(data["resolution"][0])
    for vi in model.graph.input:
        if vi.name == "sample":
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[2]:
                return int(dims[2])
    name = node_props(model).get(MODEL_NAME)
    from models.zoo import ZOO_NAMES, zoo_config

    if name in ZOO_NAMES and zoo_config(name).get("sample_size"):
        return int(zoo_config(name)["sample_size"])  # the model's default resolution
    raise DgqError(f"cannot tell the latent size of {str(graph)!r}: pass --latent-size")


def _timesteps(model, given) -> list[float]:
    if given:
        return [float(t) for t in given]
    meta = node_props(model)
    if MODEL_TIMESTEPS in meta:
        steps = json.loads(meta[MODEL_TIMESTEPS])
        if steps:
            picks = sorted({0, len(steps) // 2, len(steps) - 1})
            return [float(steps[i]) for i in picks]
    return [999.0, 500.0, 1.0]


def _relative_rms(y, ref) -> float:
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    return float(np.sqrt(np.mean((y - ref) ** 2)) / (np.sqrt(np.mean(ref * ref)) or 1.0))


def verify_graph(graph: str | Path, target="generic-npu", timesteps=None, batch: int = 2,
                 latent_size: int | None = None, seed: int = 0, progress=None) -> VerifyReport:
    import time

    import onnx

    from simulator.executor import Simulator
    from simulator.graph_info import analyse
    from simulator.check import load_for_analysis
    from simulator.targets import load_target

    progress = progress or (lambda *_: None)
    graph = resolve_graph(graph)
    target = load_target(target)
    try:  # scales and zero points loaded also when they live in a weights file (static compiles)
        model = load_for_analysis(graph)
    except Exception as exc:  # noqa: BLE001
        raise DgqError(f"graph {str(graph)!r} is not a readable ONNX model: {exc}") from None
    has_sample = any(vi.name == "sample" for vi in model.graph.input)
    latent = latent_size_of(model, graph, latent_size) if has_sample else 0
    steps = _timesteps(model, timesteps)
    report = VerifyReport(str(graph), target.name, steps, batch, latent, tolerance=asdict(target.verify))
    info = analyse(model)
    tensors = {q.code_tensor: TensorResult(q.module, q.role, q.node, q.quantizer, q.bits, q.axis, q.groups)
               for q in info.quantizers}
    code_types = {q.code_tensor: q.code_type for q in info.quantizers}
    start = time.perf_counter()
    progress("loading the graph into onnxruntime and the simulator ...")  # minutes at SDXL size: say so
    session = runtime.session(runtime.with_outputs(model, code_types), "basic", base_dir=graph.parent,
                              log_severity=4)  # fatal only: a run failure is reported as our one line
    full = onnx.load(str(graph))  # with weights, for the simulator
    sim = Simulator(full, target)
    del full
    report.seconds["load"] = time.perf_counter() - start
    out_name = sim.output_names[0]
    overflow: dict[str, OverflowResult] = {}
    report.seconds.update(ort=0.0, simulator=0.0)
    for t in steps:
        progress(f"t={t:g}: onnxruntime ...")
        feeds = runtime.example_feeds(model, latent, batch, seed, t)
        start = time.perf_counter()
        ort_values = runtime.run_all(session, feeds)
        report.seconds["ort"] += time.perf_counter() - start
        progress(f"t={t:g}: simulator ...")

        def observe(name, value, ref=ort_values):
            row = tensors[name]
            expected = ref[name]
            diff = np.abs(value.astype(np.int32) - expected.astype(np.int32))
            row.codes += diff.size
            row.mismatches += int(np.count_nonzero(diff))
            row.max_lsb = max(row.max_lsb, int(diff.max()) if diff.size else 0)
            return expected  # lock-step: continue from onnxruntime's codes, so each tensor measures its own segment

        start = time.perf_counter()
        result = sim.run(feeds, capture=list(tensors), observer=observe)
        progress(f"t={t:g}: simulator (free-running) ...")
        free = sim.run(feeds)
        report.seconds["simulator"] += time.perf_counter() - start
        ref = ort_values[out_name].astype(np.float64)
        report.output_error[t] = _relative_rms(result.outputs[out_name], ref)
        report.free_output_error[t] = _relative_rms(free.outputs[out_name], ref)
        report.output_max_abs[t] = float(np.max(np.abs(result.outputs[out_name] - ref)))
        for stat in result.stats.nodes.values():
            if stat.path in ("integer", "shift-add"):
                if stat.overflows:
                    o = overflow.setdefault(stat.node, OverflowResult(stat.node, stat.op_type, 0, 0.0, stat.acc_bits))
                    o.overflows += stat.overflows
                    o.peak = max(o.peak, stat.peak)
            elif stat.path.startswith("float ("):
                report.float_fallbacks[stat.node] = stat.path[len("float ("):-1]
        report.integer_ops = sum(1 for s in result.stats.nodes.values() if s.path in ("integer", "shift-add"))
    report.tensors = list(tensors.values())
    report.overflows = list(overflow.values())
    tol = target.verify
    for row in report.tensors:
        if row.mismatch_rate > tol.max_code_mismatch_rate:
            report.failures.append(f"{row.module}/{row.role}: code mismatch rate {row.mismatch_rate:.4%} "
                                   f"> {tol.max_code_mismatch_rate:.4%}")
        if row.max_lsb > tol.max_lsb_diff:
            report.failures.append(f"{row.module}/{row.role}: {row.max_lsb} LSB difference > {tol.max_lsb_diff}")
    for o in report.overflows:
        report.failures.append(f"{o.node}: {o.overflows} accumulator overflows ({o.acc_bits}-bit)")
    for t, e in report.output_error.items():
        if e > tol.max_output_error:
            report.failures.append(f"t={t:g}: output error {e:.3g} > {tol.max_output_error:g}")
    return report
