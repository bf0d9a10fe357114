"""An attention processor with taps: diffusers' AttnProcessor arithmetic (explicit softmax probabilities,
the same ops the ONNX export carries), with the q/k/v projections and the probs.V product handed to a tap.

Observers (calibration) read the tensors; the fake-quant reference replaces them by their quantized values.
"""
from __future__ import annotations


class PassThroughTap:
    """The default tap: FP attention (what diffusers' AttnProcessor computes)."""

    def qkv(self, name: str, role: str, tensor, cross: bool):
        return tensor

    def attend(self, name: str, probs, value, cross: bool):
        import torch

        return torch.bmm(probs, value)


class TapAttnProcessor:
    def __init__(self, name: str, tap):
        self.name = name
        self.tap = tap

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        cross = encoder_hidden_states is not None
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        tap, name = self.tap, self.name
        query = attn.head_to_batch_dim(tap.qkv(name, "q", query, cross))
        key = attn.head_to_batch_dim(tap.qkv(name, "k", key, cross))
        value = attn.head_to_batch_dim(tap.qkv(name, "v", value, cross))

        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        hidden_states = tap.attend(name, attention_probs, value, cross)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_modules(unet) -> dict:
    """name -> diffusers Attention module, in module order."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}


class tapped_attention:
    """Context manager: every Attention of `unet` runs a TapAttnProcessor with `tap`; the old processors return after."""

    def __init__(self, unet, tap):
        self.unet, self.tap, self.saved = unet, tap, {}

    def __enter__(self):
        for name, module in attention_modules(self.unet).items():
            self.saved[name] = module.processor
            module.set_processor(TapAttnProcessor(name, self.tap))
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        modules = attention_modules(self.unet)
        for name, processor in self.saved.items():
            modules[name].set_processor(processor)
        self.saved = {}
