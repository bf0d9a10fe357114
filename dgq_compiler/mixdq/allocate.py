"""Bit allocation by integer programming (MixDQ): per-layer widths minimising total sensitivity under budgets.

Each layer l takes one combination c = (weight bits, input bits) from the allowed choices (weights {4, 8} when a
size budget is set, else the config's width; inputs {6, 8} when an activation or BOPs budget is set, else 8; with
`Budget.fp` also W32A32, the layer left in full precision, whose sensitivity is 0 and which every budget counts at
32 bits):

    minimise    sum_{l,c} z_{l,c} (S_w[l, w_c] + S_a[l, a_c])            (normalised sensitivities, additive)
    subject to  sum_c z_{l,c} = 1                                       (one combination per layer)
                sum_{l,c} z_{l,c} params_l w_c   <= W  sum_l params_l   (size: average weight bits W)
                sum_{l,c} z_{l,c} macs_l a_c     <= A  sum_l macs_l     (average activation bits per MAC A)
                sum_{l,c} z_{l,c} macs_l w_c a_c <= B  sum_l macs_l     (BOPs: average w x a per MAC B)
                z binary

solved by scipy.optimize.milp (HiGHS, exact: no hand-written solver). `random_allocation` draws a baseline of at
most the same size (the control the ILP must beat). Allocations are JSON (format dgq-allocation).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgq_compiler.config import MIXED_ACT_CHOICES, MIXED_FP_BITS, MIXED_WEIGHT_CHOICES
from dgq_compiler.errors import DgqError
from dgq_compiler.io import check_writable, read_format_doc, write_format_doc

FORMAT = "dgq-allocation"
VERSION = 1
FP_CHOICE = (MIXED_FP_BITS, MIXED_FP_BITS)  # a layer left in full precision: weights and input unquantized


def is_fp(widths) -> bool:
    return tuple(widths) == FP_CHOICE


@dataclass(frozen=True)
class Budget:
    weight_bits: float | None = None   # average weight bits per parameter (model size)
    act_bits: float | None = None      # average input-activation bits per MAC
    bops_per_mac: float | None = None  # average weight x activation bits per MAC (BOPs)
    fp: bool = False                   # a layer may also stay in full precision (FP_CHOICE)

    def __post_init__(self):
        for name, lo, hi in (("weight_bits", MIXED_WEIGHT_CHOICES[0], MIXED_WEIGHT_CHOICES[-1]),
                             ("act_bits", MIXED_ACT_CHOICES[0], MIXED_ACT_CHOICES[-1]),
                             ("bops_per_mac", MIXED_WEIGHT_CHOICES[0] * MIXED_ACT_CHOICES[0],
                              MIXED_WEIGHT_CHOICES[-1] * MIXED_ACT_CHOICES[-1])):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and lo <= value <= hi):
                raise DgqError(f"budget {name} must be in {lo}..{hi}, got {value!r}")
        if not isinstance(self.fp, bool):
            raise DgqError(f"budget fp must be true or false, got {self.fp!r}")

    @classmethod
    def of_config(cls, config) -> "Budget":
        return cls(config.mixed_weight_bits, config.mixed_act_bits, fp=config.mixed_fp)

    def limits(self) -> dict:
        """The averages this budget bounds: {weight_bits | act_bits | bops_per_mac: limit}."""
        return {k: getattr(self, k) for k in ("weight_bits", "act_bits", "bops_per_mac") if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        """The limits; `fp` only when set (allocations without it stay byte-identical to before it existed)."""
        return {k: v for k, v in self.__dict__.items() if k != "fp" or v}


@dataclass(frozen=True)
class Allocation:
    model_name: str
    config_sha256: str
    method: str                 # ilp | random
    budget: Budget
    layers: dict                # module -> (weight bits, input bits)
    objective: float            # total normalised sensitivity of the choice
    achieved: dict              # weight_bits / act_bits / bops_per_mac averages actually reached

    def widths(self) -> dict:
        return dict(self.layers)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        path = check_writable(path, overwrite=overwrite)
        doc = {"format": FORMAT, "version": VERSION, "model": {"name": self.model_name, "config_sha256": self.config_sha256},
               "method": self.method, "budget": self.budget.to_dict(), "objective": self.objective,
               "achieved": self.achieved,
               "layers": {m: {"weight_bits": w, "act_bits": a} for m, (w, a) in sorted(self.layers.items())}}
        return write_format_doc(path, doc)

    @classmethod
    def load(cls, path: str | Path) -> "Allocation":
        path = Path(path)
        what = f"bit allocation {str(path)!r}"
        doc = read_format_doc(path, what, "bit allocation", FORMAT, VERSION)
        try:
            layers = {m: (e["weight_bits"], e["act_bits"]) for m, e in doc["layers"].items()}
            allocation = cls(doc["model"]["name"], doc["model"]["config_sha256"], doc["method"],
                             Budget(**doc["budget"]), layers, float(doc["objective"]), dict(doc["achieved"]))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DgqError(f"{what} is missing or has a malformed field: {exc}") from None
        for module, (w, a) in allocation.layers.items():
            if is_fp((w, a)) and allocation.budget.fp:
                continue
            if w not in MIXED_WEIGHT_CHOICES or a not in MIXED_ACT_CHOICES:
                raise DgqError(f"{what}: layer {module!r} has widths W{w}A{a}; expected weights in "
                               f"{MIXED_WEIGHT_CHOICES} and activations in {MIXED_ACT_CHOICES} (or W{MIXED_FP_BITS}"
                               f"A{MIXED_FP_BITS}, full precision, when the budget allows fp)")
        if not allocation.layers:
            raise DgqError(f"{what} allocates no layers")
        return allocation


def _choices(budget: Budget, fixed_weight: int) -> list[tuple[int, int]]:
    weights = MIXED_WEIGHT_CHOICES if budget.weight_bits is not None or budget.bops_per_mac is not None \
        else (fixed_weight,)
    acts = MIXED_ACT_CHOICES if budget.act_bits is not None or budget.bops_per_mac is not None \
        else (MIXED_ACT_CHOICES[-1],)
    return [(w, a) for w in weights for a in acts] + ([FP_CHOICE] if budget.fp else [])


def sensitivity(layer, widths) -> float:
    """A layer's normalised sensitivity at (weight bits, input bits); 0 in full precision."""
    w, a = widths
    return 0.0 if is_fp(widths) else layer.weight[str(w)] + layer.act[str(a)]


def _costs(table, choices):
    """Per (layer, choice): objective, params x w, macs x a, macs x w x a."""
    rows = []
    for layer in table.layers:
        for w, a in choices:
            rows.append((sensitivity(layer, (w, a)), layer.params * w, layer.macs * a, layer.macs * w * a))
    return np.array(rows, dtype=np.float64).reshape(len(table.layers), len(choices), 4)


def achieved(table, layers: dict) -> dict:
    params = sum(layer.params for layer in table.layers)
    macs = max(sum(layer.macs for layer in table.layers), 1)
    by = table.by_module()
    return {"weight_bits": sum(by[m].params * w for m, (w, _a) in layers.items()) / params,
            "act_bits": sum(by[m].macs * a for m, (_w, a) in layers.items()) / macs,
            "bops_per_mac": sum(by[m].macs * w * a for m, (w, a) in layers.items()) / macs}


def objective(table, layers: dict) -> float:
    by = table.by_module()
    return float(sum(sensitivity(by[m], widths) for m, widths in layers.items()))


def allocate(table, budget: Budget, fixed_weight: int = MIXED_WEIGHT_CHOICES[-1]) -> Allocation:
    """The optimal allocation (scipy's milp, HiGHS) of `table`'s layers under `budget`."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    choices = _choices(budget, fixed_weight)
    n, k = len(table.layers), len(choices)
    cost = _costs(table, choices)
    rows, cols = np.repeat(np.arange(n), k), np.arange(n * k)
    constraints = [LinearConstraint(coo_matrix((np.ones(n * k), (rows, cols)), shape=(n, n * k)), 1, 1)]
    params = sum(layer.params for layer in table.layers)
    macs = sum(layer.macs for layer in table.layers)
    for column, limit, total in ((1, budget.weight_bits, params), (2, budget.act_bits, macs),
                                 (3, budget.bops_per_mac, macs)):
        if limit is not None:
            # a small slack so a budget met exactly (e.g. every layer at 8 for W8) is not lost to rounding
            constraints.append(LinearConstraint(cost[:, :, column].reshape(1, -1), -np.inf,
                                                limit * total * (1 + 1e-9)))
    with _quiet_solver():
        result = milp(cost[:, :, 0].reshape(-1), constraints=constraints, integrality=np.ones(n * k),
                      bounds=Bounds(0, 1), options={"presolve": True})
    if result.status != 0 or result.x is None:
        raise DgqError(f"no allocation meets the budget {budget} (HiGHS: {result.message}): raise it")
    pick = np.asarray(result.x).reshape(n, k).argmax(axis=1)
    layers = {layer.module: choices[int(c)] for layer, c in zip(table.layers, pick)}
    return Allocation(table.model_name, table.config_sha256, "ilp", budget, layers, objective(table, layers),
                      achieved(table, layers))


@contextlib.contextmanager
def _quiet_solver():
    """HiGHS 1.17's MIP prints internal trace lines on the process's stdout even with disp off: keep them out
    of the command's output (file descriptors 1 and 2, restored afterwards)."""
    saved = []
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # captured streams: nothing to silence
                continue
            stream.flush()
            saved.append((stream, fd, os.dup(fd)))
        with open(os.devnull, "w") as null:
            for _stream, fd, _copy in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for stream, fd, copy in saved:
            stream.flush()
            os.dup2(copy, fd)
            os.close(copy)


def random_allocation(table, like: Allocation, seed: int = 0) -> Allocation:
    """A random allocation no larger than `like` in every budgeted average: layers in a random order are widened
    (from the narrowest combination) while the averages stay within what `like` reached. Integer widths only (an
    FP layer's 32 bits would rarely fit a random order)."""
    rng = np.random.default_rng(seed)
    lo_w, lo_a = MIXED_WEIGHT_CHOICES[0], MIXED_ACT_CHOICES[0]
    budget = like.budget
    free_w = budget.weight_bits is not None or budget.bops_per_mac is not None
    free_a = budget.act_bits is not None or budget.bops_per_mac is not None
    widest = (MIXED_WEIGHT_CHOICES[-1], MIXED_ACT_CHOICES[-1])  # an FP layer of `like` starts as its widest integer
    layers = {m: (lo_w if free_w else w, lo_a if free_a else a)
              for m, (w, a) in ((m, widest if is_fp(c) else c) for m, c in like.layers.items())}
    limits = {k: like.achieved[k] for k in budget.limits()}  # the budgeted averages
    for index in rng.permutation(len(table.layers)):
        module = table.layers[int(index)].module
        options = [(MIXED_WEIGHT_CHOICES[-1], None) if free_w else None, (None, MIXED_ACT_CHOICES[-1]) if free_a else None]
        first = int(rng.integers(2))  # which width to try widening first, at random
        for option in [o for o in options[first:] + options[:first] if o is not None]:
            w, a = layers[module]
            trial = dict(layers, **{module: (option[0] or w, option[1] or a)})
            reach = achieved(table, trial)
            if all(reach[k] <= limits[k] * (1 + 1e-9) for k in limits):
                layers = trial
    return Allocation(table.model_name, table.config_sha256, "random", budget, layers, objective(table, layers),
                      achieved(table, layers))
