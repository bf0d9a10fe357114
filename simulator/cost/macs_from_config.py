"""MACs of one UNet forward from an architecture config alone: a meta-tensor forward with counting hooks.

The UNet is built on the meta device (no weights, no memory, ~1 s for SDXL) with diffusers' plain
`AttnProcessor`, so QK^T and A.V are explicit `baddbmm` / `bmm` calls:
- Conv2d:  MACs = output elements x (in_channels / groups) x kh x kw   (forward hook)
- Linear:  MACs = output elements x in_features                       (forward hook)
- attention matmuls (inside an `Attention` module; the first is QK^T, the second A.V):
  MACs = output elements x contraction length                          (torch-function mode)
Any other batched matmul is counted as kind `other`. Inputs are those of a text-to-image call: `sample`
[B, C, h, w], a timestep, `encoder_hidden_states` [B, 77, D] (+ SDXL's `text_embeds`, `time_ids`).
"""
from __future__ import annotations

import math

from simulator.cost.inventory import FULL_PRECISION_MODULES, LATENT_FACTOR, CountedOp, Inventory, QuantPoint
from simulator.errors import SimulatorError

TEXT_TOKENS = 77  # CLIP context length of SD / SDXL prompts
SDXL_TIME_IDS = 6


def num_downsamples(config: dict) -> int:
    """Every down block but the last halves the resolution (diffusers' `add_downsample=not is_final_block`)."""
    return max(len(config.get("down_block_types") or ()) - 1, 0)


def default_latent(config: dict) -> tuple:
    """The pipeline default: `sample_size` (an int, or [h, w])."""
    size = config.get("sample_size")
    if isinstance(size, int) and size > 0:
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return tuple(size)
    raise SimulatorError(f"UNet config has no usable sample_size ({size!r}): pass --resolution")


def latent_from_resolution(resolution: int, downsamples: int, what: str = "the UNet") -> tuple:
    """Image pixels -> latent (h, w); the latent must be divisible by 2^downsamples to round-trip the UNet."""
    if not isinstance(resolution, int) or resolution <= 0 or resolution % LATENT_FACTOR:
        raise SimulatorError(f"resolution {resolution!r} px is not a positive multiple of {LATENT_FACTOR} "
                             f"(the latent is resolution/{LATENT_FACTOR})")
    latent = resolution // LATENT_FACTOR
    check_latent((latent, latent), downsamples, what)
    return (latent, latent)


def check_latent(latent: tuple, downsamples: int, what: str = "the UNet") -> None:
    factor = 2 ** downsamples
    if any(d % factor for d in latent):
        px = "x".join(str(d * LATENT_FACTOR) for d in latent)
        raise SimulatorError(f"resolution {px} px does not fit {what}: the latent "
                             f"({'x'.join(map(str, latent))}) must be divisible by {factor} "
                             f"({downsamples} downsamples), i.e. the resolution by {factor * LATENT_FACTOR}")


def _example_inputs(cfg, batch: int, latent: tuple) -> dict:
    """Meta tensors with the shapes a text-to-image pipeline feeds the UNet."""
    import torch

    text_dim = cfg.encoder_hid_dim if cfg.encoder_hid_dim_type == "text_proj" else cfg.cross_attention_dim
    if isinstance(text_dim, (list, tuple)):
        text_dim = text_dim[0]
    with torch.device("meta"):
        inputs = {"sample": torch.empty(batch, cfg.in_channels, *latent),
                  "timestep": torch.tensor([500.0]),
                  "encoder_hidden_states": torch.empty(batch, TEXT_TOKENS, text_dim)}
        if cfg.addition_embed_type == "text_time":
            text_embeds = cfg.projection_class_embeddings_input_dim - SDXL_TIME_IDS * cfg.addition_time_embed_dim
            inputs["added_cond_kwargs"] = {"text_embeds": torch.empty(batch, text_embeds),
                                           "time_ids": torch.empty(batch, SDXL_TIME_IDS)}
        labels = _class_labels(cfg, batch)
        if labels is not None:
            inputs["class_labels"] = labels
    return inputs


def _class_labels(cfg, batch: int):
    import torch

    kind = cfg.class_embed_type
    if kind is None:
        return torch.zeros(batch, dtype=torch.long) if cfg.num_class_embeds else None
    if kind == "timestep":
        return torch.empty(batch)
    if kind == "identity":
        return torch.empty(batch, cfg.time_embedding_dim or cfg.block_out_channels[0] * 4)
    return torch.empty(batch, cfg.projection_class_embeddings_input_dim)  # projection / simple_projection


class _Counter:
    """Hooks + a torch-function mode that append CountedOps and QuantPoints while the meta forward runs."""

    def __init__(self, batch: int):
        self.batch = batch
        self.ops: list[CountedOp] = []
        self.points: list[QuantPoint] = []
        self.layers: dict[str, object] = {}   # executed Conv2d/Linear modules by path
        self.attention: list[list] = []       # stack of [module path, is_cross, matmuls seen]

    def layer_hook(self, name: str, kind: str):
        def hook(module, args, output):
            reduce = (module.in_channels // module.groups * math.prod(module.kernel_size) if kind == "conv"
                      else module.in_features)
            channels = module.in_channels if kind == "conv" else module.in_features
            fp = name in FULL_PRECISION_MODULES
            self.ops.append(CountedOp(name, kind, output.numel() * reduce, output.numel(), full_precision=fp,
                                      a_elements=args[0].numel(), b_elements=module.weight.numel()))
            if name not in self.layers and not fp:
                self.points.append(QuantPoint(name, "input", channels))
            self.layers[name] = module
        return hook

    def attention_enter(self, name: str):
        def hook(module, args, kwargs):
            cross = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None) is not None
            self.attention.append([name, cross, 0])
        return hook

    def attention_exit(self, module, args, kwargs, output):
        self.attention.pop()

    def matmul(self, a, b, out) -> None:
        """A batched matmul a @ b -> out: attention QK^T / A.V when inside an Attention module."""
        reduce = a.shape[-1]
        macs = out.numel() * reduce
        if not self.attention:
            self.ops.append(CountedOp("", "other", macs, out.numel(), a_elements=a.numel(), b_elements=b.numel(),
                                      slices=math.prod(a.shape[:-2])))
            return
        frame = self.attention[-1]
        name, cross, seen = frame
        frame[2] += 1
        heads_batch = math.prod(a.shape[:-2])
        if seen % 2 == 0:   # QK^T: a = q [.., Nq, d], b = k^T [.., d, Nk]
            self.ops.append(CountedOp(name, "attn_qk", macs, out.numel(), cross=cross, keys=b.shape[-1],
                                      a_elements=a.numel(), b_elements=b.numel(), slices=heads_batch))
            self.points.append(QuantPoint(name, "q", heads_batch // self.batch * a.shape[-1]))
            self.points.append(QuantPoint(name, "k", heads_batch // self.batch * b.shape[-2]))
        else:               # A.V: a = probabilities [.., Nq, Nk], b = v [.., Nk, dv]
            self.ops.append(CountedOp(name, "attn_av", macs, out.numel(), cross=cross, keys=reduce,
                                      a_elements=a.numel(), b_elements=b.numel(), slices=heads_batch))
            self.points.append(QuantPoint(name, "v", heads_batch // self.batch * b.shape[-1]))


def _matmul_mode(counter: _Counter):
    import torch
    from torch.overrides import TorchFunctionMode

    batched = {torch.bmm, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__}

    class CountMatmuls(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.baddbmm or func is torch.Tensor.baddbmm:
                counter.matmul(args[1], args[2], out)
            elif func in batched and args[0].dim() >= 3:
                counter.matmul(args[0], args[1], out)
            return out

    return CountMatmuls()


def build_meta_unet(config: dict):
    """A weightless UNet with explicit attention matmuls."""
    from models.zoo import unet_from_config

    unet = unet_from_config(config, device="meta")
    try:
        unet.set_default_attn_processor()  # AttnProcessor (or AttnAddedKVProcessor): explicit baddbmm + bmm
    except ValueError as exc:
        raise SimulatorError(f"UNet attention cannot use diffusers' default processor: {exc}") from None
    return unet


def inventory_from_config(config: dict, *, batch: int = 2, resolution: int | None = None,
                          model: str = "config", unet=None) -> Inventory:
    """Count one forward of the UNet `config` at `batch` and `resolution` px (default: its sample_size x 8)."""
    import torch
    from diffusers.models.attention_processor import Attention

    if not isinstance(batch, int) or batch < 1:
        raise SimulatorError(f"batch must be a positive integer, got {batch!r}")
    if not isinstance(config, dict):
        raise SimulatorError(f"UNet config must be a JSON object, got {type(config).__name__}")
    latent = (default_latent(config) if resolution is None
              else latent_from_resolution(resolution, num_downsamples(config), f"the UNet of {model!r}"))
    check_latent(latent, num_downsamples(config), f"the UNet of {model!r}")
    unet = unet if unet is not None else build_meta_unet(config)
    counter = _Counter(batch)
    handles = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(counter.layer_hook(name, "conv")))
        elif isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(counter.layer_hook(name, "linear")))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_pre_hook(counter.attention_enter(name), with_kwargs=True))
            handles.append(module.register_forward_hook(counter.attention_exit, with_kwargs=True))
    try:
        inputs = _example_inputs(unet.config, batch, latent)
        with torch.no_grad(), _matmul_mode(counter):
            unet(**inputs, return_dict=False)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError, AssertionError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimulatorError(f"UNet config of {model!r} cannot run a forward pass at latent "
                             f"{latent[0]}x{latent[1]}: {first_line}") from None
    finally:
        for handle in handles:
            handle.remove()
    quantized = [m for n, m in counter.layers.items() if n not in FULL_PRECISION_MODULES]
    quantized_elements = sum(m.weight.numel() for m in quantized)
    total = sum(p.numel() for p in unet.parameters())
    return Inventory(source="config", model=model, batch=batch, latent=latent, ops=tuple(counter.ops),
                     quantized_weight_elements=quantized_elements,
                     weight_channels=sum(m.weight.shape[0] for m in quantized),
                     fp_param_elements=total - quantized_elements, points=tuple(counter.points))
