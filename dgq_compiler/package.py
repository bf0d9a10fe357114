"""`dgq package`: a complete ONNX Stable Diffusion folder in optimum's layout, around a compiled UNet.

    out/model_index.json                 the source pipeline's component table
    out/scheduler/scheduler_config.json
    out/tokenizer/                       tokenizer.json + vocab.json, merges.txt, special_tokens_map.json
    out/text_encoder/model.onnx          CLIP text model: input_ids -> last_hidden_state, pooler_output
    out/vae_decoder/model.onnx           latent_sample -> sample
    out/unet/model.onnx (+ weights file) the compiled UNet, byte for byte
    out/*/config.json                    each component's diffusers/transformers config
    out/package.json                     what was written and how each exported part matched torch

`optimum.onnxruntime.ORTStableDiffusionPipeline.from_pretrained(out)` loads it as it is (benchmarks/
deploy_optimum.py checks that in its own environment); the folder appears only when complete.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable

ONNX_NAME = "model.onnx"
REPORT_NAME = "package.json"
TOLERANCE = 1e-4  # exported text encoder / VAE decoder vs torch: max |diff| / max(1, max |torch|)


@dataclass
class PackageReport:
    output: str
    pipeline: str
    unet: str
    components: list = field(default_factory=list)   # rows: component, file, inputs, outputs, max_error, bytes
    seconds: dict = field(default_factory=dict)


def resolve_compiled(path: str | Path) -> Path:
    """The compiled UNet graph: a `dgq compile` folder (its unet.onnx) or an .onnx file."""
    path = Path(path)
    if path.is_dir():
        path = path / "unet.onnx"
    if not path.is_file() or path.suffix != ".onnx":
        raise DgqError(f"compiled graph {str(path)!r} not found (expected a `dgq compile` folder or its unet.onnx)")
    return path


def pipeline_folder(pipeline: str | Path, workdir: Path) -> Path:
    """'embedded' (the shipped trained model), 'tiny' (saved into `workdir`) or a diffusers pipeline folder."""
    if str(pipeline) == "embedded":
        from models.trained import trained_pipeline_dir

        return trained_pipeline_dir()
    if str(pipeline) == "tiny":
        from models.tiny_pipeline import save_tiny_pipeline

        save_tiny_pipeline(workdir / "tiny")
        return workdir / "tiny"
    path = Path(pipeline)
    if not (path / "model_index.json").is_file():
        raise DgqError(f"pipeline {str(path)!r} is not a diffusers pipeline folder (no model_index.json); "
                       "expected 'embedded', 'tiny' or such a folder")
    return path


def _external_files(graph: Path) -> list[str]:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})


def _dims(value_info) -> list:
    return [d.dim_value or d.dim_param or "?" for d in value_info.type.tensor_type.shape.dim]


def _check_unet_fits(graph: Path, pipe) -> None:
    """The compiled UNet reads this pipeline's latents and text embeddings (static sizes, where declared)."""
    import onnx

    inputs = {vi.name: _dims(vi) for vi in onnx.load(str(graph), load_external_data=False).graph.input}
    for name in ("sample", "timestep", "encoder_hidden_states"):
        if name not in inputs:
            raise DgqError(f"{str(graph)!r} has no {name!r} input (inputs: {', '.join(inputs)}): not a UNet graph")
    wanted = {("sample", 1): pipe.unet.config.in_channels,
              ("encoder_hidden_states", 2): pipe.text_encoder.config.hidden_size}
    for (name, axis), size in wanted.items():
        got = inputs[name][axis] if len(inputs[name]) > axis else None
        if isinstance(got, int) and got != size:
            raise DgqError(f"the compiled UNet's {name} has {got} entries on axis {axis}, the pipeline gives {size} "
                           "(compiled for another model?)")


def _export(module, args: tuple, path: Path, inputs: list, outputs: list, axes: dict) -> None:
    import warnings

    import torch

    from dgq_compiler.export import OPSET

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _max_error(path: Path, feed: dict, reference: list) -> float:
    import numpy as np

    from dgq_compiler import runtime

    got = runtime.session(path, "default").run(None, feed)  # as the client opens it
    return max(float(np.max(np.abs(g - r)) / max(1.0, float(np.max(np.abs(r))))) for g, r in zip(got, reference))


def export_text_encoder(text_encoder, path: Path, seq_len: int) -> float:
    """CLIP text model -> ONNX with optimum's names; returns the max error against torch."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_encoder = text_encoder

        def forward(self, input_ids):
            out = self.text_encoder(input_ids=input_ids, return_dict=True)
            return out.last_hidden_state, out.pooler_output

    wrapper = TextEncoder().eval()
    ids = torch.randint(0, text_encoder.config.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(0))
    _export(wrapper, (ids,), path, ["input_ids"], ["last_hidden_state", "pooler_output"],
            {"input_ids": {0: "batch_size", 1: "sequence_length"},
             "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}})
    with torch.no_grad():
        reference = [t.numpy() for t in wrapper(ids)]
    return _max_error(path, {"input_ids": ids.numpy()}, reference)


def export_vae_decoder(vae, path: Path, latent_size: int) -> float:
    """VAE decoder (post_quant_conv + decoder) -> ONNX: latent_sample -> sample; returns the max error."""
    import torch

    class VaeDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, latent_sample):
            return self.vae.decode(latent_sample, return_dict=False)[0]

    wrapper = VaeDecoder().eval()
    latents = torch.randn(1, vae.config.latent_channels, latent_size, latent_size,
                          generator=torch.Generator().manual_seed(0))
    _export(wrapper, (latents,), path, ["latent_sample"], ["sample"],
            {"latent_sample": {0: "batch_size", 2: "height", 3: "width"},
             "sample": {0: "batch_size", 2: "height", 3: "width"}})
    with torch.no_grad():
        reference = [wrapper(latents).numpy()]
    return _max_error(path, {"latent_sample": latents.numpy()}, reference)


def _io_row(component: str, path: Path, error) -> list:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    size = path.stat().st_size + sum((path.parent / f).stat().st_size for f in _external_files(path))
    return [component, f"{component}/{path.name}", ", ".join(i.name for i in model.graph.input),
            ", ".join(o.name for o in model.graph.output), error, size]


def package_pipeline(compiled: str | Path, pipeline: str | Path, out: str | Path, *, overwrite: bool = False,
                     progress=print) -> PackageReport:
    """Compiled UNet + the diffusers pipeline it came from ('embedded', 'tiny' or a folder) -> an optimum-layout
    ONNX pipeline folder `out`."""
    import tempfile

    graph = resolve_compiled(compiled)
    out = check_writable(out, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="dgq-package-") as workdir:
        return _package(graph, pipeline_folder(pipeline, Path(workdir)), out, progress)


def _package(graph: Path, source: Path, out: Path, progress) -> PackageReport:
    from models.loader import load_pipeline
    from models.tokenizer import LEGACY_FILES, write_legacy_files

    start = time.perf_counter()
    pipe = load_pipeline(source)
    _check_unet_fits(graph, pipe)
    report = PackageReport(output=str(out), pipeline=str(source), unet=str(graph))
    with atomic_path(out, directory=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "model_index.json", tmp / "model_index.json")
        shutil.copytree(source / "scheduler", tmp / "scheduler")
        shutil.copytree(source / "tokenizer", tmp / "tokenizer")
        if not all((tmp / "tokenizer" / name).is_file() for name in LEGACY_FILES):
            write_legacy_files(tmp / "tokenizer")  # what transformers 4.x (optimum) reads
        progress("exporting the text encoder and the VAE decoder to ONNX ...")
        seq_len = pipe.tokenizer.model_max_length
        text_error = export_text_encoder(pipe.text_encoder, tmp / "text_encoder" / ONNX_NAME, seq_len)
        pipe.text_encoder.config.to_json_file(str(tmp / "text_encoder" / "config.json"))
        latent = int(pipe.unet.config.sample_size)
        vae_error = export_vae_decoder(pipe.vae, tmp / "vae_decoder" / ONNX_NAME, latent)
        pipe.vae.save_config(str(tmp / "vae_decoder"))
        for name, error in (("text_encoder", text_error), ("vae_decoder", vae_error)):
            if not error <= TOLERANCE:
                raise DgqError(f"the exported {name} differs from torch by {error:.3g} (tolerance {TOLERANCE:g})")
        progress(f"copying the compiled UNet {graph} ...")
        (tmp / "unet").mkdir()
        shutil.copyfile(graph, tmp / "unet" / ONNX_NAME)
        for name in _external_files(graph):  # the weights file keeps its name: the graph refers to it
            shutil.copyfile(graph.parent / name, tmp / "unet" / name)
        pipe.unet.save_config(str(tmp / "unet"))
        report.components = [_io_row("text_encoder", tmp / "text_encoder" / ONNX_NAME, text_error),
                             _io_row("vae_decoder", tmp / "vae_decoder" / ONNX_NAME, vae_error),
                             _io_row("unet", tmp / "unet" / ONNX_NAME, None)]
        report.seconds = {"total": round(time.perf_counter() - start, 3)}
        (tmp / REPORT_NAME).write_text(json.dumps(asdict(report), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return report
