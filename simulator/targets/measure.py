"""Measure this machine's `hardware` numbers: GEMM throughput in onnxruntime, memory bandwidth with numpy.

    fp32      onnxruntime MatMul, float32 [M, K] x [K, N] (default session: all cores)
    int8      onnxruntime MatMulInteger, uint8 activations x int8 weights (the u8 x s8 kernels)
    int4      = int8 (a CPU has no 4-bit multiplier: packed INT4 is unpacked and run on the int8 kernels)
    fp16      = fp32 (onnxruntime's CPU provider runs a float16 graph in float32 kernels here)
    shift_add = fp32 (onnxruntime runs the log quantizer's A.V as float ops)
    DRAM      numpy copy of a 256 MB array: (read + write bytes) / time
    on-chip   numpy copy of an array of a quarter of the per-core L2 (it stays in cache)
    buffer    the last-level cache (sysfs), else 32 MiB
    energies  not measurable here: the generic-npu preset's Horowitz (ISSCC 2014, 45 nm) figures
Each figure is the best of `repeats` timed runs after one warm-up (the least disturbed by other jobs).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

GEMM_SHAPE = (2048, 2304, 1024)   # M, K, N: an im2col'd 3x3 conv over 256 input channels at 32x32 x batch 2
DRAM_ARRAY_BYTES = 256 << 20
DEFAULT_LLC = 32 << 20


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _gemm_session(integer: bool):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k, n = GEMM_SHAPE
    if integer:
        nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
        a_type, b_type, y_type = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
    else:
        nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
        a_type = b_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("a", a_type, [m, k]),
                                              helper.make_tensor_value_info("b", b_type, [k, n])],
                              [helper.make_tensor_value_info("y", y_type, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def gemm_macs_per_s(integer: bool, repeats: int = 5) -> float:
    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    if integer:
        feed = {"a": rng.integers(0, 256, (m, k), dtype=np.uint8), "b": rng.integers(-128, 128, (k, n), dtype=np.int8)}
    else:
        feed = {"a": rng.standard_normal((m, k), dtype=np.float32), "b": rng.standard_normal((k, n), dtype=np.float32)}
    session = _gemm_session(integer)
    return m * k * n / _best_seconds(lambda: session.run(None, feed), repeats)


def copy_bytes_per_s(nbytes: int, repeats: int = 5) -> float:
    """(read + write) bytes per second of `np.copyto` over an array of `nbytes`, repeated to ~64 MB per run."""
    src = np.ones(max(nbytes // 8, 1), np.float64)
    dst = np.empty_like(src)
    loops = max(1, (64 << 20) // src.nbytes)

    def run():
        for _ in range(loops):
            np.copyto(dst, src)
    return 2 * src.nbytes * loops / _best_seconds(run, repeats)


def _cache_sizes() -> dict:
    """Cache level -> bytes of one instance, from sysfs (empty where unavailable)."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes[level] = int(digits) * factor
    return sizes


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def measure_hardware(repeats: int = 5, progress=lambda _msg: None) -> dict:
    """The `hardware` section of a target file, measured on this machine (see the module docstring)."""
    from simulator.targets import load_target

    caches = _cache_sizes()
    progress("fp32 GEMM (onnxruntime MatMul)")
    fp32 = gemm_macs_per_s(False, repeats)
    progress("int8 GEMM (onnxruntime MatMulInteger u8 x s8)")
    int8 = gemm_macs_per_s(True, repeats)
    progress("DRAM bandwidth (256 MB copy)")
    dram = copy_bytes_per_s(DRAM_ARRAY_BYTES, repeats)
    l2 = caches.get(2, 1 << 20)
    progress("on-chip bandwidth (in-cache copy)")
    on_chip = copy_bytes_per_s(l2 // 4, repeats)
    buffer = caches.get(max(caches), DEFAULT_LLC) if caches else DEFAULT_LLC
    reference = load_target("generic-npu").hardware
    m, k, n = GEMM_SHAPE
    return {
        "peak_macs_per_s": {"int4": int8, "int8": int8, "fp16": fp32, "fp32": fp32, "shift_add": fp32},
        "bandwidth_bytes_per_s": {"dram": dram, "on_chip": on_chip},
        "buffer_bytes": int(buffer),
        "energy_pj_per_mac": reference.energy_pj_per_mac.__dict__.copy(),
        "energy_pj_per_byte": reference.energy_pj_per_byte.__dict__.copy(),
        "sources": {
            "peak_macs_per_s": f"measured by `dgq cost --measure-target` on {machine_description()}: onnxruntime "
                               f"MatMul (fp32) and MatMulInteger u8 x s8 (int8) at M, K, N = {m}, {k}, {n}, best "
                               f"of {repeats}; int4 = int8 (no 4-bit unit); fp16 and shift_add = fp32 (float "
                               "kernels in onnxruntime's CPU provider)",
            "bandwidth_bytes_per_s": f"measured: numpy copy (read + write bytes) of 256 MB (DRAM) and of "
                                     f"{l2 // 4 >> 10} KiB, a quarter of L2 (on-chip), best of {repeats}",
            "buffer_bytes": "the last-level cache size from sysfs",
            "energy_pj_per_mac": "not measured: the generic-npu preset's figures (Horowitz, ISSCC 2014, 45 nm)",
            "energy_pj_per_byte": "not measured: the generic-npu preset's figures (Horowitz, ISSCC 2014, 45 nm)",
        },
    }


def measured_target(name: str = "measured-cpu", repeats: int = 5, progress=lambda _msg: None) -> dict:
    """A complete target document: onnxruntime-cpu's arithmetic with this machine's measured `hardware`."""
    from simulator.targets import load_target

    doc = load_target("onnxruntime-cpu").to_dict()
    doc.pop("hardware", None)
    doc = {key: ({k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
                 if isinstance(value, dict) else value) for key, value in doc.items()}
    doc["name"] = name
    doc["description"] = (f"onnxruntime's CPU provider on {machine_description()}; peak rates and bandwidths "
                          "measured by `dgq cost --measure-target`.")
    doc["hardware"] = measure_hardware(repeats, progress)
    return doc
