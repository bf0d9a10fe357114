"""An attention processor with taps: diffusers' AttnProcessor arithmetic (explicit softmax probabilities,
the same ops the ONNX export carries), with the q/k/v projections and the probs.V product handed to a tap.

Observers (calibration) read the tensors; the fake-quant reference replaces them by their quantized values.
"""
from __future__ import annotations

import inspect


class PassThroughTap:
    """The default tap: FP attention (what diffusers' AttnProcessor computes)."""

    def qkv(self, name: str, role: str, tensor, cross: bool):
        return tensor

    def attend(self, name: str, probs, value, cross: bool):
        import torch

        return torch.bmm(probs, value)


class AttentionScratch:
    """Two buffers (scores, probs) reused by every attention of a UNet, grown to the largest [B*heads, Nq, Nk].

    Explicit attention otherwise allocates and frees two such tensors per call; on CPU those large blocks go
    back to the OS each time and every reuse page-faults, which costs more than the softmax itself. The
    arithmetic is the same ops as `Attention.get_attention_scores` (baddbmm with beta 0, then softmax), only
    written into these buffers, so the probabilities are bitwise the same. A tap must not keep `probs` past
    `attend`: the next attention overwrites it.
    """

    def __init__(self):
        self.flat, self.views = {}, {}

    def view(self, slot: str, shape, like):
        import torch

        key = (slot, tuple(shape), like.dtype, like.device)
        view = self.views.get(key)
        if view is not None:
            return view
        numel = 1
        for n in shape:
            numel *= n
        flat = self.flat.get(key[:1] + key[2:])
        if flat is None or flat.numel() < numel:
            flat = self.flat[key[:1] + key[2:]] = torch.empty(numel, dtype=like.dtype, device=like.device)
            self.views = {k: v for k, v in self.views.items() if k[0] != slot or k[2:] != key[2:]}
        view = self.views[key] = flat[:numel].view(shape)
        return view

    @staticmethod
    def applies(attn, query, key, attention_mask) -> bool:
        """False for masks, autograd and upcasting: those take diffusers' own path."""
        import torch

        return not (attention_mask is not None or torch.is_grad_enabled() or query.dtype != key.dtype
                    or (query.dtype != torch.float32 and (attn.upcast_attention or attn.upcast_softmax)))

    def probs(self, attn, query, key, attention_mask):
        """attn.get_attention_scores(query, key, attention_mask), or None when this path does not apply."""
        import torch

        if not self.applies(attn, query, key, attention_mask):
            return None
        shape = (query.shape[0], query.shape[1], key.shape[1])
        scores = self.view("scores", shape, query)
        torch.baddbmm(scores, query, key.transpose(-1, -2), beta=0, alpha=attn.scale, out=scores)
        probs = self.view("probs", shape, query)
        return torch.softmax(scores, dim=-1, out=probs)

    def clear(self):
        self.flat, self.views = {}, {}


class TapAttnProcessor:
    """Explicit attention with `tap` called on q, k, v (`qkv`) and on the probabilities (`attend` -> probs.V).

    A tap may also take the attention in slices of batch*heads: `attend_rows(name, cross, (BH, Nq, Nk))` returns
    rows per slice (or None), and `attend_slice(name, probs, value, cross, start, total, out)` then writes each
    slice's probs.V into `out`. Only with an AttentionScratch (the slices reuse its buffers).
    """

    def __init__(self, name: str, tap, scratch: AttentionScratch | None = None):
        # diffusers' Attention.forward runs inspect.signature(processor.__call__) on every call (to filter
        # its kwargs; ~5% of a tiny-model calibration). Calls go through the class's __call__; this
        # instance attribute only answers that lookup, with a signature computed once.
        self.__call__ = _signature_only
        self.name = name
        self.tap = tap
        self.scratch = scratch

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

        rows = self._slice_rows(attn, query, key, attention_mask, cross)
        if rows:
            hidden_states = self._sliced_attention(attn, query, key, value, cross, rows)
        else:
            attention_probs = None if self.scratch is None else self.scratch.probs(attn, query, key, attention_mask)
            if attention_probs is None:
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

    def _slice_rows(self, attn, query, key, attention_mask, cross) -> int | None:
        """Batch*head rows per slice when the tap takes the attention in slices (see TapAttnProcessor), else None."""
        attend_rows = getattr(self.tap, "attend_rows", None)
        if self.scratch is None or attend_rows is None or attention_mask is not None:
            return None
        shape = (query.shape[0], query.shape[1], key.shape[1])
        rows = attend_rows(self.name, cross, shape)
        return rows if rows and rows < shape[0] and self.scratch.applies(attn, query, key, attention_mask) else None

    def _sliced_attention(self, attn, query, key, value, cross, rows: int):
        """probs.V slice by slice along batch*heads: every op (baddbmm, softmax, bmm) treats each batch*head on its
        own, so the result is the whole-tensor one, while one slice's scores and probs stay in cache."""
        total = query.shape[0]
        out = query.new_empty(total, query.shape[1], value.shape[-1])
        start = 0
        for q, k, v, o in zip(query.split(rows), key.split(rows), value.split(rows), out.split(rows)):
            probs = self.scratch.probs(attn, q, k, None)
            self.tap.attend_slice(self.name, probs, v, cross, start, total, o)
            start += q.shape[0]
        return out


def _signature_only(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                    **kwargs):
    """Stands for TapAttnProcessor.__call__ where diffusers only reads its signature (see TapAttnProcessor)."""
    raise TypeError("call the processor itself")


_signature_only.__signature__ = inspect.signature(_signature_only)


def attention_modules(unet) -> dict:
    """name -> diffusers Attention module, in module order."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}


class tapped_attention:
    """Context manager: every Attention of `unet` runs a TapAttnProcessor with `tap`; the old processors return after.

    reuse_buffers: scores and probabilities go to one AttentionScratch shared by all attentions (much faster
    on CPU, same values); only for taps that do not keep `probs` after `attend` returns.
    """

    def __init__(self, unet, tap, reuse_buffers: bool = False):
        self.unet, self.tap, self.saved = unet, tap, {}
        self.scratch = AttentionScratch() if reuse_buffers else None

    def __enter__(self):
        for name, module in attention_modules(self.unet).items():
            self.saved[name] = module.processor
            module.set_processor(TapAttnProcessor(name, self.tap, self.scratch))
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        modules = attention_modules(self.unet)
        for name, processor in self.saved.items():
            modules[name].set_processor(processor)
        self.saved = {}
        if self.scratch is not None:
            self.scratch.clear()
