"""Fine-grained block reconstruction (EDA-DM's output-level alignment, on BRECQ's blocks): recipe + calibration set
-> the same recipe with learned weight rounding (TensorQuant.codes), which the passes and the simulator use as
they are.

Blocks are the UNet's residual blocks, transformer blocks, down/upsamplers; a quantized layer outside every
block (the time embedding's Linears) is a block of its own. Each block is reconstructed against the FP block on
the FP block's inputs of the calibration set (one CFG UNet call per chosen timestep and sample), so blocks are
independent and their order does not matter. The loss is EDA-DM's fine-grained alignment:

    ||B_q(x) - B(x)||^2 / ||B(x)||^2  +  layer_weight * mean_l ||L_q(x) - L(x)||^2 / ||L(x)||^2  +  round_weight * R
    +  guidance_weight * ||D_q(x) - D(x)||^2 / ||D(x)||^2

with B the block output, L each quantized layer's output inside it, R AdaRound's rounding regulariser (adaround.py)
and D = B(x, cond) - B(x, uncond) the block's share of the guidance direction (the call's two CFG halves). The
first two terms are dominated by image content; the last is what the text changes, which classifier-free guidance
then multiplies by its scale (MixDQ's metric decoupling, applied to the reconstruction loss; 0 turns it off).
Only the rounding (up or down on the recipe's grid) is learned by default: scales, zero points and every activation
quantizer stay the recipe's, and the activations are fake-quantized by the recipe during reconstruction (the
straight-through estimator passes gradients through their rounding). `act_steps` also learns the step sizes of
the block's layers' input quantizers (LSQ, lsq.py), kept with the rounding under the same rule. A block keeps its learned rounding only when
its loss (without R) on the whole calibration set is below round-to-nearest's; otherwise it keeps the nearest
codes, so no block gets worse on the data. Deterministic for a seed and thread count.

Memory: the FP data streams, one block at a time: before each block an FP pass over the calibration set captures
that block's inputs, output and layer outputs only, and stops at the block (the rest of the UNet is not run). Peak
memory is one block's data (the largest block's inputs and outputs on the set) instead of every block's at once;
the extra compute is a partial FP forward per block and call, small against the block's optimiser steps. The
captured tensors are the same computation as one pass capturing everything, so the result is bit-identical.
(A little over 300 lines: capture, the block loop and a block's optimisation share one data layout.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from dgq_compiler.errors import DgqError

BLOCK_TYPES = ("ResnetBlock2D", "Transformer2DModel", "Downsample2D", "Upsample2D")


@dataclass(frozen=True)
class ReconstructOptions:
    iterations: int = 300           # optimiser steps per block (one CFG call of the set per step)
    learning_rate: float = 1e-2     # Adam on AdaRound's V
    layer_weight: float = 1.0       # fine-grained term: the layers inside the block
    round_weight: float = 0.01      # AdaRound regulariser
    guidance_weight: float = 0.0    # the guidance-direction term (cond - uncond halves of the block output)
    activations: bool = True        # fake-quantize activations by the recipe while reconstructing
    act_steps: bool = False         # LSQ: also learn the block's layers' input step sizes (needs activations)
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise DgqError(f"iterations must be a positive integer, got {self.iterations!r}")
        for name in ("learning_rate", "layer_weight", "round_weight", "guidance_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise DgqError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.learning_rate <= 0:
            raise DgqError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.act_steps and not self.activations:
            raise DgqError("act_steps (learned activation step sizes) needs the activations quantized")


@dataclass
class BlockResult:
    block: str
    layers: int
    weights: int
    loss_nearest: float      # output + fine-grained loss with round-to-nearest codes (whole calibration set)
    loss_learned: float      # the same with the learned codes
    kept: str                # learned | nearest
    flipped: float           # share of weights whose code differs from round-to-nearest
    seconds: float = 0.0


@dataclass
class ReconstructReport:
    blocks: list[BlockResult] = field(default_factory=list)

    def totals(self) -> dict:
        kept = [b for b in self.blocks if b.kept == "learned"]
        return {"blocks": len(self.blocks), "learned": len(kept),
                "loss_nearest": float(sum(b.loss_nearest for b in self.blocks)),
                "loss_after": float(sum(min(b.loss_nearest, b.loss_learned) for b in self.blocks))}


def find_blocks(unet, recipe) -> list[tuple[str, list[str]]]:
    """(block path, its quantized layer paths) for every block holding a weight the recipe quantizes, in module
    order; a quantized layer outside every block is a block of its own."""
    from dgq_compiler.calibrate.points import quantizable_layers

    weighted = {m for (m, role) in recipe.tensors if role == "weight"}
    layers = [name for name in quantizable_layers(unet) if name in weighted]
    blocks = [name for name, m in unet.named_modules() if type(m).__name__ in BLOCK_TYPES]
    out, placed = [], set()
    for block in blocks:
        inside = [name for name in layers if name.startswith(block + ".")]
        if inside:
            out.append((block, inside))
            placed.update(inside)
    out += [(name, [name]) for name in layers if name not in placed]
    order = {name: i for i, (name, _) in enumerate(unet.named_modules())}
    return sorted(out, key=lambda b: order[b[0]])


def _first_tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return _first_tensor(value[0])
    return value[0] if hasattr(value, "__getitem__") else value.sample


def _detach(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


class _BlockDone(Exception):
    """Raised by the capture hook once the one block of a streamed pass has run: the rest of the UNet is skipped."""


def capture(unet, calset, blocks, stop_after_block: bool = False) -> dict:
    """One FP pass over the calibration set: per block the (step, args, kwargs, output) of each call and its
    layers' outputs. `stop_after_block` (one block): each call stops as soon as the block has run."""
    import torch

    if stop_after_block and len(blocks) != 1:
        raise ValueError("stop_after_block captures exactly one block")

    modules = dict(unet.named_modules())
    data = {name: {"calls": [], "layers": {layer: [] for layer in layers}} for name, layers in blocks}
    step = [0]
    handles = []

    def block_hooks(name):
        def pre(_m, args, kwargs):
            data[name]["calls"].append([step[0], _detach(args), _detach(kwargs), None])

        def post(_m, _args, _kwargs, output):
            data[name]["calls"][-1][3] = _first_tensor(output).detach().clone()
            if stop_after_block:
                raise _BlockDone
        return pre, post

    def layer_hook(name, layer):
        def post(_m, _args, output):
            data[name]["layers"][layer].append(output.detach().clone())
        return post

    try:
        for name, layers in blocks:
            pre, post = block_hooks(name)
            handles.append(modules[name].register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(modules[name].register_forward_hook(post, with_kwargs=True))
            for layer in layers:
                if layer != name:
                    handles.append(modules[layer].register_forward_hook(layer_hook(name, layer)))
        with torch.no_grad():
            for index, _t, x, states in calset.calls():
                step[0] = index
                try:
                    unet(torch.from_numpy(x), torch.tensor([float(calset.timesteps[index])]),
                         torch.from_numpy(np.ascontiguousarray(states)), return_dict=False)
                except _BlockDone:
                    pass
    finally:
        for h in handles:
            h.remove()
    for name, layers in blocks:
        if name in data and name in layers:  # a lone layer: its output is the block's
            data[name]["layers"][name] = [c[3] for c in data[name]["calls"]]
    return data


def _relative(a, b):
    return ((a - b) ** 2).mean() / (b ** 2).mean().clamp_min(1e-12)


def reconstruct_recipe(recipe, unet, calset, options: ReconstructOptions | None = None, progress=None,
                       only: list[str] | None = None):
    """The recipe with learned weight rounding for every block (-> (Recipe, ReconstructReport)). `unet` is the FP
    UNet the recipe was made for (left as it was); `calset` an edadm.calset.CalibrationSet whose timesteps the
    recipe's schedule covers (each maps to its nearest calibrated step); `only`: these blocks alone."""
    import torch

    from dgq_compiler.fakequant import apply_recipe

    options = options or ReconstructOptions()
    recipe.check_unet(unet)
    unet.eval()
    blocks = find_blocks(unet, recipe)
    if only is not None:
        unknown = sorted(set(only) - {name for name, _ in blocks})
        if unknown:
            raise DgqError(f"no block {unknown[0]!r} with quantized weights: expected one of "
                           f"{', '.join(name for name, _ in blocks[:6])}, ...")
        blocks = [b for b in blocks if b[0] in only]
    if not blocks:
        raise DgqError("the recipe quantizes no Conv/Linear weight of this UNet: nothing to reconstruct")
    steps = [recipe.step_index(t) for t in calset.timesteps]
    modules = dict(unet.named_modules())
    generator = torch.Generator().manual_seed(options.seed)
    tensors, report = dict(recipe.tensors), ReconstructReport()
    requires = {name: p.requires_grad for name, p in unet.named_parameters()}
    for p in unet.parameters():
        p.requires_grad_(False)
    fq = None
    try:
        for name, layers in blocks:
            start = time.perf_counter()
            # this block's FP data only (the UNet unquantized while capturing), then the recipe's activations on
            data = capture(unet, calset, [(name, layers)], stop_after_block=True)[name]
            learned = _learned_inputs(recipe, layers) if options.act_steps else {}
            # the inputs whose steps are learned are quantized by their LearnedSteps, not by the recipe's hooks
            fixed = replace(recipe, tensors={k: v for k, v in recipe.tensors.items() if k not in learned})
            fq = apply_recipe(unet, fixed, weights=False, activations=options.activations, straight_through=True)
            result, codes, inputs = _reconstruct_block(name, layers, modules, data, steps, recipe, fq, options,
                                                       generator, learned)
            fq.remove()
            fq = data = None
            result.seconds = round(time.perf_counter() - start, 2)
            for layer, c in codes.items():
                tensors[(layer, "weight")] = replace(recipe.tensors[(layer, "weight")], codes=c)
            tensors.update(inputs)
            report.blocks.append(result)
            if progress:
                progress(result)
    finally:
        if fq is not None:
            fq.remove()
        for pname, p in unet.named_parameters():
            p.requires_grad_(requires.get(pname, True))
    return replace(recipe, tensors=tensors), report


def _learned_inputs(recipe, layers) -> dict:
    """{(layer, "input"): LearnedSteps} for the block's layers with a uniform input quantizer."""
    from dgq_compiler.edadm.lsq import LearnedSteps

    return {(layer, "input"): LearnedSteps(recipe.tensors[(layer, "input")]) for layer in layers
            if (layer, "input") in recipe.tensors and recipe.tensors[(layer, "input")].quantizer == "uniform"}


def _reconstruct_block(name, layers, modules, block_data, steps, recipe, fq, options, generator, learned):
    """-> (BlockResult, {layer: codes}, {(layer, "input"): entry with learned steps} (empty unless kept))."""
    import torch
    from torch.nn.utils import parametrize

    from dgq_compiler.edadm.adaround import AdaRoundWeight, beta_schedule
    from dgq_compiler.sampling import guidance_direction

    block = modules[name]
    rounding = {}
    for layer in layers:
        module = modules[layer]
        rounding[layer] = AdaRoundWeight(module.weight, recipe.tensors[(layer, "weight")])
        parametrize.register_parametrization(module, "weight", rounding[layer])
    outputs: dict = {}
    handles = [modules[layer].register_forward_hook(lambda _m, _a, out, layer=layer: outputs.__setitem__(layer, out))
               for layer in layers]
    handles += [modules[layer].register_forward_pre_hook(steps_of.hook(fq)) for (layer, _r), steps_of
                in learned.items()]
    calls = block_data["calls"]

    def loss_of(i):
        step, args, kwargs, target = calls[i]
        fq.steps.index = steps[step]
        out = _first_tensor(block(*args, **kwargs))
        fine = torch.stack([_relative(outputs[layer], block_data["layers"][layer][i]) for layer in layers]).mean()
        loss = _relative(out, target) + options.layer_weight * fine
        if options.guidance_weight:
            loss = loss + options.guidance_weight * _relative(guidance_direction(out), guidance_direction(target))
        return loss

    def whole_set() -> float:
        with torch.no_grad():
            return float(sum(loss_of(i) for i in range(len(calls))) / len(calls))

    try:
        for r in rounding.values():
            r.fixed = r.nearest
        loss_nearest = whole_set()
        for r in rounding.values():
            r.fixed = None
        params = [r.v for r in rounding.values()] + [steps_of.u for steps_of in learned.values()]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=options.learning_rate)
        order = torch.randperm(len(calls), generator=generator)
        for it in range(options.iterations):
            if it and it % len(calls) == 0:
                order = torch.randperm(len(calls), generator=generator)
            beta = beta_schedule(it, options.iterations)
            loss = loss_of(int(order[it % len(calls)]))
            if beta > 0:
                loss = loss + options.round_weight * torch.stack([r.regulariser(beta) for r in rounding.values()]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for r in rounding.values():
            r.hard = True
        loss_learned = whole_set()
        keep = loss_learned < loss_nearest
        codes = {layer: r.codes(use_nearest=not keep) for layer, r in rounding.items()}
        weights = sum(r.floor.numel() for r in rounding.values())
        flipped = sum(int((r.codes() != r.codes(use_nearest=True)).sum()) for r in rounding.values()) / weights
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            parametrize.remove_parametrizations(modules[layer], "weight", leave_parametrized=False)
    inputs = {key: steps_of.learned_entry() for key, steps_of in learned.items()} if keep else {}
    return BlockResult(name, len(layers), weights, loss_nearest, loss_learned, "learned" if keep else "nearest",
                       flipped if keep else 0.0), codes, inputs
