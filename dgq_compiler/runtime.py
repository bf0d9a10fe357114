"""The one onnxruntime helper: sessions in named modes, example feeds, intermediate tensors as outputs, graph paths.

Every stage that runs a graph in onnxruntime goes through `session()` with a mode that says what it needs:

    default        stock onnxruntime settings, as a real client (optimum, a deployment) creates its session;
                   compiled graphs run here as written (passes/insert_fusion_barriers.py); used for sampling
    reference      every graph optimisation off: the graph runs exactly as written (export and compile
                   validation, the fake-quant point check)
    basic          basic optimisations only (constant folding, redundant-node elimination): verify's
                   reference; the extended QDQ fusions (DequantizeLinear -> MatMul -> MatMulNBits) change the
                   numerics of asymmetric per-channel int8/int4 weights by ~0.5% of the output

All sessions run on the CPU execution provider.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dgq_compiler.errors import DgqError

GRAPH_NAME = "unet.onnx"
MODES = ("default", "reference", "basic")
# SDXL's micro-conditioning (original size, crop top-left, target size) for the example feeds and the export
SDXL_TIME_IDS = (1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0)
PROVIDERS = ["CPUExecutionProvider"]


def session_options(mode: str = "reference", *, threads: int | None = None, prepacking: bool = True,
                    log_severity: int | None = None, arena: bool = True):
    """onnxruntime SessionOptions for a named mode (see the module docstring)."""
    import onnxruntime as ort

    if mode not in MODES:
        raise ValueError(f"onnxruntime mode {mode!r}: expected one of {', '.join(MODES)}")
    options = ort.SessionOptions()
    if mode == "reference":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif mode == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if not prepacking:  # no second, prepacked copy of the weights (memory of large exports)
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not arena:  # activations freed after each run instead of kept in an arena (memory of large graphs)
        options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
    if log_severity is not None:
        options.log_severity_level = log_severity
    return options


def session(graph, mode: str = "reference", *, base_dir: str | Path | None = None, threads: int | None = None,
            prepacking: bool = True, log_severity: int | None = None, arena: bool = True,
            profile_prefix: str | Path | None = None):
    """An onnxruntime CPU session of `graph`: a file path, serialized bytes, or a ModelProto.

    A ModelProto whose initializers live in external files reads them from `base_dir` (the folder of the graph
    it was loaded from): nothing is copied or written. `profile_prefix`: profile every run (benchmarks; the
    trace file is `session.end_profiling()`).
    """
    import onnx
    import onnxruntime as ort

    options = session_options(mode, threads=threads, prepacking=prepacking, log_severity=log_severity, arena=arena)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    if isinstance(graph, (str, Path)):
        return ort.InferenceSession(str(graph), options, providers=PROVIDERS)
    if isinstance(graph, bytes):
        return ort.InferenceSession(graph, options, providers=PROVIDERS)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    if external:
        if base_dir is None:
            raise ValueError("a model with external initializers needs the folder of its weights (base_dir)")
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(Path(base_dir).resolve()))
    return ort.InferenceSession(graph.SerializeToString(), options, providers=PROVIDERS)


def with_outputs(model, tensors: dict[str, int]):
    """A copy of `model` that also outputs the intermediate `tensors` (name -> ONNX element type)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(onnx.helper.make_tensor_value_info(name, elem, None)
                            for name, elem in tensors.items() if name not in have)
    return out


def run_all(sess, feeds: dict) -> dict:
    """Every output of a session by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def timed_runs(sess, feeds: dict, runs: int) -> list[float]:
    """Wall seconds of `runs` calls of `sess` on `feeds` (warm the session up first)."""
    import time

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return times


def kernel_time_by_op(profile: str | Path) -> tuple[dict[str, float], int]:
    """From an onnxruntime profile (`profile_prefix=` then `end_profiling()`): microseconds of kernel time per
    op type, summed over the profiled runs, and how many runs that was."""
    import json

    kinds: dict[str, float] = {}
    runs = 0
    for event in json.loads(Path(profile).read_text()):
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            kinds[op] = kinds.get(op, 0) + event["dur"]
    return kinds, runs


def example_feeds(model, latent, batch: int = 1, seed: int = 0, timestep: float = 500.0) -> dict:
    """Random inputs for an exported (or compiled) UNet graph: `sample` at the latent size (an int or (h, w)),
    `timestep` filled with `timestep`, SDXL's `time_ids` fixed, every other input standard normal; a fixed
    dimension of the graph is kept, a symbolic one becomes `batch`."""
    import onnx

    height, width = (latent, latent) if np.isscalar(latent) else latent
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.dim_value else None for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if vi.name == "timestep":
            feed[vi.name] = np.full([d or 1 for d in dims], timestep, dtype=dtype)
            continue
        if vi.name == "sample":
            dims = [dims[0] or batch, dims[1] or 4, height, width]
        if vi.name == "encoder_hidden_states" and len(dims) == 3 and dims[1] is None:  # optimum: dynamic length
            dims[1] = 77
        dims = [d if d is not None else batch for d in dims]
        if vi.name == "time_ids":
            feed[vi.name] = np.tile(np.array([SDXL_TIME_IDS], dtype=dtype), (dims[0], 1))
        else:
            feed[vi.name] = rng.standard_normal(dims).astype(dtype)
    return feed


def resolve_graph(path: str | Path, what: str = "a folder or its unet.onnx") -> Path:
    """A graph file from a folder (its unet.onnx) or a file path; a one-line error when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / GRAPH_NAME
    if not path.is_file():
        raise DgqError(f"graph {str(path)!r} not found (expected {what})")
    return path
