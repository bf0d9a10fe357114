"""The simulator: runs an ONNX graph node by node in numpy, quantized ops on integer hardware arithmetic.

    sim = Simulator(model_or_path, target="generic-npu")
    result = sim.run({"sample": x, "timestep": t, "encoder_hidden_states": c}, capture=["..."])
    result.outputs["out_sample"], result.captured[...], result.stats

Values live in an environment keyed by tensor name and are freed after their last use. A
DequantizeLinear / dgq.DequantizeLog output also gets a QTensor record (codes + scale + zero point);
layout-only ops carry it along, and Conv/MatMul/Gemm whose operands both have one run as integer
accumulations (simulator.qmatmul / simulator.qconv). Their float value is computed only if some
float op asks for it (Lazy), which is what keeps whole-UNet simulation affordable.

Large activations are recycled (environment.py): an elementwise op may write into an input that dies at
that node and that nothing else references (ctx.reusable), and a dying buffer is kept for the next op that
asks for one of the same shape (ctx.empty).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from passes.contract import NARROW_BITS
from simulator.environment import Environment, Lazy
from simulator.epilogue import Epilogue
from simulator.errors import SimulatorError
from simulator.nodes import Node, attribute_value, make_node, to_numpy
from simulator.qtensor import QTensor
from simulator.targets import Target, load_target


@dataclass
class NodeStat:
    node: str
    op_type: str
    path: str                      # integer | shift-add | float | float (reason)
    groups: int = 1                # accumulators per output (split-K / pixel groups)
    overflows: int = 0             # accumulator values outside the target's width
    peak: float = 0.0              # largest |accumulator| seen
    acc_bits: int = 0


@dataclass
class RunStats:
    nodes: dict[str, NodeStat] = field(default_factory=dict)

    def quantized(self) -> list[NodeStat]:
        return [s for s in self.nodes.values() if s.path != "float"]


@dataclass
class SimulationResult:
    outputs: dict[str, np.ndarray]
    captured: dict[str, np.ndarray]
    stats: RunStats


class NodeContext:
    """What an op sees: its node, its inputs (float values or QTensors) and the target."""

    __slots__ = ("_quant_out", "env", "epilogue", "integer", "node", "opset", "sim", "target")

    def __init__(self, sim: "Simulator", env: "Environment", node: Node, opset: int):
        self.sim, self.env, self.node, self.opset = sim, env, node, opset
        self.target: Target = sim.target
        self.epilogue: Epilogue = sim.epilogue
        self.integer: bool = sim.integer
        self._quant_out: dict[int, QTensor] = {}

    # inputs ---------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.node.inputs)

    def has(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] != ""

    def value(self, i: int, default=None):
        inputs = self.node.inputs
        if i >= len(inputs) or not inputs[i]:
            return default
        return self.env.get(inputs[i])

    def values(self) -> list:
        return [self.value(i) for i in range(self.n_inputs)]

    def quant(self, i: int) -> QTensor | None:
        return self.env.quant.get(self.node.inputs[i]) if self.has(i) else None

    def attr(self, name: str, default=None):
        return self.node.attrs.get(name, default)

    # outputs --------------------------------------------------------------------------------
    def set_quant(self, j: int, q: QTensor | None) -> None:
        if q is not None:
            self._quant_out[j] = q

    def lazy(self, fn) -> Lazy:
        return Lazy(fn)

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised output buffer (a recycled one when a freed buffer of this shape exists)."""
        return self.env.pool.take(shape, dtype)

    def reusable(self, i: int, shape, dtype) -> np.ndarray | None:
        """Input i's array, if the op may overwrite it with its output: a large buffer of that shape and
        type that dies at this node and that no other live value shares."""
        name = self.node.inputs[i] if self.has(i) else ""
        if name not in self.env.dying or self.node.inputs.count(name) != 1:
            return None
        v = self.env.vals.get(name)
        if not (isinstance(v, np.ndarray) and v.shape == tuple(shape) and v.dtype == dtype):
            return None
        return v if self.env.exclusive(name, v) else None

    # integer bookkeeping ----------------------------------------------------------------------
    def accumulate(self, acc: np.ndarray, log: bool = False, bound: int | None = None) -> np.ndarray:
        """Apply the target's accumulator width to one accumulator tensor and record overflows
        (`bound`: a proven |acc| bound from bit widths and reduction length; if it fits, no scan)."""
        from simulator.integer import apply_accumulator_width

        bits = self.target.log_quantizer.accumulator_bits if log else self.target.accumulator_bits
        result = apply_accumulator_width(acc, bits, self.target.accumulator_overflow, bound)
        stat = self.stat()
        stat.overflows += result.overflows
        stat.peak = max(stat.peak, result.peak)
        stat.acc_bits = bits
        return result.acc

    def stat(self) -> NodeStat:
        stats = self.env.stats.nodes
        if self.node.name not in stats:
            stats[self.node.name] = NodeStat(self.node.name, self.node.op_type, "float")
        return stats[self.node.name]

    def mark(self, path: str, groups: int = 1) -> None:
        stat = self.stat()
        stat.path, stat.groups = path, groups


class Simulator:
    def __init__(self, model: "onnx.ModelProto | str | Path", target: "Target | str" = "generic-npu",
                 integer: bool = True):
        """`integer=False` runs quantized ops on the dequantized floats (the QDQ graph's own float semantics)."""
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise SimulatorError(f"graph {str(path)!r} does not exist")
            try:
                model = onnx.load(str(path))
            except Exception as exc:  # noqa: BLE001 - protobuf raises several types
                raise SimulatorError(f"graph {str(path)!r} is not a readable ONNX model: {exc}") from None
        self.model = model
        self.target = load_target(target)
        self.epilogue = Epilogue.from_target(self.target)
        self.integer = integer
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
        self.functions = {(f.domain, f.name): f for f in model.functions}
        graph = model.graph
        self.initializers = {t.name: to_numpy(t) for t in graph.initializer}
        # 4-/2-bit tensors are held widened to int8/uint8; their true grid bounds the integer proofs
        self.narrow_bits = {t.name: NARROW_BITS[t.data_type] for t in graph.initializer
                            if t.data_type in NARROW_BITS}
        self.nodes = [make_node(n, i) for i, n in enumerate(graph.node)]
        self.input_names = [i.name for i in graph.input if i.name not in self.initializers]
        self.output_names = [o.name for o in graph.output]
        self._check_supported(self.nodes, set())
        self._last_use = self._liveness(self.nodes)
        # per node, fixed by the graph: its op, the inputs that die at it, the values to drop after it
        from simulator.ops import REGISTRY

        self._ops = [REGISTRY.get(node.key) for node in self.nodes]
        self._dying = [frozenset(name for name in node.inputs if name and self._last_use.get(name) == i)
                       for i, node in enumerate(self.nodes)]
        self._drops = [tuple(name for name in dict.fromkeys(dying) if name not in self.initializers)
                       for dying in self._dying]

    # ---- static checks ------------------------------------------------------------------------
    def _check_supported(self, nodes: list[Node], seen: set) -> None:
        from simulator.ops import REGISTRY

        for node in nodes:
            if node.key in REGISTRY:
                continue
            fn = self.functions.get((node.domain, node.op_type))
            if fn is None:
                raise SimulatorError(f"node {node.name!r}: op {node.key!r} is not supported by the simulator")
            if (node.domain, node.op_type) not in seen:
                seen.add((node.domain, node.op_type))
                self._check_supported([make_node(n, i) for i, n in enumerate(fn.node)], seen)

    @staticmethod
    def _liveness(nodes: list[Node]) -> dict[str, int]:
        last = {}
        for i, node in enumerate(nodes):
            for name in node.inputs:
                if name:
                    last[name] = i
        return last

    # ---- running ------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray], capture=(), observer=None) -> SimulationResult:
        """Run the graph. `capture`: tensor names to return (or, with `observer(name, value)`, to hand
        to the observer as soon as they are produced instead of keeping them). If the observer returns
        an array, it replaces the value (lock-step comparison: continue from a reference's codes)."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise SimulatorError(f"missing graph input(s): {', '.join(missing)}")
        stats = RunStats()
        capture = set(capture)
        keep = set(self.output_names) | (capture if observer is None else set())
        env = Environment(stats, protected=frozenset(set(self.initializers) | set(self.input_names) | keep | capture))
        env.vals.update(self.initializers)
        for name in self.input_names:
            env.vals[name] = np.asarray(feeds[name])
        captured = {}
        for node, op, dying, drops in zip(self.nodes, self._ops, self._dying, self._drops):
            env.dying = dying
            self._run_node(node, env, self.opset, op)
            if capture:
                for out in node.outputs:
                    if out in capture and out in env.vals:
                        if observer is not None:
                            replacement = observer(out, np.asarray(env.get(out)))
                            if replacement is not None:
                                env.vals[out] = replacement
                        else:
                            captured[out] = np.asarray(env.get(out))
            for name in drops:
                if name not in keep:
                    env.drop(name)
        outputs = {name: np.asarray(env.get(name)) for name in self.output_names}
        for name in capture:
            if observer is None and name not in captured and name in env.vals:
                captured[name] = np.asarray(env.get(name))
        return SimulationResult(outputs, captured, stats)

    def _run_node(self, node: Node, env: Environment, opset: int, op=None) -> None:
        """Run one node (`op`: its REGISTRY entry when the caller has it at hand)."""
        if op is None:
            from simulator.ops import REGISTRY

            op = REGISTRY.get(node.key)
        if op is None:
            fn = self.functions.get((node.domain, node.op_type))
            if fn is None:
                raise SimulatorError(f"node {node.name!r}: op {node.key!r} is not supported by the simulator")
            self._run_function(fn, node, env)
            return
        ctx = NodeContext(self, env, node, opset)
        try:
            outs = op(ctx)
        except SimulatorError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise SimulatorError(f"node {node.name!r} ({node.key}): {exc}") from exc
        for j, name in enumerate(node.outputs):
            if name and j < len(outs):
                env.vals[name] = outs[j]
                if j in ctx._quant_out:
                    env.quant[name] = ctx._quant_out[j]

    def _run_function(self, fn: onnx.FunctionProto, call: Node, env: Environment) -> None:
        """Expand a model-local function: run its body with the caller's inputs and attributes."""
        attrs = {a.name: attribute_value(a) for a in fn.attribute_proto}
        attrs.update(call.attrs)
        inner = Environment(env.stats, env.pool, env.protected | set(env.vals))  # nothing of the caller is recycled
        for formal, actual in zip(fn.input, call.inputs):
            if actual:
                inner.vals[formal] = env.vals[actual] if not isinstance(env.vals.get(actual), Lazy) else env.get(actual)
                if actual in env.quant:
                    inner.quant[formal] = env.quant[actual]
        fn_opset = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")), self.opset)
        prefix = f"{call.name}/"
        for i, n in enumerate(fn.node):
            node = make_node(n, i, attrs)
            node = Node(prefix + node.name, node.op_type, node.domain, node.inputs, node.outputs, node.attrs)
            self._run_node(node, inner, fn_opset)
        for formal, actual in zip(fn.output, call.outputs):
            if actual:
                env.vals[actual] = inner.get(formal)
                if formal in inner.quant:
                    env.quant[actual] = inner.quant[formal]
