"""Export a diffusers UNet2DConditionModel to an fp32 ONNX graph (opset 21) and validate it in onnxruntime.

Output folder:  unet.onnx (+ unet.onnx.data when over 2 GB), module_map.json, export.json.
Attention is exported through diffusers' `AttnProcessor` (explicit MatMul -> Softmax -> MatMul),
so the probabilities are a tensor the passes can quantize and split.
"""
from __future__ import annotations

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
VALIDATION_TIMESTEPS = (999.0, 1.0)


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
    max_abs_error: dict = field(default_factory=dict)   # timestep -> error (relative to max(1, |ref|))
    seconds: dict = field(default_factory=dict)

    @property
    def worst_error(self) -> float:
        return max(self.max_abs_error.values(), default=0.0)


def _wrapper(unet):
    import torch

    sdxl = getattr(unet.config, "addition_embed_type", None) == "text_time"

    class UNetForExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet  # the attribute name is the scope root the module map strips

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
            added = {"text_embeds": text_embeds, "time_ids": time_ids} if sdxl else None
            return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added,
                             return_dict=False)[0]

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


def _torch_export(wrapper, inputs: dict, path: Path) -> None:
    import warnings

    import torch

    names = list(inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(inputs.values()), str(path), input_names=names,
                          output_names=["out_sample"], dynamic_axes=_dynamic_axes(names),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _consolidate(path: Path, external: bool) -> None:
    """Re-save the graph with all weights in one external file (over 2 GB) or inline; check on the path.

    The external case streams tensor by tensor (the exporter writes one file per tensor), so memory
    stays at one tensor rather than a second copy of the model.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if not external:
        model = onnx.load(str(path), load_external_data=True)
        for stray in path.parent.iterdir():
            if stray.name != path.name:
                stray.unlink()  # the exporter's one-file-per-tensor external data, if any
        onnx.save_model(model, str(path))
        onnx.checker.check_model(str(path), full_check=False)
        return
    model = onnx.load(str(path), load_external_data=False)
    weights_path = path.parent / WEIGHTS_NAME
    offset = 0
    with open(weights_path, "wb") as sink:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):
                source = path.parent / ExternalDataInfo(tensor).location
                data = source.read_bytes()
                source.unlink()
            else:
                data = tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes()
                if len(data) < 1024:
                    continue  # small tensors stay inline
                tensor.ClearField("raw_data")
                for field in ("float_data", "int32_data", "int64_data", "double_data"):
                    tensor.ClearField(field)
            pad = (-offset) % 4096  # page-aligned, so runtimes can memory-map the tensors
            sink.write(b"\0" * pad)
            offset += pad
            sink.write(data)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", WEIGHTS_NAME), ("offset", offset), ("length", len(data))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(data)
    for stray in path.parent.iterdir():
        if stray.name not in (path.name, WEIGHTS_NAME):
            stray.unlink()
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path), full_check=False)


def validate(graph_path: Path, unet, wrapper, batch: int, latent_size: int, seed: int) -> dict:
    """Max abs error of onnxruntime against torch, per timestep, scaled by max(1, max|torch output|)."""
    import numpy as np
    import torch

    from dgq_compiler import runtime

    session = runtime.session(graph_path, "reference", prepacking=False)  # no second copy of the weights
    errors = {}
    for k, t in enumerate(VALIDATION_TIMESTEPS):
        inputs = example_inputs(unet, batch, latent_size, t, seed + 1 + k)
        with torch.no_grad():
            ref = wrapper(*inputs.values()).numpy()
        got = session.run(["out_sample"], {n: v.numpy() for n, v in inputs.items()})[0]
        errors[str(t)] = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
    return errors


def export_unet(unet, out_dir: str | Path, *, model_name: str = "unet", batch: int = 2,
                latent_size: int | None = None, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
                overwrite: bool = False, external_data: bool | None = None, progress=print) -> ExportReport:
    """Export, consolidate, map modules, validate; the folder appears only if every step succeeded.

    `external_data` forces (True) or forbids (False) the single external weights file; by default it is
    used exactly when the fp32 weights would not fit in one 2 GB protobuf.
    """
    import onnx
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    from passes.module_map import build_module_map, save_module_map

    if not isinstance(unet, UNet2DConditionModel):
        raise DgqError(f"model is a {type(unet).__name__}, expected a diffusers UNet2DConditionModel")
    out_dir = check_writable(out_dir, overwrite=overwrite, kind="folder")
    latent_size = latent_size or int(unet.config.sample_size)
    unet = unet.float().eval()
    unet.set_attn_processor(AttnProcessor())
    wrapper, _ = _wrapper(unet)
    inputs = example_inputs(unet, batch, latent_size, 500.0, seed)
    params = sum(p.numel() for p in unet.parameters())
    # protobuf cannot hold 2 GB; leave headroom for the graph itself
    external = params * 4 > TWO_GB - 64 * 1024**2 if external_data is None else external_data
    seconds = {}
    with atomic_path(out_dir, directory=True) as tmp:
        graph = tmp / GRAPH_NAME
        work = tmp / "export"
        work.mkdir()
        progress(f"exporting {model_name} ({params / 1e6:.1f} M parameters) to ONNX opset {OPSET} ...")
        start = time.perf_counter()
        _torch_export(wrapper, inputs, work / GRAPH_NAME)
        seconds["export"] = time.perf_counter() - start
        start = time.perf_counter()
        _consolidate(work / GRAPH_NAME, external)
        for f in work.iterdir():
            f.rename(tmp / f.name)
        work.rmdir()
        seconds["save_and_check"] = time.perf_counter() - start
        entries = build_module_map(onnx.load(str(graph), load_external_data=False))
        save_module_map(entries, tmp / MODULE_MAP_NAME)
        progress(f"validating in onnxruntime at timesteps {', '.join(str(t) for t in VALIDATION_TIMESTEPS)} ...")
        start = time.perf_counter()
        errors = validate(graph, unet, wrapper, batch, latent_size, seed)
        seconds["validate"] = time.perf_counter() - start
        report = ExportReport(model=model_name, graph=GRAPH_NAME, opset=OPSET, parameters=params,
                              external_data=external, inputs=list(inputs), batch=batch,
                              latent_size=latent_size, tolerance=tolerance, max_abs_error=errors,
                              seconds={k: round(v, 3) for k, v in seconds.items()})
        if report.worst_error > tolerance:
            raise DgqError(f"exported graph does not match torch: max abs error {report.worst_error:.3g} "
                           f"> tolerance {tolerance:g}")
        (tmp / REPORT_NAME).write_text(report_json(asdict(report)))
    return report
