"""Streaming statistics at every quantization point, per distinct timestep.

Kept per (point, step): per-channel and per-pixel/token min and max (memory: points x T x (C + HW),
never raw activations, never anything per sample). Attention probabilities: the max over the tensor,
in cross-attention also the max without the <start> column and the min/max over calls of the mean
mass on that column. Everything is min/max, so shards merge exactly.

Everything stays on the UNet's device as torch tensors (no host sync per call) until `arrays()`.
"""
from __future__ import annotations

from dgq_compiler.calibrate.attention import tapped_attention
from dgq_compiler.calibrate.points import QuantPoint, layout_of, quantizable_layers, sizes_of
from dgq_compiler.errors import DgqError


def timestep_value(args, kwargs) -> float:
    """The timestep of a UNet call (positional or keyword, tensor or number)."""
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    return float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t)


class StepTracker:
    """Forward pre-hook on the UNet: `index` = index_of(timestep of the current call)."""

    def __init__(self, unet, index_of):
        self.index_of, self.index = index_of, 0
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        self.index = self.index_of(timestep_value(args, kwargs))

    def remove(self):
        self.handle.remove()


class FirstSeenSchedule:
    """Distinct integer timesteps in the order first seen (PNDM repeats one: it merges into one step)."""

    def __init__(self):
        self.timesteps: list[int] = []

    def __call__(self, value: float) -> int:
        if value != round(value):
            raise DgqError(f"timestep {value} is not an integer: calibrate with an integer-timestep scheduler (PNDM)")
        t = int(round(value))
        if t not in self.timesteps:
            self.timesteps.append(t)
        return self.timesteps.index(t)


class StatsObserver:
    """Context manager: while active, every UNet call updates the running statistics.

    For speed each call appends its per-point partial results to two lists (to be reduced by min and by
    max); at the end of the call they are concatenated and folded into that step's two flat running
    buffers with one torch.minimum / torch.maximum. The first call fixes the layout; every later call
    must produce the same sequence of (point, stat, shape).
    """

    def __init__(self, unet):
        self.unet = unet
        self.points: dict[tuple[str, str], QuantPoint] = {}
        self.layout: list | None = None           # [(module, role, stat, kind, shape)] of the first call
        self.mins: dict[int, object] = {}         # step -> flat running minimum
        self.maxs: dict[int, object] = {}
        self._call_mins, self._call_maxs, self._call_layout = [], [], []
        self._handles, self._attention, self.steps = [], None, None

    # -- install / remove
    def __enter__(self):
        self.schedule = FirstSeenSchedule()
        self.steps = StepTracker(self.unet, self.schedule)
        self._handles.append(self.unet.register_forward_pre_hook(self._begin_call))
        self._handles.append(self.unet.register_forward_hook(self._end_call))
        for name, module in quantizable_layers(self.unet).items():
            self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        self._attention = tapped_attention(self.unet, self).__enter__()
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._attention.remove()
        self.steps.remove()

    @property
    def timesteps(self) -> list[int]:
        return list(self.schedule.timesteps)

    # -- per call
    def _begin_call(self, _module, _args):
        self._call_mins, self._call_maxs, self._call_layout = [], [], []
        self._last_input, self._last_partials = None, []

    def _end_call(self, _module, _args, _output):
        import torch

        if self.layout is None:
            self.layout = self._call_layout
        elif self._call_layout != self.layout:
            raise DgqError("the UNet's quantization points or activation shapes changed between calls: "
                           "calibrate one model at one resolution per run")
        step = self.steps.index
        lo = torch.cat(self._call_mins)  # every partial is 1-D
        hi = torch.cat(self._call_maxs)
        if step in self.mins:
            torch.minimum(self.mins[step], lo, out=self.mins[step])
            torch.maximum(self.maxs[step], hi, out=self.maxs[step])
        else:
            self.mins[step], self.maxs[step] = lo, hi
        self._call_mins, self._call_maxs = [], []
        self._last_input, self._last_partials = None, []

    def _add(self, module, role, stat, lo, hi=None):
        """Record a min (and max) partial; `hi` None: a max-only stat passed in `lo`'s place."""
        if hi is None:
            self._call_maxs.append(lo)
            self._call_layout.append((module, role, stat, "max", tuple(lo.shape)))
        else:
            self._call_mins.append(lo)
            self._call_maxs.append(hi)
            self._call_layout.append((module, role, stat, "minmax", tuple(lo.shape)))

    def _point(self, module, role, tensor, cross, layout=None):
        key = (module, role)
        if key not in self.points:
            c, n = sizes_of(tensor)
            self.points[key] = QuantPoint(module, role, layout or layout_of(tensor), c, n, cross)

    def _observe_activation(self, module, role, x, cross=False):
        self._point(module, role, x, cross)
        if x is self._last_input:  # to_q/to_k/to_v (or to_k/to_v) read one tensor: reuse its partials
            partials = self._last_partials
        else:
            partials = self._partials(role, x, cross)
            if role == "input":
                self._last_input, self._last_partials = x, partials
        for stat, lo, hi in partials:
            self._add(module, role, stat, lo, hi)

    @staticmethod
    def _partials(role, x, cross) -> list:
        """[(stat, min over the call, max over the call)], every tensor 1-D."""
        if x.ndim == 4:
            x = x.reshape(x.shape[0], x.shape[1], -1)  # [B, C, HW]: channels, then pixels h*W + w
            lo, hi = x.amin(dim=0), x.amax(dim=0)  # over the batch (torch.aminmax(dim=0) is far slower on CPU)
            return [("channel", lo.amin(dim=1), hi.amax(dim=1)), ("pixel", lo.amin(dim=0), hi.amax(dim=0))]
        lo, hi = x.amin(dim=0), x.amax(dim=0)
        if x.ndim == 2:  # [B, C]: no pixel axis
            return [("channel", lo, hi)]
        if cross and role in ("k", "v"):  # token 0 (<start>) kept apart: it may stay FP
            return [("channel", lo[1:].amin(dim=0), hi[1:].amax(dim=0)), ("bos_channel", lo[0], hi[0]),
                    ("pixel", lo.amin(dim=1), hi.amax(dim=1))]
        return [("channel", lo.amin(dim=0), hi.amax(dim=0)), ("pixel", lo.amin(dim=1), hi.amax(dim=1))]

    def _input_hook(self, name):
        def hook(_module, args):
            self._observe_activation(name, "input", args[0])
        return hook

    # -- the attention tap
    def qkv(self, name, role, tensor, cross):
        self._observe_activation(name, role, tensor, cross)
        return tensor

    def attend(self, name, probs, value, cross):
        import torch

        self._point(name, "attn_probs", probs, cross, layout="probs")  # channels = keys, pixels = queries
        self._add(name, "attn_probs", "key_max", probs.amax(dim=1).amax(dim=0))  # per key column, over queries
        if cross:
            mass = probs[..., 0].mean().reshape(1)
            self._add(name, "attn_probs", "bos_mass", mass, mass)
        return torch.bmm(probs, value)

    # -- results
    def arrays(self) -> dict:
        """name -> float32 numpy [T, ...]: `<module>/<role>/<stat>_min|_max` (max-only stats: `<stat>`)."""
        import numpy as np
        import torch

        t = len(self.timesteps)
        if self.layout is None or sorted(self.mins) != list(range(t)):
            raise DgqError("no calibration statistics were recorded (the UNet never ran)")
        mins = torch.stack([self.mins[i] for i in range(t)]).float().cpu().numpy()
        maxs = torch.stack([self.maxs[i] for i in range(t)]).float().cpu().numpy()
        out, at_min, at_max = {}, 0, 0
        for module, role, stat, kind, shape in self.layout:
            size = int(np.prod(shape)) if shape else 1
            base = f"{module}/{role}/{stat}"
            if kind == "minmax":
                out[base + "_min"] = np.ascontiguousarray(mins[:, at_min:at_min + size].reshape(t, *shape))
                at_min += size
                out[base + "_max"] = np.ascontiguousarray(maxs[:, at_max:at_max + size].reshape(t, *shape))
            else:
                out[base] = np.ascontiguousarray(maxs[:, at_max:at_max + size].reshape(t, *shape))
            at_max += size
        return out
