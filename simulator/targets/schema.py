"""The hardware-target schema: what integer arithmetic an accelerator offers (DESIGN.md section 7).

A target is a JSON (or TOML) file. Every field is validated; a malformed file raises SimulatorError
naming the field (`activations.max_groups`) and what was expected. The optional `hardware` section
(peak rates, bandwidths, buffer, energies; `simulator/targets/hardware.py`) feeds the cost model's
roofline latency and energy estimates.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from simulator.errors import SimulatorError
from simulator.rounding import RoundingMode
from simulator.targets.hardware import HardwareSpec, hardware_from_dict

GRANULARITIES = ("tensor", "channel", "pixel")
SCALE_SOURCES = ("constant", "computed")    # computed = gathered per step / dynamic in the graph
EPILOGUE_ARITHMETIC = ("float32", "float16", "fixed_point")
OVERFLOW_MODES = ("wrap", "saturate")


@dataclass(frozen=True)
class WeightSpec:
    bits: tuple[int, ...] = (4, 8)            # supported weight bit widths
    grids: tuple[str, ...] = ("signed",)      # "signed" and/or "unsigned"
    symmetric_only: bool = False              # zero point must be 0
    per_channel: bool = True                  # per-output-channel scales (else per tensor only)


@dataclass(frozen=True)
class ActivationSpec:
    bits: tuple[int, ...] = (8,)
    grids: tuple[str, ...] = ("unsigned",)
    symmetric_only: bool = False              # zero point must be 0 (or 128 on an unsigned grid is NOT accepted)
    granularity: tuple[str, ...] = ("tensor",)  # tensor | channel | pixel groups
    max_groups: int = 1
    pixel_groups_kxk_conv: bool = False       # pixel groups on a kxk conv input (one partial conv per group)
    scale_sources: tuple[str, ...] = ("constant",)
    per_step_group_maps: bool = False         # a group map per timestep (else one map shared by all steps)


@dataclass(frozen=True)
class EpilogueSpec:
    arithmetic: str = "float32"               # float32 | float16 | fixed_point
    rounding: str = "HALF_EVEN"               # fixed_point: rounding of the multiplier product's right shift
    multiplier_bits: int = 31                 # fixed_point: scale = M * 2^-n with M < 2^multiplier_bits
    output_frac_bits: int = 16                # fixed_point: fraction bits of the rescaled result


@dataclass(frozen=True)
class LogQuantizerSpec:
    supported: bool = False
    bits: tuple[int, ...] = ()
    max_shift: int = 0                        # shift-and-add: terms 2^(S - q) with q > S vanish
    accumulator_bits: int = 32
    dynamic_scale: bool = False               # s = max of the tensor at run time


@dataclass(frozen=True)
class VerifyTolerance:
    max_code_mismatch_rate: float = 0.01      # per quantized tensor, fraction of codes != onnxruntime's
    max_lsb_diff: int = 2                     # largest |code difference| allowed anywhere
    max_output_error: float = 0.05            # rms(sim - ort) / rms(ort) of the graph output (lock-step)


@dataclass(frozen=True)
class Target:
    name: str
    description: str = ""
    weights: WeightSpec = WeightSpec()
    activations: ActivationSpec = ActivationSpec()
    accumulator_bits: int = 32
    accumulator_overflow: str = "wrap"        # wrap (two's complement) | saturate
    epilogue: EpilogueSpec = EpilogueSpec()
    log_quantizer: LogQuantizerSpec = LogQuantizerSpec()
    fp_side_branch: bool = False              # the cross-attention <start> branch may run in floating point
    verify: VerifyTolerance = VerifyTolerance()
    hardware: HardwareSpec | None = None      # performance numbers for `dgq cost` (None: no estimates)

    @property
    def rounding(self) -> RoundingMode:
        return RoundingMode(self.epilogue.rounding)

    def to_dict(self) -> dict:
        return asdict(self)


_SECTIONS = {"weights": WeightSpec, "activations": ActivationSpec, "epilogue": EpilogueSpec,
             "log_quantizer": LogQuantizerSpec, "verify": VerifyTolerance}


def _fail(field: str, expected: str, got) -> SimulatorError:
    return SimulatorError(f"target field {field!r}: expected {expected}, got {got!r}")


def _int(field, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(field, f"an integer in {lo}..{hi}", value)
    return value


def _float(field, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _fail(field, f"a number in {lo}..{hi}", value)
    return float(value)


def _bool(field, value):
    if not isinstance(value, bool):
        raise _fail(field, "true or false", value)
    return value


def _choice(field, value, choices):
    if value not in choices:
        raise _fail(field, f"one of {', '.join(choices)}", value)
    return value


def _choices(field, value, choices, allow_empty=False):
    if not isinstance(value, list) or (not value and not allow_empty):
        raise _fail(field, f"a {'' if allow_empty else 'non-empty '}list of {', '.join(map(str, choices))}", value)
    for i, v in enumerate(value):
        _choice(f"{field}[{i}]", v, choices)
    return tuple(value)


def _bits_list(field, value, allow_empty=False):
    if not isinstance(value, list) or (not value and not allow_empty):
        raise _fail(field, "a list of bit widths (integers 2..16)", value)
    return tuple(_int(f"{field}[{i}]", v, 2, 16) for i, v in enumerate(value))


# field -> validator(value, dotted name); one table per section, so unknown keys are caught too
_RULES = {
    "weights": {
        "bits": lambda v, f: _bits_list(f, v),
        "grids": lambda v, f: _choices(f, v, ("signed", "unsigned")),
        "symmetric_only": lambda v, f: _bool(f, v),
        "per_channel": lambda v, f: _bool(f, v),
    },
    "activations": {
        "bits": lambda v, f: _bits_list(f, v),
        "grids": lambda v, f: _choices(f, v, ("signed", "unsigned")),
        "symmetric_only": lambda v, f: _bool(f, v),
        "granularity": lambda v, f: _choices(f, v, GRANULARITIES),
        "max_groups": lambda v, f: _int(f, v, 1, 1 << 20),
        "pixel_groups_kxk_conv": lambda v, f: _bool(f, v),
        "scale_sources": lambda v, f: _choices(f, v, SCALE_SOURCES),
        "per_step_group_maps": lambda v, f: _bool(f, v),
    },
    "epilogue": {
        "arithmetic": lambda v, f: _choice(f, v, EPILOGUE_ARITHMETIC),
        "rounding": lambda v, f: _choice(f, v, tuple(m.value for m in RoundingMode)),
        "multiplier_bits": lambda v, f: _int(f, v, 2, 32),
        "output_frac_bits": lambda v, f: _int(f, v, 0, 30),
    },
    "log_quantizer": {
        "supported": lambda v, f: _bool(f, v),
        "bits": lambda v, f: _bits_list(f, v, allow_empty=True),
        "max_shift": lambda v, f: _int(f, v, 0, 40),
        "accumulator_bits": lambda v, f: _int(f, v, 8, 64),
        "dynamic_scale": lambda v, f: _bool(f, v),
    },
    "verify": {
        "max_code_mismatch_rate": lambda v, f: _float(f, v, 0.0, 1.0),
        "max_lsb_diff": lambda v, f: _int(f, v, 0, 1 << 16),
        "max_output_error": lambda v, f: _float(f, v, 0.0, 1e6),
    },
}
def _str(field, value, allow_empty=False):
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _fail(field, "a string" if allow_empty else "a non-empty string", value)
    return value


_TOP = {
    "name": lambda v, f: _str(f, v),
    "description": lambda v, f: _str(f, v, allow_empty=True),
    "accumulator_bits": lambda v, f: _int(f, v, 8, 64),
    "accumulator_overflow": lambda v, f: _choice(f, v, OVERFLOW_MODES),
    "fp_side_branch": lambda v, f: _bool(f, v),
    "hardware": lambda v, f: hardware_from_dict(v, f),
}


def target_from_dict(data: dict, source: str = "target") -> Target:
    """Validate a parsed target document; errors name the offending field."""
    if not isinstance(data, dict):
        raise SimulatorError(f"{source}: a target must be a JSON/TOML object, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "$schema"}
    known = set(_TOP) | set(_SECTIONS)
    for key in data:
        if key not in known:
            raise SimulatorError(f"target field {key!r} is unknown (known: {', '.join(sorted(known))})")
    if "name" not in data:
        raise SimulatorError("target field 'name' is missing")
    kwargs = {key: rule(data[key], key) for key, rule in _TOP.items() if key in data}
    for section, cls in _SECTIONS.items():
        if section not in data:
            continue
        body = data[section]
        if not isinstance(body, dict):
            raise _fail(section, "an object (table)", body)
        rules = _RULES[section]
        for key in body:
            if key not in rules:
                raise SimulatorError(f"target field '{section}.{key}' is unknown "
                                     f"(known: {', '.join(sorted(rules))})")
        kwargs[section] = cls(**{key: rules[key](value, f"{section}.{key}") for key, value in body.items()})
    target = Target(**kwargs)
    _check_consistency(target)
    return target


def _check_consistency(t: Target) -> None:
    a = t.activations
    if a.max_groups > 1 and a.granularity == ("tensor",):
        raise _fail("activations.max_groups", "1 when activations.granularity is only 'tensor'", a.max_groups)
    lq = t.log_quantizer
    if lq.supported and not lq.bits:
        raise _fail("log_quantizer.bits", "a non-empty list when log_quantizer.supported is true", list(lq.bits))
    if t.epilogue.arithmetic == "fixed_point":
        # the rescale product acc * M must stay exact in int64
        for field, acc in (("accumulator_bits", t.accumulator_bits), ("log_quantizer.accumulator_bits", lq.accumulator_bits)):
            if acc + t.epilogue.multiplier_bits > 63:
                raise _fail(field, f"at most {63 - t.epilogue.multiplier_bits} with a fixed_point epilogue of "
                                   f"{t.epilogue.multiplier_bits}-bit multipliers (int64 product)", acc)


def load_target_file(path: str | Path) -> Target:
    path = Path(path)
    if not path.is_file():
        raise SimulatorError(f"target file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise SimulatorError(f"target file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return target_from_dict(data, source=str(path))
