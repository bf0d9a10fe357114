"""The torch fake-quant reference: a recipe applied to a diffusers UNet with the contract's arithmetic.

float32, round half to even (torch.round), the step index of the nearest calibrated timestep:
  uniform  q = clamp(round(x / s) + z, 0, 2^b - 1),  x_hat = (q - z) * s
  weights  q = clamp(round(w / s) + z, -2^(b-1), 2^(b-1) - 1),  w_hat = (q - z) * s   (per output channel;
           q = the recipe's codes where reconstruction learned the rounding)
  log2     q = clamp(round(-log2(x / S)), 0, 2^b - 1),  x_hat = S * 2^-q,  S = each sample's max of the probs
           (dynamic: probs are [B*heads, N, M], a sample is `heads` consecutive rows)
Pixel groups at another resolution than the calibrated one: the map resampled as the graph does
(passes/pixel_groups.py: the nearest calibrated pixel below, integer arithmetic).
Text embedding with exclude_bos (MixDQ, the input of attn2.to_k/to_v): token 0 stays FP.
Cross-attention with exclude_bos: k/v token 0 and the probs' column 0 stay FP, and
  A.V = A[..., :1] @ V[:, :1] + Qlog(A[..., 1:]) @ V[:, 1:].
So quantized images come from the ordinary diffusers pipeline, on any device, and the ONNX graph can be
checked against it.
"""
from __future__ import annotations

from dgq_compiler.calibrate.attention import attention_modules, tapped_attention
from dgq_compiler.calibrate.schedule import StepTracker
from dgq_compiler.calibrate.points import quantizable_layers
from dgq_compiler.errors import DgqError
from passes.pixel_groups import level_grid, resample_map_numpy


def quantize_uniform(x, scale, zero, bits: int):
    """Fake-quantize on the unsigned grid; `scale`/`zero` broadcast against x (float32)."""
    import torch

    q = torch.clamp(torch.round(x / scale) + zero, 0, 2 ** bits - 1)
    return (q - zero) * scale


def quantize_log2(x, peak, bits: int):
    """Fake-quantize probabilities on the log2 grid below `peak` (0 -> the last code)."""
    import torch

    q = torch.clamp(torch.round(-torch.log2(x / peak)), 0, 2 ** bits - 1)
    return peak * torch.exp2(-q)


class FakeQuant:
    """Handle of an applied recipe: weights replaced, activation quantizers hooked; `remove()` restores the UNet."""

    def __init__(self, unet, recipe, weights: bool = True, activations: bool = True, straight_through: bool = False):
        recipe.check_unet(unet)
        self.unet, self.recipe = unet, recipe
        self.straight_through = straight_through  # gradients pass the rounding unchanged (block reconstruction)
        self._saved, self._handles, self._attention, self._cache = {}, [], None, {}
        self._sample_hw, self._heads = tuple(recipe.resolution), {}
        self.steps = StepTracker(unet, recipe.step_index)
        try:
            if weights:
                self._quantize_weights()
            if activations:
                self._handles.append(unet.register_forward_pre_hook(self._record_sample_size, with_kwargs=True))
                self._heads = {name: m.heads for name, m in attention_modules(unet).items()}
                layers = quantizable_layers(unet)
                for (module, role) in recipe.tensors:
                    if role == "input":
                        self._handles.append(layers[module].register_forward_pre_hook(self._input_hook(module)))
                self._attention = tapped_attention(unet, self).__enter__()
        except BaseException:
            self.remove()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._attention is not None:
            self._attention.remove()
            self._attention = None
        modules = dict(self.unet.named_modules())
        for name, original in self._saved.items():
            modules[name].weight.data = original
        self._saved = {}
        self.steps.remove()

    # -- weights
    def _quantize_weights(self):
        import torch

        from dgq_compiler.quantize.weights import fake_quant_weight

        modules = dict(self.unet.named_modules())
        for (module, role), tq in self.recipe.tensors.items():
            if role != "weight":
                continue
            weight = modules[module].weight
            w = weight.data.float().reshape(weight.shape[0], -1)
            scale = torch.from_numpy(tq.scale).to(w.device)
            zero = torch.from_numpy(tq.zero_point).to(w.device)
            self._saved[module] = weight.data
            if tq.codes is not None:  # learned rounding: the recipe's codes, dequantized as the graph does
                codes = torch.from_numpy(tq.codes.astype("float32")).to(w.device).reshape(w.shape)
                w_hat = (codes - zero[:, None].float()) * scale[:, None]
            else:
                w_hat = fake_quant_weight(w, scale, zero, tq.bits)
            weight.data = w_hat.reshape(weight.shape).to(weight.dtype)

    # -- activations
    def _record_sample_size(self, _module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        self._sample_hw = (int(sample.shape[-2]), int(sample.shape[-1]))

    def _pixel_grid(self, tq, n: int, x):
        """(calibrated level grid, (h, w) now) when x's pixels differ from the map's n (resample), else (None, None).
        Text-token axes keep their length, so they never resample."""
        pixels = x.shape[2] * x.shape[3] if x.ndim == 4 else (x.shape[1] if x.ndim == 3 else 0)
        if pixels == n:
            return None, None
        grid = level_grid(n, self.recipe.resolution)
        if grid is None:
            raise DgqError(f"recipe ({tq.module}, {tq.role}) groups {n} pixels/tokens, the tensor has {pixels}, "
                           f"and {n} is no level of the calibrated grid {list(self.recipe.resolution)}")
        if x.ndim == 4:
            h, w = int(x.shape[2]), int(x.shape[3])
        else:  # tokens: the level's size from the UNet's sample, as the graph computes it
            h, w = (-(-d // grid.factor) for d in self._sample_hw)
        if h * w != pixels:
            raise DgqError(f"recipe ({tq.module}, {tq.role}): {pixels} tokens are not the {h}x{w} pixels of its level")
        return grid, (h, w)

    def _params(self, tq, step: int, x, tokens_offset: int = 0):
        """scale, zero point (float32) shaped to broadcast against x for this step."""
        import torch

        key = (tq.module, tq.role, step, x.ndim, tuple(x.shape[1:]), self._sample_hw, x.device)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        scale = torch.from_numpy(tq.scale[step]).to(x.device)
        zero = torch.from_numpy(tq.zero_point[step].astype("float32")).to(x.device)
        index, shape = self.group_layout(tq, step, x)
        if index is not None:
            scale, zero = scale[index], zero[index]
        out = scale.reshape(shape), zero.reshape(shape)
        self._cache[key] = out
        return out

    def group_layout(self, tq, step: int, x):
        """(per-index group indices into the step's [G] table row, or None per tensor; the shape that broadcasts
        the gathered row against x): pixel maps resampled to x's size, channel counts checked."""
        import torch

        if tq.axis == "tensor":
            return None, ()
        row = tq.group_map[0 if tq.shared_map else step]
        n = row.shape[0]
        if tq.axis == "pixel":
            grid, size = self._pixel_grid(tq, n, x)
            if grid is not None:
                row = resample_map_numpy(row, grid, size[0], size[1])
        index = torch.from_numpy(row.astype("int64")).to(x.device)
        if tq.axis == "channel":
            shape = [1, n, 1, 1] if x.ndim == 4 else [1] * (x.ndim - 1) + [n]
        else:
            shape = [1, 1, x.shape[2], x.shape[3]] if x.ndim == 4 else [1, index.shape[0], 1]
        if tq.axis == "channel" and (x.shape[1] if x.ndim == 4 else x.shape[-1]) != n:
            raise DgqError(f"recipe ({tq.module}, {tq.role}) groups {n} channels, the tensor has a different count")
        return index, shape

    def _uniform(self, tq, x):
        scale, zero = self._params(tq, self.steps.index, x)
        return self._through(x, quantize_uniform(x, scale, zero, tq.bits))

    def _through(self, x, x_hat):
        """x_hat, with the straight-through estimator's gradient (identity) when asked for."""
        return x + (x_hat - x).detach() if self.straight_through and x.requires_grad else x_hat

    def _input_hook(self, module):
        import torch

        tq = self.recipe.tensors[(module, "input")]

        def hook(_module, args):
            x = args[0]
            if tq.exclude_bos:  # the text embedding's <start> row stays FP (token axis 1 of [B, N, C])
                return (torch.cat([x[:, :1], self._uniform(tq, x[:, 1:])], dim=1), *args[1:])
            return (self._uniform(tq, x), *args[1:])
        return hook

    def qkv(self, name, role, tensor, cross):
        import torch

        tq = self.recipe.tensors.get((name, role))
        if tq is None:
            return tensor
        if tq.exclude_bos and cross:  # token 0 (<start>) stays FP
            return torch.cat([tensor[:, :1], self._uniform(tq, tensor[:, 1:])], dim=1)
        return self._uniform(tq, tensor)

    def _probs(self, tq, probs):
        import torch

        step = self.steps.index
        if tq.quantizer == "log2":
            if tq.dynamic:  # per sample: a sample's `heads` consecutive rows of [B*heads, N, M] share one max
                heads = self._heads.get(tq.module, 1)
                peak = probs.reshape(-1, heads * probs.shape[1] * probs.shape[2]).amax(dim=1)
                peak = peak.repeat_interleave(heads).reshape(-1, 1, 1)
            else:
                peak = torch.tensor(float(tq.scale[step, 0]), device=probs.device)
            return self._through(probs, quantize_log2(probs, peak, tq.bits))
        return self._uniform(tq, probs)

    def attend(self, name, probs, value, cross):
        import torch

        tq = self.recipe.tensors.get((name, "attn_probs"))
        if tq is None:
            return torch.bmm(probs, value)
        if tq.exclude_bos and cross:
            return torch.bmm(probs[..., :1], value[:, :1]) + torch.bmm(self._probs(tq, probs[..., 1:]), value[:, 1:])
        return torch.bmm(self._probs(tq, probs), value)


def apply_recipe(unet, recipe, weights: bool = True, activations: bool = True,
                 straight_through: bool = False) -> FakeQuant:
    """Quantize `unet` in place by `recipe`; use as a context manager or call `.remove()` to restore it."""
    return FakeQuant(unet, recipe, weights=weights, activations=activations, straight_through=straight_through)
