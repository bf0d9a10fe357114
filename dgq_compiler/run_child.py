"""`dgq run`'s per-configuration stages (quantize, compile, verify, check, images, fidelity) in a child process.

Why: at SD v1.4 size one process that holds the torch pipeline, the FP layer outputs, onnxruntime sessions
of the fp32 and compiled graphs and the simulator was killed at 24.3 GB (512 px, `--quick`). A child per
configuration starts from files and gives everything it allocated (onnxruntime arenas, the compiled
graph, the simulator, a fragmented heap) back to the machine when it exits. While children run, the
parent releases its copy of the UNet's weights and its FP layer outputs (the configurations are their
only readers: they go to a job folder first) and takes both back afterwards, so the two processes never
hold two copies of the model.

Children are spawned, not forked: torch's OpenMP thread pool does not survive a fork (a forked child
hangs in its first parallel op). A child costs seconds (imports, loading the pipeline), so models below
CHILD_MIN_PARAMETERS run in process; DGQ_RUN_CHILD=1 or 0 forces either way. Both give the same files.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.run_config import ConfigResult, Shared, indented, one_config, release_weights

CHILD_MIN_PARAMETERS = 100_000_000   # SD 1.x has 860 M; the embedded and tiny models a few M
JOB_FOLDER = ".configs"              # inside the run's output while it is built; removed at the end
ENV_SWITCH = "DGQ_RUN_CHILD"


def use_children(unet) -> bool:
    """Whether `dgq run` should run each configuration in a child process for this UNet."""
    forced = os.environ.get(ENV_SWITCH, "")
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise DgqError(f"{ENV_SWITCH} must be 0 or 1 (or unset: by model size), got {forced!r}")
    return real_size(unet)


def real_size(unet) -> bool:
    """A UNet big enough that the run keeps one heavy thing in memory at a time (the children's threshold)."""
    return sum(p.numel() for p in unet.parameters()) >= CHILD_MIN_PARAMETERS


@contextlib.contextmanager
def config_runner(shared: Shared, source: str, stats):
    """Yield a function with `one_config`'s signature: in process for small models, else in child processes
    (see the module docstring); `source` and `shared.options.seed` reopen the pipeline as the run opened it."""
    if not use_children(shared.pipe.unet):
        yield one_config
        return
    jobs = shared.out / JOB_FOLDER
    jobs.mkdir()
    stats.save(jobs / "stats.json")
    _save_calls(shared, jobs)
    _save_fp_layers(shared.fp_layers, jobs)
    for outputs in shared.fp_layers:
        outputs.clear()
    release_weights(shared.pipe.unet)
    counter = itertools.count()

    def run_in_child(name, config, _stats, shared_, target=None) -> ConfigResult:
        return _run_child(next(counter), name, config, target, shared_, source, jobs)

    yield run_in_child
    _restore_weights(shared.pipe.unet, source, shared.options.seed)
    for k, outputs in enumerate(shared.fp_layers):
        outputs.update(_load_all(jobs / f"fp_layers_{k}.safetensors"))
    shutil.rmtree(jobs)


# ---------------------------------------------------------------- the parent's side
def _save_calls(shared: Shared, jobs: Path) -> None:
    from safetensors.numpy import save_file

    arrays = {f"{i}/{part}": getattr(c, part)
              for i, c in enumerate(shared.calls) for part in ("sample", "states", "eps")}
    save_file(arrays, str(jobs / "calls.safetensors"))
    probe = [next(i for i, c in enumerate(shared.calls) if c is p) for p in shared.probe_calls]
    (jobs / "calls.json").write_text(json.dumps({"calls": [[c.step, c.timestep] for c in shared.calls],
                                                 "probe": probe}))


def _save_fp_layers(fp_layers: list, jobs: Path) -> None:
    from safetensors.numpy import save_file

    for k, outputs in enumerate(fp_layers):  # one probe call at a time: one serialised copy at most
        save_file({name: array for name, array in outputs.items()}, str(jobs / f"fp_layers_{k}.safetensors"))


def _load_all(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _restore_weights(unet, source: str, seed: int) -> None:
    """Take the weights back from the pipeline as the run opened it (a folder's files or the seeded tiny model)."""
    from dgq_compiler.calibrate.run import open_pipeline

    fresh = dict(open_pipeline(source, seed=seed, device="cpu").unet.named_parameters())
    for name, param in unet.named_parameters():
        param.data = fresh.pop(name).data


def _run_child(index: int, name: str, config, target, shared: Shared, source: str, jobs: Path) -> ConfigResult:
    """Write the job, run it in a child, read its result back into `shared` (recipe, images, fp32 call time)."""
    import torch
    from safetensors.numpy import load_file

    from dgq_compiler.recipe import Recipe

    inv = shared.inventory
    unet = shared.pipe.unet
    job = {"name": name, "config": config.to_dict(), "target": target, "source": source,
           "threads": torch.get_num_threads(), "export_dir": str(shared.export_dir), "out": str(shared.out),
           "options": asdict(shared.options), "layers": shared.layers, "image_prompts": shared.image_prompts,
           "seeds": shared.seeds, "fp32_step_s": shared.fp32_step_s,
           "attn_processors": sorted({type(p).__name__ for p in unet.attn_processors.values()}),
           "inventory": {"batch": inv.batch, "resolution": inv.resolution[0], "model": inv.model}}
    job_path = jobs / f"job_{index}.json"
    job_path.write_text(json.dumps(job, indent=1))
    result_path = jobs / f"result_{index}.json"
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    child = subprocess.Popen([sys.executable, "-m", "dgq_compiler.run_child", str(job_path)], env=env)
    try:
        code = child.wait()
    finally:
        if child.poll() is None:  # interrupted: take the child down with the run
            child.terminate()
            child.wait()
    label = name if target is None else f"{name}@{target}"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if "error" in result:
        raise DgqError(result["error"])
    if code != 0 or "config" not in result:
        why = f"was killed by signal {-code} (out of memory?)" if code < 0 else f"failed with exit code {code}"
        raise DgqError(f"configuration {label}: its child process {why}")
    row = result["config"]
    for key in ("step_snr", "guidance_snr"):
        row[key] = [tuple(pair) for pair in row[key]]
    outcome = ConfigResult(**row)
    shared.images[outcome.preset] = load_file(str(jobs / f"images_{index}.safetensors"))["images"]
    shared.recipes[outcome.preset] = Recipe.load(shared.out / outcome.recipe)
    if shared.fp32_step_s is None:
        shared.fp32_step_s = result["fp32_step_s"]
    return outcome


# ---------------------------------------------------------------- the child's side
class _LayerFile:
    """The FP outputs of one probe call, read one layer at a time from the job folder (a mapping by name)."""

    def __init__(self, path: Path):
        self.path = path

    def __getitem__(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self.path), framework="numpy") as f:
            return f.get_tensor(name)


def _shared_in_child(job: dict, jobs: Path) -> Shared:
    import torch
    from safetensors.numpy import load_file

    from dgq_compiler.calibrate.run import open_pipeline, use_pndm
    from dgq_compiler.report.analysis import UNetCall
    from dgq_compiler.run import RunOptions
    from simulator.cost.macs_from_graph import inventory_from_graph

    torch.set_num_threads(job["threads"])
    options = RunOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["options"].items()
                            if k in {f.name for f in fields(RunOptions)}})
    pipe = open_pipeline(job["source"], seed=options.seed, device="cpu")
    use_pndm(pipe)
    if job["attn_processors"] == ["AttnProcessor"]:  # as export left the parent's UNet: the same arithmetic
        from diffusers.models.attention_processor import AttnProcessor

        pipe.unet.set_attn_processor(AttnProcessor())
    mine = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    if mine != job["attn_processors"]:
        raise DgqError(f"child process: attention processors {mine} differ from the run's {job['attn_processors']}")
    arrays = load_file(str(jobs / "calls.safetensors"))
    meta = json.loads((jobs / "calls.json").read_text())
    calls = [UNetCall(step, timestep, arrays[f"{i}/sample"], arrays[f"{i}/states"], arrays[f"{i}/eps"])
             for i, (step, timestep) in enumerate(meta["calls"])]
    inv = job["inventory"]
    export_dir = Path(job["export_dir"])
    inventory = inventory_from_graph(export_dir / "unet.onnx", batch=inv["batch"], resolution=inv["resolution"],
                                     model=inv["model"])
    fp_layers = [_LayerFile(jobs / f"fp_layers_{k}.safetensors") for k in range(len(meta["probe"]))]
    return Shared(pipe, export_dir, Path(job["out"]), options, calls, [calls[i] for i in meta["probe"]],
                  job["layers"], fp_layers, job["image_prompts"], job["seeds"], {}, inventory,
                  fp32_step_s=job["fp32_step_s"], release_unet=True, log=indented(functools.partial(print, flush=True)))


def child_main(job_path: str) -> int:
    """Run one configuration's job; its result (or its one-line error) goes to result_<index>.json beside it."""
    from safetensors.numpy import save_file

    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.config import QuantConfig

    job_path = Path(job_path)
    jobs = job_path.parent
    result_path = jobs / job_path.name.replace("job_", "result_")
    index = job_path.stem.split("_")[-1]
    job = json.loads(job_path.read_text())
    try:
        shared = _shared_in_child(job, jobs)
        stats = CalibrationStats.load(jobs / "stats.json")
        row = one_config(job["name"], QuantConfig.from_dict(job["config"]), stats, shared, target=job["target"])
    except DgqError as exc:
        result_path.write_text(json.dumps({"error": str(exc)}))
        return 2
    save_file({"images": shared.images[row.preset]}, str(jobs / f"images_{index}.safetensors"))
    result_path.write_text(json.dumps({"config": asdict(row), "fp32_step_s": shared.fp32_step_s}))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
