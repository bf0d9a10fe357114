"""A diffusers Stable Diffusion pipeline whose UNet is an onnxruntime session, wrapped the way optimum wraps it.

`OnnxUNet` stands where the torch UNet stood: it keeps the UNet's config (the pipeline reads in_channels,
sample_size, time_cond_proj_dim), turns a scalar timestep into a 1-D one as optimum's ORTUnet does, runs a
default onnxruntime session (no options) and hands the noise prediction back as a torch tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

from dgq_compiler.errors import DgqError


class OnnxUNet:
    """Callable like `UNet2DConditionModel` (sample, timestep, encoder_hidden_states) over an ONNX UNet graph."""

    def __init__(self, graph: str | Path, config: dict):
        from diffusers.configuration_utils import FrozenDict

        from dgq_compiler import runtime

        self.session = runtime.session(graph, "default")  # stock settings, as optimum opens it
        self.config = FrozenDict({**config, "time_cond_proj_dim": config.get("time_cond_proj_dim")})
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.calls: list[tuple[int, ...]] = []  # timestep shapes fed, for whoever wants to check

    @property
    def dtype(self):
        import torch

        return torch.float32

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **_unused):
        import numpy as np
        import torch

        timestep = np.asarray(torch.as_tensor(timestep).cpu(), dtype=np.float32).reshape(-1)  # scalar -> [1]
        self.calls.append(timestep.shape)
        feed = {"sample": sample.detach().cpu().numpy().astype(np.float32), "timestep": timestep,
                "encoder_hidden_states": encoder_hidden_states.detach().cpu().numpy().astype(np.float32)}
        out = torch.from_numpy(self.session.run(["out_sample"], {k: v for k, v in feed.items() if k in self.inputs})[0])
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


def onnx_unet_pipeline(pipeline: str | Path, unet_graph: str | Path):
    """The diffusers pipeline in folder `pipeline` (torch text encoder and VAE) with `unet_graph` as its UNet."""
    from models.loader import load_pipeline

    pipeline, unet_graph = Path(pipeline), Path(unet_graph)
    if not unet_graph.is_file():
        raise DgqError(f"UNet graph {str(unet_graph)!r} not found")
    pipe = load_pipeline(pipeline)
    config = json.loads((pipeline / "unet" / "config.json").read_text(encoding="utf-8"))
    return with_onnx_unet(pipe, unet_graph, config)


def with_onnx_unet(pipe, unet_graph: str | Path, unet_config: dict | None = None):
    """A pipeline sharing `pipe`'s text encoder, VAE, tokenizer and scheduler, with `unet_graph` as its UNet
    (`unet_config`: the UNet's config, by default `pipe.unet.config`)."""
    import copy

    components = dict(pipe.components)
    components["scheduler"] = copy.deepcopy(pipe.scheduler)  # its own: PNDM keeps state from step to step
    components["unet"] = OnnxUNet(unet_graph, dict(unet_config if unet_config is not None else pipe.unet.config))
    onnx_pipe = type(pipe)(**components)
    onnx_pipe.set_progress_bar_config(disable=True)
    return onnx_pipe
