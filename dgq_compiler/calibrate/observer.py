"""Streaming statistics at every quantization point, per distinct timestep.

Kept per (point, step): per-channel and per-pixel/token min and max (memory: points x T x (C + HW),
never raw activations, never anything per sample). Attention probabilities: the max over the tensor,
in cross-attention also the max without the <start> column and the min/max over calls of the mean
mass on that column. Everything is min/max, so shards merge exactly.

Everything stays on the UNet's device as torch tensors (no host sync per call) until `arrays()`.

Speed (the statistics are bit for bit those of the reference definition, `_generic_partials`, which the
first call runs): min and max are exact under any grouping of the reduced dims, so later calls reduce each
tensor with the fewest fast ops straight into preallocated slots (FILLS), tensors read by several layers
are reduced once (aliases), and attention runs on reused buffers in cache-sized batch*head slices.
"""
from __future__ import annotations

import functools
import weakref

from dgq_compiler.calibrate.attention import tapped_attention
from dgq_compiler.calibrate.points import QuantPoint, layout_of, quantizable_layers, sizes_of
from dgq_compiler.errors import DgqError

LAYOUT_CHANGED = ("the UNet's quantization points or activation shapes changed between calls: "
                  "calibrate one model at one resolution per run")

# Speed knobs (the statistics never depend on them).
SLICE_BYTES = 1 << 20         # scores + probs of one attention slice: stays in a core's L2 cache
KEY_MAX_ROWS = 256            # probs rows left after halving, before the final key_max reduce


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


# -- fills: one tensor's stats straight into its slots of the call buffers (`out`: destination views in stat
# order, min then max; two-stage fills then their [min, max] over the batch, in shared scratch). Each gives
# exactly what `StatsObserver._partials` / `attend` give; each groups the reduced dims the way that is fastest
# for its shape on CPU (short-row and strided reductions are slow there).
def _fill_nchw(x, out):
    """[B, C, H, W] with H*W >= 64: (batch, pixels) and (batch, channels) in one reduce each."""
    import torch

    torch.amin(x, dim=(0, 2, 3), out=out[0])
    torch.amax(x, dim=(0, 2, 3), out=out[1])
    torch.amin(x, dim=(0, 1), out=out[2])  # [H, W] views of the flat pixel slots (h * W + w)
    torch.amax(x, dim=(0, 1), out=out[3])


def _fill_nchw_small(x, out):
    """[B, C, H, W] with few pixels: the batch first (a fast outer reduce), then channels and pixels."""
    import torch

    lo, hi = torch.amin(x, dim=0, out=out[4]), torch.amax(x, dim=0, out=out[5])
    torch.amin(lo, dim=(1, 2), out=out[0])
    torch.amax(hi, dim=(1, 2), out=out[1])
    torch.amin(lo, dim=0, out=out[2])
    torch.amax(hi, dim=0, out=out[3])


def _fill_nlc(x, out):
    """[B, L, C] with wide channels."""
    import torch

    torch.amin(x, dim=(-3, -2), out=out[0])
    torch.amax(x, dim=(-3, -2), out=out[1])
    torch.amin(x, dim=(-3, -1), out=out[2])
    torch.amax(x, dim=(-3, -1), out=out[3])


def _fill_nlc_narrow(x, out):
    """[B, L, C] with few channels: the batch first, then tokens and channels."""
    import torch

    lo, hi = torch.amin(x, dim=0, out=out[4]), torch.amax(x, dim=0, out=out[5])
    torch.amin(lo, dim=-2, out=out[0])
    torch.amax(hi, dim=-2, out=out[1])
    torch.amin(lo, dim=-1, out=out[2])
    torch.amax(hi, dim=-1, out=out[3])


def _fill_nlc_bos(x, out):
    """Cross-attention k/v [B, L, C]: channel stats over tokens 1.., token 0 apart, token stats over all."""
    import torch

    lo, hi = torch.amin(x, dim=0, out=out[6]), torch.amax(x, dim=0, out=out[7])  # [L, C] (x[:, 1:] first: slow)
    torch.amin(lo[..., 1:, :], dim=-2, out=out[0])
    torch.amax(hi[..., 1:, :], dim=-2, out=out[1])
    out[2].copy_(lo[..., 0, :])
    out[3].copy_(hi[..., 0, :])
    torch.amin(lo, dim=-1, out=out[4])
    torch.amax(hi, dim=-1, out=out[5])


def _fill_nc(x, out):
    import torch

    torch.amin(x, dim=0, out=out[0])
    torch.amax(x, dim=0, out=out[1])


def _fill_probs(probs, out):
    _key_max(probs, out[0], out[1])


def _fill_probs_cross(probs, out):
    import torch

    _key_max(probs, out[0], out[3])
    torch.mean(probs[..., 0], out=out[1])  # the same reduction as probs[..., 0].mean()
    out[2].copy_(out[1])


TWO_STAGE = ("nchw_small", "nlc_narrow", "nlc_bos")
FILLS = {"nchw": _fill_nchw, "nchw_small": _fill_nchw_small, "nlc": _fill_nlc, "nlc_narrow": _fill_nlc_narrow,
         "nlc_bos": _fill_nlc_bos, "nc": _fill_nc, "probs": _fill_probs, "probs_cross": _fill_probs_cross}


def _fill_kind(role: str, shape, cross: bool) -> str | None:
    """The FILLS entry that reproduces the first call's partials for a tensor of `shape` (None: generic)."""
    if role == "attn_probs":
        return ("probs_cross" if cross else "probs") if len(shape) == 3 else None
    if len(shape) == 4:
        return "nchw" if shape[2] * shape[3] >= 64 else "nchw_small"
    if len(shape) == 3:
        if cross and role in ("k", "v"):
            return "nlc_bos"
        return "nlc_narrow" if shape[2] <= 32 else "nlc"
    return "nc" if len(shape) == 2 else None


def _key_max(probs, out, tree):
    """Max over (batch*heads, queries) per key column. With a key count off the vector width the strided reduce
    is slow: elementwise maxima of row halves shrink it first (`tree`: `_key_max_tree`)."""
    import torch

    if tree is None:
        torch.amax(probs, dim=(0, 1), out=out)
        return
    first, halvings, last = tree
    top, bottom = probs.reshape(-1, probs.shape[-1]).chunk(2)
    torch.maximum(top, bottom, out=first)
    for top, bottom, dest in halvings:
        torch.maximum(top, bottom, out=dest)
    torch.amax(last, dim=0, out=out)


def _key_max_rows(shape) -> list[int]:
    """Row counts after each halving `_key_max` does for probs of `shape` ([]: it reduces directly)."""
    rows, counts = _numel(shape[:-1]), []
    if shape[-1] % 8:
        while rows > KEY_MAX_ROWS and rows % 2 == 0:
            rows //= 2
            counts.append(rows)
    return counts


def _key_max_tree(shape, scratch):
    """The halving steps of `_key_max` as views of `scratch` (its first rows): (first, [(top, bottom, dest)], last)."""
    counts = _key_max_rows(shape)
    if not counts:
        return None
    width = shape[-1]
    level = scratch[:counts[0] * width].view(counts[0], width)
    first, halvings = level, []
    for rows in counts[1:]:
        top, bottom = level[:rows], level[rows:2 * rows]
        level = top  # in place: each level's maxima overwrite its top half
        halvings.append((top, bottom, level))
    return first, halvings, level


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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


class StatsObserver:
    """Context manager: while active, every UNet call updates the running statistics.

    The first call computes the generic partials (`_generic_partials`) and records the layout: the sequence
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
        import torch

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
            for (_stat, lo, hi), (lo_view, hi_view) in zip(self._generic_partials(role, x, cross), obs.flat):
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

    def _generic_partials(self, role, x, cross) -> list:
        """[(stat, min or None, max)] over this call, in layout order (the reference definition)."""
        if role == "attn_probs":
            parts = [("key_max", None, x.amax(dim=1).amax(dim=0))]  # per key column, over queries
            if cross:
                mass = x[..., 0].mean().reshape(1)
                parts.append(("bos_mass", mass, mass))
            return parts
        return self._partials(role, x, cross)

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
        obs.partials = self._generic_partials(role, x, cross)
        self._recorded.append(obs)

    def _build_plan(self):
        """Slots (first-call order) and fills of every observation; the first call's partials go in the slots."""
        import torch

        plan = self._plan
        parts = [t for obs in plan for _s, lo, hi in obs.partials for t in (lo, hi) if t is not None]
        dtype = functools.reduce(torch.promote_types, {t.dtype for t in parts})  # as torch.cat would
        self.layout, at_lo, at_hi = [], 0, 0
        for obs in plan:
            for stat, lo, hi in obs.partials:
                size = hi.numel()
                self.layout.append((obs.module, obs.role, stat, "max" if lo is None else "minmax", tuple(hi.shape)))
                obs.slots.append((None if lo is None else at_lo, at_hi, size))
                at_lo, at_hi = at_lo + (0 if lo is None else size), at_hi + size
        self._call_lo = torch.empty(at_lo, dtype=dtype, device=parts[0].device)
        self._call_hi = torch.empty(at_hi, dtype=dtype, device=parts[0].device)
        scratch = [(_key_max_rows(o.shape) or [0])[0] * o.shape[-1] for o in plan if o.role == "attn_probs"]
        self._scratch = torch.empty(max(scratch, default=0), dtype=dtype, device=parts[0].device)
        stage = [2 * _numel(o.shape[1:]) for o in plan if _fill_kind(o.role, o.shape, o.cross) in TWO_STAGE]
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
            kind = _fill_kind(obs.role, obs.shape, obs.cross)
            obs.fill = FILLS.get(kind)
            obs.out = self._fill_outputs(kind, obs)

    def _fill_outputs(self, kind, obs) -> tuple:
        """The slots in the order (and shapes) the FILLS function writes them."""
        flat = obs.flat
        if kind in ("probs", "probs_cross"):
            tree = _key_max_tree(obs.shape, self._scratch)
            if kind == "probs":
                return flat[0][1], tree
            return flat[0][1], flat[1][0].view(()), flat[1][1].view(()), tree
        out = [v for pair in flat for v in pair]
        if kind in ("nchw", "nchw_small"):  # pixel slots as [H, W]: the reduction over channels has that shape
            out[2:4] = [v.view(obs.shape[2], obs.shape[3]) for v in out[2:4]]
        if kind in TWO_STAGE and obs.dtype == self._stage.dtype:  # (another dtype takes the generic path)
            n = _numel(obs.shape[1:])
            out += [self._stage[:n].view(obs.shape[1:]), self._stage[n:2 * n].view(obs.shape[1:])]
        elif kind in TWO_STAGE:
            obs.fill = None
        return tuple(out)

    def _point(self, module, role, tensor, cross, layout=None):
        key = (module, role)
        if key not in self.points:
            c, n = sizes_of(tensor)
            self.points[key] = QuantPoint(module, role, layout or layout_of(tensor), c, n, cross)

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

    # -- the attention tap
    def qkv(self, name, role, tensor, cross):
        self._observe(name, role, tensor, cross)
        return tensor

    def attend(self, name, probs, value, cross):
        import torch

        self._observe(name, "attn_probs", probs, cross)
        return torch.bmm(probs, value)

    def attend_rows(self, name, cross, shape) -> int | None:
        """Attention runs in slices of batch*heads whose scores + probs fit SLICE_BYTES (faster: they stay in
        cache; and the whole [B*heads, Nq, Nk] probs of a self-attention never exist at once). key_max is a
        max: it folds over slices exactly; bos_mass is a mean: see `attend_slice`."""
        return max(1, SLICE_BYTES // (8 * shape[1] * shape[2]))

    def attend_slice(self, name, probs, value, cross, start, total, out):
        import torch

        shape, rows = (total, *probs.shape[1:]), probs.shape[0]
        if start == 0:  # one row per slice: its max per key column (over queries; max is exact)
            self._slice_rows, slices = rows, -(-total // rows)
            key = (slices, shape[2], probs.dtype)
            if key not in self._slice_parts:
                self._slice_parts[key] = torch.empty(slices, shape[2], dtype=probs.dtype, device=probs.device)
            self._slice_max = self._slice_parts[key]
        torch.amax(probs, dim=(0, 1), out=self._slice_max[start // self._slice_rows])
        if cross:  # the <start> column goes where it would lie in the whole probs tensor, see `_bos_column`
            self._bos_column(shape, probs)[start:start + rows].copy_(probs[..., 0])
        if start + rows == total:
            parts = [("key_max", None, self._slice_max.amax(dim=0))]
            if cross:  # the mean of a view with the whole tensor's sizes and strides: the same reduction, same bits
                mass = self._bos_column(shape, probs).mean().reshape(1)
                parts.append(("bos_mass", mass, mass))
            self._observe_probs(name, shape, probs.dtype, cross, parts)
            self._slice_max = None
        torch.bmm(probs, value, out=out)

    def _bos_column(self, shape, like):
        """A [B*heads, Nq] view laid out as column 0 of a contiguous [B*heads, Nq, Nk] tensor."""
        import torch

        numel = _numel(shape)
        if self._bos is None or self._bos.numel() < numel or self._bos.dtype != like.dtype:
            self._bos = torch.empty(numel, dtype=like.dtype, device=like.device)
        return self._bos.as_strided(shape[:2], (shape[1] * shape[2], shape[2]))

    def _observe_probs(self, name, shape, dtype, cross, parts):
        if self._plan is None:
            import torch

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
        import torch

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
