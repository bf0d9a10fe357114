"""The quantization points of a UNet (DESIGN.md section 4) and their shapes.

Points: the input of every Conv2d/Linear except conv_in/conv_out (role "input"), and per attention
module its q, k, v (to_q/to_k/to_v outputs) and probabilities ("attn_probs"). Shapes come from one
forward pass at batch 1 (on the meta device when the UNet has no weights).
"""
from __future__ import annotations

from dataclasses import dataclass

from dgq_compiler.errors import DgqError
from passes.contract import FP_MODULES


@dataclass(frozen=True)
class QuantPoint:
    module: str     # recipe key: layer path (role input) or attention path (q, k, v, attn_probs)
    role: str       # input | q | k | v | attn_probs
    layout: str     # nchw (conv input) | nlc (tokens x channels) | nc (no pixel axis) | probs
    channels: int   # C (probs: key tokens)
    pixels: int     # H*W or tokens (0 for nc); cross k/v with exclude_bos: tokens 1.. only
    cross: bool = False  # belongs to a cross-attention


def quantizable_layers(unet) -> dict:
    """path -> Conv2d/Linear module whose weights and inputs are quantized (all but conv_in/conv_out)."""
    import torch

    return {name: m for name, m in unet.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and name not in FP_MODULES}


def dummy_inputs(unet, resolution, batch: int = 1, device=None) -> tuple[tuple, dict]:
    """Zero inputs with the UNet's shapes (SD or SDXL conditioning) on the UNet's device."""
    import torch

    cfg = unet.config
    device = device or next(unet.parameters()).device
    h, w = resolution
    sample = torch.zeros(batch, cfg.in_channels, h, w, device=device)
    timestep = torch.tensor([500.0], device=device)
    context = torch.zeros(batch, 77, cfg.cross_attention_dim, device=device)
    kwargs = {"encoder_hidden_states": context}
    if cfg.addition_embed_type == "text_time":
        text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, text_dim, device=device),
                                       "time_ids": torch.zeros(batch, 6, device=device)}
    elif cfg.addition_embed_type is not None:
        raise DgqError(f"UNet addition_embed_type {cfg.addition_embed_type!r} is not supported")
    return (sample, timestep), kwargs


def layout_of(tensor) -> str:
    return {4: "nchw", 3: "nlc", 2: "nc"}.get(tensor.ndim, "")


def sizes_of(tensor) -> tuple[int, int]:
    """(channels, pixels) of an activation in its layout."""
    if tensor.ndim == 4:
        return tensor.shape[1], tensor.shape[2] * tensor.shape[3]
    if tensor.ndim == 3:
        return tensor.shape[2], tensor.shape[1]
    return tensor.shape[-1], 0


class _ShapeTap:
    """Records the shape of q, k, v and the probs of every attention, in call order."""

    def __init__(self, order: list):
        self.order, self.seen = order, {}

    def qkv(self, name, role, tensor, cross):
        self.order.append((name, role))
        self.seen[(name, role)] = (tuple(tensor.shape), cross)
        return tensor

    def attend(self, name, probs, value, cross):
        import torch

        self.order.append((name, "attn_probs"))
        self.seen[(name, "attn_probs")] = (tuple(probs.shape), cross)
        return torch.bmm(probs, value)


def probe_points(unet, resolution, exclude_bos: bool = True) -> list[QuantPoint]:
    """Every quantization point of `unet` at latent `resolution` (H, W), in execution order."""
    import torch

    from dgq_compiler.calibrate.attention import tapped_attention

    layers = quantizable_layers(unet)
    shapes, order = {}, []

    def hook(name):
        def record(_module, args):
            shapes[name] = tuple(args[0].shape)
            order.append((name, "input"))
        return record

    tap = _ShapeTap(order)
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        args, kwargs = dummy_inputs(unet, resolution)
        with torch.no_grad(), tapped_attention(unet, tap):
            unet(*args, **kwargs, return_dict=False)
    finally:
        for h in handles:
            h.remove()
    points = []
    for name, role in dict.fromkeys(order):
        if role == "input":
            shape = shapes[name]
            fake = torch.empty(shape, device="meta")
            c, n = sizes_of(fake)
            points.append(QuantPoint(name, "input", layout_of(fake), c, n))
            continue
        shape, cross = tap.seen[(name, role)]
        if role == "attn_probs":
            points.append(QuantPoint(name, role, "probs", shape[2], shape[1], cross))
        else:
            tokens = shape[1] - 1 if (cross and exclude_bos and role in ("k", "v")) else shape[1]
            points.append(QuantPoint(name, role, "nlc", shape[2], tokens, cross))
    return points
