"""Export a diffusers UNet2DConditionModel to an fp32 ONNX graph (opset 21) and validate it in onnxruntime.

Output folder:  unet.onnx (+ unet.onnx.data when over 2 GB), module_map.json, export.json.
Attention is exported through diffusers' `AttnProcessor` (explicit MatMul -> Softmax -> MatMul),
so the probabilities are a tensor the passes can quantize and split.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable, report_json
from dgq_compiler.runtime import SDXL_TIME_IDS

OPSET = 21
GRAPH_NAME = "unet.onnx"
WEIGHTS_NAME = "unet.onnx.data"
MODULE_MAP_NAME = "module_map.json"
REPORT_NAME = "export.json"
TWO_GB = 2 * 1024**3
DEFAULT_TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 1e-2  # a float16 graph against the float32 torch model: half precision's own error
VALIDATION_TIMESTEPS = (999.0, 1.0)
# default trace/validation latent: the graph has dynamic spatial axes, and at SD's 64 the validation
# session's 4096-token attention maps (1 GB each) outgrow the weights (SD v1.4: 10.7 GB peak against 4.5)
MAX_DEFAULT_LATENT = 32


@dataclass
class ExportReport:
    model: str
    graph: str
    opset: int
    parameters: int
    external_data: bool
    inputs: list[str]
    batch: int
    latent_size: int
    tolerance: float
    dtype: str = "float32"  # of the weights and the arithmetic inside the graph; inputs/output stay float32
    max_abs_error: dict = field(default_factory=dict)   # timestep -> error (relative to max(1, |ref|))
    seconds: dict = field(default_factory=dict)

    @property
    def worst_error(self) -> float:
        return max(self.max_abs_error.values(), default=0.0)


def _wrapper(unet):
    """The UNet with the graph's positional inputs; a float16 UNet gets float32 inputs and output around it."""
    import torch

    sdxl = getattr(unet.config, "addition_embed_type", None) == "text_time"
    half = next(unet.parameters()).dtype == torch.float16

    class UNetForExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet  # the attribute name is the scope root the module map strips

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
            if half:  # the graph keeps float32 inputs and output: a drop-in for the float32 graph
                sample, encoder_hidden_states = sample.half(), encoder_hidden_states.half()
                text_embeds = text_embeds.half() if text_embeds is not None else None
                time_ids = time_ids.half() if time_ids is not None else None
            added = {"text_embeds": text_embeds, "time_ids": time_ids} if sdxl else None
            out = self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]
            return out.float() if half else out

    return UNetForExport().eval(), sdxl


def example_inputs(unet, batch: int, latent_size: int, timestep: float, seed: int) -> dict:
    """Random inputs with the UNet's shapes; `timestep` is a float32 tensor of shape [1]."""
    import torch

    cfg = unet.config
    if cfg.addition_embed_type not in (None, "text_time"):
        raise DgqError(f"UNet addition_embed_type {cfg.addition_embed_type!r} is not supported: "
                       "expected none (SD 1.x/2.x) or 'text_time' (SDXL)")
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "sample": torch.randn(batch, cfg.in_channels, latent_size, latent_size, generator=gen),
        "timestep": torch.tensor([timestep], dtype=torch.float32),
        "encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen),
    }
    if cfg.addition_embed_type == "text_time":
        text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        inputs["text_embeds"] = torch.randn(batch, text_dim, generator=gen)
        inputs["time_ids"] = torch.tensor([list(SDXL_TIME_IDS)] * batch)
    return inputs


def _dynamic_axes(names: list[str]) -> dict:
    # timestep: 1-D of dynamic length, as optimum declares it (pipelines feed [1] or [batch])
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "out_sample": {0: "batch", 2: "height", 3: "width"},
            "timestep": {0: "steps"},
            "encoder_hidden_states": {0: "batch"}, "text_embeds": {0: "batch"}, "time_ids": {0: "batch"}}
    return {n: axes[n] for n in names + ["out_sample"] if n in axes}


def _reference_outputs(reference, batch: int, latent_size: int, seed: int) -> list:
    """(inputs, torch output) at each validation timestep, computed before onnxruntime holds the weights."""
    import torch

    unet = reference()
    wrapper, _ = _wrapper(unet)
    cases = []
    for k, t in enumerate(VALIDATION_TIMESTEPS):
        inputs = example_inputs(unet, batch, latent_size, t, seed + 1 + k)
        with torch.no_grad():
            cases.append(({n: v.numpy() for n, v in inputs.items()}, wrapper(*inputs.values()).numpy()))
    return cases


def validate(graph_path: Path, cases: list) -> dict:
    """Max abs error of onnxruntime against torch, per timestep, scaled by max(1, max|torch output|)."""
    import numpy as np

    from dgq_compiler import runtime

    # no second (prepacked) copy of the weights; activations freed, not kept in an arena beside the weights
    session = runtime.session(graph_path, "reference", prepacking=False, arena=False)
    errors = {}
    for t, (inputs, ref) in zip(VALIDATION_TIMESTEPS, cases):
        got = session.run(["out_sample"], inputs)[0]
        errors[str(t)] = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
    return errors


def _export(config: dict, open_source, reference, out_dir, *, model_name: str, batch: int, latent_size: int | None,
            seed: int, tolerance: float | None, overwrite: bool, external_data: bool | None, float16: bool,
            progress) -> ExportReport:
    """Trace the structure, write the weights tensor by tensor, validate; the folder appears only if all succeeded.

    `open_source(scratch)` gives the weights (it may spill generated ones into the scratch folder);
    `reference(source)` gives the float32 torch UNet to validate against, built only after the graph is
    written and released before onnxruntime loads it, so the two never hold the weights at once.
    """
    import gc

    import onnx

    from dgq_compiler.export_trace import bind_initializers, placeholder_skeleton, trace_graph
    from dgq_compiler.export_weights import content_classes
    from dgq_compiler.export_write import write_initializers
    from diffusers.models.attention_processor import AttnProcessor
    from passes.module_map import build_module_map, save_module_map

    out_dir = check_writable(out_dir, overwrite=overwrite, kind="folder")
    latent_size = latent_size or min(int(config["sample_size"]), MAX_DEFAULT_LATENT)
    if tolerance is None:
        tolerance = FLOAT16_TOLERANCE if float16 else DEFAULT_TOLERANCE
    seconds = {}
    with atomic_path(out_dir, directory=True) as tmp:
        scratch = tmp / "scratch"
        scratch.mkdir()
        start = time.perf_counter()
        source = open_source(scratch)
        shapes = {name: source.shape(name) for name in source.names()}
        params = sum(math.prod(s) for s in shapes.values())
        # protobuf cannot hold 2 GB; leave headroom for the graph itself
        external = params * (2 if float16 else 4) > TWO_GB - 64 * 1024**2 if external_data is None else external_data
        skeleton = placeholder_skeleton(config, content_classes(source, list(shapes)), float16=float16)
        skeleton.set_attn_processor(AttnProcessor())
        wrapper, _ = _wrapper(skeleton)
        inputs = example_inputs(skeleton, batch, latent_size, 500.0, seed)
        seconds["weights"] = time.perf_counter() - start
        progress(f"exporting {model_name} ({params / 1e6:.1f} M parameters) to ONNX opset {OPSET} ...")
        start = time.perf_counter()
        traced = scratch / GRAPH_NAME
        trace_graph(wrapper, inputs, traced, OPSET, _dynamic_axes(list(inputs)))
        del skeleton, wrapper
        seconds["export"] = time.perf_counter() - start
        start = time.perf_counter()
        model = onnx.load(str(traced))
        bindings = bind_initializers(model, list(inputs), shapes)
        graph = tmp / GRAPH_NAME
        write_initializers(model, bindings, source, graph, external=external, weights_name=WEIGHTS_NAME,
                           float16=float16)
        del model
        seconds["save_and_check"] = time.perf_counter() - start
        entries = build_module_map(onnx.load(str(graph), load_external_data=False))
        save_module_map(entries, tmp / MODULE_MAP_NAME)
        progress(f"validating in onnxruntime at timesteps {', '.join(str(t) for t in VALIDATION_TIMESTEPS)} ...")
        start = time.perf_counter()
        cases = _reference_outputs(functools.partial(reference, source), batch, latent_size, seed)
        del source
        gc.collect()
        errors = validate(graph, cases)
        seconds["validate"] = time.perf_counter() - start
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
        report = ExportReport(model=model_name, graph=GRAPH_NAME, opset=OPSET, parameters=params,
                              external_data=external, inputs=list(inputs), batch=batch,
                              latent_size=latent_size, tolerance=tolerance,
                              dtype="float16" if float16 else "float32", max_abs_error=errors,
                              seconds={k: round(v, 3) for k, v in seconds.items()})
        if report.worst_error > tolerance:
            raise DgqError(f"exported graph does not match torch: max abs error {report.worst_error:.3g} "
                           f"> tolerance {tolerance:g}")
        (tmp / REPORT_NAME).write_text(report_json(asdict(report)))
    return report


def export_unet(unet, out_dir: str | Path, *, model_name: str = "unet", batch: int = 2,
                latent_size: int | None = None, seed: int = 0, tolerance: float | None = None,
                overwrite: bool = False, external_data: bool | None = None, float16: bool = False,
                progress=print) -> ExportReport:
    """Export a UNet that is in memory (its config's architecture, its weights); options as `export_model`."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    from dgq_compiler.export_weights import ModuleWeights

    if not isinstance(unet, UNet2DConditionModel):
        raise DgqError(f"model is a {type(unet).__name__}, expected a diffusers UNet2DConditionModel")
    unet = unet.float().eval()
    unet.set_attn_processor(AttnProcessor())
    return _export(dict(unet.config), lambda _scratch: ModuleWeights(unet), lambda _source: unet, out_dir,
                   model_name=model_name, batch=batch, latent_size=latent_size, seed=seed, tolerance=tolerance,
                   overwrite=overwrite, external_data=external_data, float16=float16, progress=progress)


def export_model(name_or_path: str, out_dir: str | Path, *, batch: int = 2, latent_size: int | None = None,
                 seed: int = 0, tolerance: float | None = None, overwrite: bool = False,
                 external_data: bool | None = None, float16: bool = False, progress=print) -> ExportReport:
    """Export a zoo model (random weights from `seed`, generated tensor by tensor) or a local diffusers
    pipeline/UNet folder (its safetensors, read tensor by tensor) without ever holding two copies of the
    weights: the peak is the torch reference or onnxruntime session of validation, one at a time.

    `float16` writes float16 weights and computes in float16 inside the graph (inputs and output stay
    float32), halving the file; it is validated against the float32 torch model with tolerance 1e-2 unless
    `tolerance` says otherwise. `external_data` forces (True) or forbids (False) the single external weights
    file; by default it is used exactly when the weights would not fit in one 2 GB protobuf."""
    from dgq_compiler.export_weights import SafetensorsWeights, SpilledWeights, module_with_weights
    from models.loader import get_unet, quiet_libraries

    quiet_libraries()
    if name_or_path == "tiny":  # the embedded pipeline's own UNet (small): in memory, as everywhere else
        return export_unet(get_unet("tiny", seed=seed), out_dir, model_name=name_or_path, batch=batch,
                           latent_size=latent_size, seed=seed, tolerance=tolerance, overwrite=overwrite,
                           external_data=external_data, float16=float16, progress=progress)
    check_writable(out_dir, overwrite=overwrite, kind="folder")
    config, folder = model_config(name_or_path)
    if folder is None:
        def open_source(scratch):
            progress(f"generating {name_or_path}'s random weights (seed {seed}) ...")
            return SpilledWeights(config, seed, scratch / "weights.bin")
    else:
        def open_source(_scratch):
            return SafetensorsWeights(folder)
    return _export(config, open_source, lambda source: module_with_weights(config, source), out_dir,
                   model_name=name_or_path, batch=batch, latent_size=latent_size, seed=seed,
                   tolerance=tolerance, overwrite=overwrite, external_data=external_data, float16=float16,
                   progress=progress)


def model_config(name_or_path: str) -> tuple[dict, Path | None]:
    """(UNet config, UNet folder or None for a zoo name) of what `export_model` accepts; a clear error otherwise."""
    from models.loader import folder_kind
    from models.zoo import ALIASES, ZOO_NAMES, read_unet_config, zoo_config

    if ALIASES.get(name_or_path, name_or_path) in ZOO_NAMES:
        return zoo_config(name_or_path), None
    path = Path(name_or_path)
    if not path.exists() and "/" not in name_or_path and "\\" not in name_or_path:
        raise DgqError(f"unknown model {name_or_path!r}: expected one of {', '.join(ZOO_NAMES)} "
                       "or a local diffusers folder")
    folder = path / "unet" if folder_kind(path) == "pipeline" else path
    return read_unet_config(folder), folder
