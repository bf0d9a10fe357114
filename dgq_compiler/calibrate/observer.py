"""Streaming statistics at every quantization point, per distinct timestep: the observer and its call plan.

Kept per (point, step): per-channel and per-pixel/token min and max (memory: points x T x (C + HW),
never raw activations, never anything per sample). Attention probabilities: the max over the tensor,
in cross-attention also the max without the <start> column and the min/max over calls of the mean
mass on that column. Everything is min/max, so shards merge exactly.

Everything stays on the UNet's device as torch tensors (no host sync per call) until `arrays()`.

Speed (the statistics are bit for bit those of the reference definition, reference_stats.py, which the
first call runs): later calls reduce each tensor with the fewest fast ops straight into preallocated slots
(fills.py), tensors read by several layers are reduced once (aliases), and attention runs on reused buffers
in cache-sized batch*head slices (attention_stats.py).
"""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import torch

from dgq_compiler.calibrate.attention import tapped_attention
from dgq_compiler.calibrate.attention_stats import AttentionStats
from dgq_compiler.calibrate.fills import FILLS, TWO_STAGE, fill_kind, key_max_rows, key_max_tree, numel
from dgq_compiler.calibrate.points import QuantPoint, layout_of, quantizable_layers, sizes_of
from dgq_compiler.calibrate.reference_stats import partials
from dgq_compiler.calibrate.schedule import FirstSeenSchedule, StepTracker
from dgq_compiler.errors import DgqError

LAYOUT_CHANGED = ("the UNet's quantization points or activation shapes changed between calls: "
                  "calibrate one model at one resolution per run")


class Slot(NamedTuple):
    """Where one statistic of one observation lives in the flat call buffers."""
    lo_at: int | None     # offset in the minima (None: a max-only statistic)
    hi_at: int            # offset in the maxima
    size: int


class _ObservedForward:
    """The layer's forward, with its input observed first. Cheaper than a forward pre-hook, which sends
    every call of the module through torch's slow hook path (~2% of a tiny-model calibration); `remove`
    puts back whatever forward the instance had (accelerate's offload hooks also replace it)."""

    def __init__(self, module, name: str, observe):
        self.module, self.had = module, "forward" in module.__dict__
        self.saved = module.__dict__.get("forward")
        inner = module.forward

        def forward(x, *args, **kwargs):
            observe(name, "input", x, False)
            return inner(x, *args, **kwargs)
        module.forward = forward

    def remove(self):
        if self.had:
            self.module.forward = self.saved
        else:
            del self.module.forward


class _Observation:
    """One tensor observed per call, as the first call saw it.

    `partials`: the first call's [(stat, min or None, max)]; `flat`: [(min view or None, max view)] of its
    slots in the call buffers, per stat; `slots`: their offsets [(min offset or None, max offset, size)];
    `fill`/`out`: how later calls fill them; `source`: index of an earlier observation of the very same tensor
    (to_k/to_v read to_q's input; every cross-attention's to_k/to_v read the text states): while that holds
    its statistics are the source's and nothing is computed for it.
    """

    __slots__ = ("cross", "dtype", "fill", "flat", "is_source", "module", "out", "partials", "role", "shape", "slots",
                 "source")

    def __init__(self, module, role, shape, dtype, cross, source):
        self.module, self.role, self.shape, self.dtype, self.cross = module, role, shape, dtype, cross
        self.partials, self.flat, self.slots, self.fill, self.out, self.source = [], [], [], None, (), source
        self.is_source = False


class StatsObserver(AttentionStats):
    """Context manager: while active, every UNet call updates the running statistics.

    The first call computes the reference partials (reference_stats.py) and records the layout: the sequence
    of (point, stat, shape). Every later call must produce the same sequence; `_build_plan` gives each
    observation its slots in two flat call buffers (minima, maxima) and a fill (a few reductions written
    straight into them), and each call folds the call buffers into its step's two running buffers with one
    torch.minimum / torch.maximum. Attention is taken in slices (`attend_rows`, `attend_slice`).
    """

    def __init__(self, unet):
        self.unet = unet
        self.points: dict[tuple[str, str], QuantPoint] = {}
        self.layout: list | None = None           # [(module, role, stat, kind, shape)] of the first call
        self.mins: dict[int, object] = {}         # step -> flat running minimum
        self.maxs: dict[int, object] = {}
        self._handles, self._attention, self.steps = [], None, None
        self._plan: list[_Observation] | None = None   # the first call's observations, in order
        self._recorded: list[_Observation] = []
        self._seen: dict = {}                           # first call: id(tensor) -> (weakref, observation index)
        self._refs: dict = {}                           # later calls: observation index -> weakref to its tensor
        self._cursor, self._broken, self._slice_max, self._slice_rows = 0, False, None, 1
        self._call_lo = self._call_hi = self._scratch = self._stage = self._bos = None
        self._slice_parts: dict = {}                    # (slices, keys, dtype) -> [slices, keys] buffer

    # -- install / remove
    def __enter__(self):
        self.schedule = FirstSeenSchedule()
        self.steps = StepTracker(self.unet, self.schedule)
        self._handles.append(self.unet.register_forward_pre_hook(self._begin_call))
        self._handles.append(self.unet.register_forward_hook(self._end_call))
        for name, module in quantizable_layers(self.unet).items():
            self._handles.append(_ObservedForward(module, name, self._observe))
        self._attention = tapped_attention(self.unet, self, reuse_buffers=True).__enter__()
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

    @property
    def working_bytes(self) -> int:
        """Per-call working memory (call buffers, key_max scratch, attention scratch): fixed by the model."""
        tensors = [self._call_lo, self._call_hi, self._scratch, self._stage, self._bos]
        tensors += list(self._slice_parts.values())
        if self._attention is not None and self._attention.scratch is not None:
            tensors += list(self._attention.scratch.flat.values())
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # -- per call
    def _begin_call(self, _module, _args):
        self._recorded, self._seen, self._refs = [], {}, {}
        self._cursor, self._broken, self._slice_max = 0, False, None

    def _end_call(self, _module, _args, _output):
        self._seen, self._refs = {}, {}
        if self._plan is None:
            self._plan, self._recorded = self._recorded, []
            self._build_plan()
        elif self._broken or self._cursor != len(self._plan):
            raise DgqError(LAYOUT_CHANGED)
        step, lo, hi = self.steps.index, self._call_lo, self._call_hi
        if step in self.mins:
            torch.minimum(self.mins[step], lo, out=self.mins[step])
            torch.maximum(self.maxs[step], hi, out=self.maxs[step])
        else:  # the call buffers are overwritten by the next call
            self.mins[step], self.maxs[step] = lo.clone(), hi.clone()

    def _next(self, module, role, shape) -> _Observation | None:
        """The planned observation at the cursor if it is this one (else the call is marked broken)."""
        i = self._cursor
        self._cursor = i + 1
        if i < len(self._plan):
            obs = self._plan[i]
            if obs.module == module and obs.role == role and obs.shape == shape:
                return obs
        self._broken = True
        return None

    def _observe(self, module, role, x, cross):
        if self._plan is None:
            return self._record(module, role, x, cross)
        obs = self._next(module, role, x.shape)
        if obs is None:
            return
        if obs.source is not None:
            ref = self._refs.get(obs.source)
            if ref is not None and ref() is x:
                return
            self._unalias(obs)
        elif obs.is_source:
            self._refs[self._cursor - 1] = weakref.ref(x)  # for the observations aliased to this one
        if obs.fill is not None and x.dtype == obs.dtype:
            obs.fill(x, obs.out)
        else:
            for (_stat, lo, hi), (lo_view, hi_view) in zip(partials(role, x, cross), obs.flat):
                if lo_view is not None:
                    lo_view.copy_(lo)
                hi_view.copy_(hi)

    def _unalias(self, obs):
        """`obs` no longer reads its source's tensor: from now on it has statistics of its own. Until now they
        were its source's, so those become its running values for every step seen so far."""
        source = self._plan[obs.source]
        for running in (self.mins, self.maxs):
            for flat in running.values():
                for (lo_at, hi_at, size), (src_lo, src_hi, _size) in zip(obs.slots, source.slots):
                    at, src = (lo_at, src_lo) if running is self.mins else (hi_at, src_hi)
                    if at is not None:
                        flat[at:at + size].copy_(flat[src:src + size])
        obs.source = None

    # -- the first call: generic partials, and the layout they make
    def _record(self, module, role, x, cross):
        source = None
        if role == "input":  # one tensor read by several layers: the later ones are aliases (see _Observation)
            seen = self._seen.get(id(x))
            if seen is not None and seen[0]() is x:
                source = seen[1]
                self._recorded[source].is_source = True
            else:
                self._seen[id(x)] = (weakref.ref(x), len(self._recorded))
        self._point(module, role, x, cross, layout="probs" if role == "attn_probs" else None)
        obs = _Observation(module, role, x.shape, x.dtype, cross, source)
        obs.partials = partials(role, x, cross)
        self._recorded.append(obs)

    def _build_plan(self):
        """Slots (first-call order) and fills of every observation; the first call's partials go in the slots."""
        plan = self._plan
        parts = [t for obs in plan for _s, lo, hi in obs.partials for t in (lo, hi) if t is not None]
        dtype = functools.reduce(torch.promote_types, {t.dtype for t in parts})  # as torch.cat would
        self.layout, at_lo, at_hi = [], 0, 0
        for obs in plan:
            for stat, lo, hi in obs.partials:
                size = hi.numel()
                self.layout.append((obs.module, obs.role, stat, "max" if lo is None else "minmax", tuple(hi.shape)))
                obs.slots.append(Slot(None if lo is None else at_lo, at_hi, size))
                at_lo, at_hi = at_lo + (0 if lo is None else size), at_hi + size
        self._call_lo = torch.empty(at_lo, dtype=dtype, device=parts[0].device)
        self._call_hi = torch.empty(at_hi, dtype=dtype, device=parts[0].device)
        scratch = [(key_max_rows(o.shape) or [0])[0] * o.shape[-1] for o in plan if o.role == "attn_probs"]
        self._scratch = torch.empty(max(scratch, default=0), dtype=dtype, device=parts[0].device)
        stage = [2 * numel(o.shape[1:]) for o in plan if fill_kind(o.role, o.shape, o.cross) in TWO_STAGE]
        self._stage = torch.empty(max(stage, default=0), dtype=dtype, device=parts[0].device)
        for obs in plan:
            for (_stat, lo, hi), (lo_at, hi_at, size) in zip(obs.partials, obs.slots):
                hi_view = self._call_hi[hi_at:hi_at + size].view(hi.shape)
                lo_view = None if lo is None else self._call_lo[lo_at:lo_at + size].view(lo.shape)
                obs.flat.append((lo_view, hi_view))
                hi_view.copy_(hi)
                if lo is not None:
                    lo_view.copy_(lo)
            obs.partials = None
            kind = fill_kind(obs.role, obs.shape, obs.cross)
            obs.fill = FILLS.get(kind)
            obs.out = self._fill_outputs(kind, obs)

    def _fill_outputs(self, kind, obs) -> tuple:
        """The slots in the order (and shapes) the FILLS function writes them."""
        flat = obs.flat
        if kind in ("probs", "probs_cross"):
            tree = key_max_tree(obs.shape, self._scratch)
            if kind == "probs":
                return flat[0][1], tree
            return flat[0][1], flat[1][0].view(()), flat[1][1].view(()), tree
        out = [v for pair in flat for v in pair]
        if kind in ("nchw", "nchw_small"):  # pixel slots as [H, W]: the reduction over channels has that shape
            out[2:4] = [v.view(obs.shape[2], obs.shape[3]) for v in out[2:4]]
        if kind in TWO_STAGE and obs.dtype == self._stage.dtype:  # (another dtype takes the generic path)
            n = numel(obs.shape[1:])
            out += [self._stage[:n].view(obs.shape[1:]), self._stage[n:2 * n].view(obs.shape[1:])]
        elif kind in TWO_STAGE:
            obs.fill = None
        return tuple(out)

    def _point(self, module, role, tensor, cross, layout=None):
        key = (module, role)
        if key not in self.points:
            c, n = sizes_of(tensor)
            self.points[key] = QuantPoint(module, role, layout or layout_of(tensor), c, n, cross)

    def _observe_probs(self, name, shape, dtype, cross, parts):
        """Attention probabilities observed in slices (attention_stats.py): their partials, assembled."""
        if self._plan is None:
            self._point(name, "attn_probs", torch.empty(shape, device="meta"), cross, layout="probs")
            obs = _Observation(name, "attn_probs", torch.Size(shape), dtype, cross, None)
            obs.partials = parts
            self._recorded.append(obs)
            return
        obs = self._next(name, "attn_probs", shape)
        if obs is not None:
            for (_stat, lo, hi), (lo_view, hi_view) in zip(parts, obs.flat):
                if lo_view is not None:
                    lo_view.copy_(lo)
                hi_view.copy_(hi)

    # -- results
    def arrays(self) -> dict:
        """name -> float32 numpy [T, ...]: `<module>/<role>/<stat>_min|_max` (max-only stats: `<stat>`)."""
        import numpy as np

        t = len(self.timesteps)
        if self.layout is None or sorted(self.mins) != list(range(t)):
            raise DgqError("no calibration statistics were recorded (the UNet never ran)")
        mins = torch.stack([self.mins[i] for i in range(t)]).float().cpu().numpy()
        maxs = torch.stack([self.maxs[i] for i in range(t)]).float().cpu().numpy()
        slots = [slot for obs in self._plan
                 for slot in (obs.slots if obs.source is None else self._plan[obs.source].slots)]
        out = {}
        for (module, role, stat, kind, shape), (at_min, at_max, size) in zip(self.layout, slots):
            base = f"{module}/{role}/{stat}"
            if kind == "minmax":
                out[base + "_min"] = np.ascontiguousarray(mins[:, at_min:at_min + size].reshape(t, *shape))
                out[base + "_max"] = np.ascontiguousarray(maxs[:, at_max:at_max + size].reshape(t, *shape))
            else:
                out[base] = np.ascontiguousarray(maxs[:, at_max:at_max + size].reshape(t, *shape))
        return out
