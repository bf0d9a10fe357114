"""One row of cost figures per configuration, the standard table, and the model/graph -> Inventory dispatch."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from simulator.cost.bits import STANDARD_BITS, STANDARD_GROUPS, BitWidths, parse_bits
from simulator.cost.bops import count_bops
from simulator.cost.inventory import LATENT_FACTOR, Inventory
from simulator.cost.size import size_report
from simulator.errors import SimulatorError

CONVENTIONS = ("paper", "exact")
DEFAULT_BATCH = 2      # classifier-free guidance: cond + uncond in one UNet call
DEFAULT_STEPS = 25     # the paper's denoising steps (section 4.1): rows of the [T, G] tables
DEFAULT_GROUPS = 8
# The paper's Table 2 counts SDXL-Turbo at SDXL's native 1024 x 1024 (6,927 T at FP32, batch 2); at the
# turbo config's own 512 px it would be 1,627 T. Under `paper`, SDXL-architecture UNets default to it.
PAPER_SDXL_RESOLUTION = 1024


@dataclass(frozen=True)
class CostRow:
    model: str
    source: str           # config | graph
    convention: str
    bits: str             # W8A6 (W32A32 for FP32)
    name: str             # FP32 or the bits label
    groups: int
    steps: int
    batch: int
    resolution: list      # [height, width] in image pixels
    macs: dict            # by kind + total
    bops: int
    tbops: float
    bops_parts: dict
    shift_adds: int
    shift_add_bops: int
    rescale_overhead_bops: int
    model_size_bytes: int
    quantized_weight_bytes: int
    fp_param_bytes: int
    qparam_bytes: int
    qparam_parts: dict

    def to_json(self) -> dict:
        return asdict(self)


def cost_row(inventory: Inventory, bits: BitWidths | str, *, groups: int = DEFAULT_GROUPS,
             steps: int = DEFAULT_STEPS, convention: str = "paper", shared_group_map: bool = False,
             compiled: bool = False) -> CostRow:
    """`compiled`: every op at the widths its compiled graph gives it (per-layer mixed precision, the FP <start>
    row of a BOS-aware text embedding); `bits` then covers what no quantizer names, and the row is named
    `compiled (...)` with the parameter-weighted average weight width."""
    bits = parse_bits(bits) if isinstance(bits, str) else bits
    bops = count_bops(inventory, bits, groups, convention, compiled)
    size = size_report(inventory, bits, groups, steps, shared_group_map, compiled)
    name = bits.name
    if compiled:
        average = 8 * size.quantized_weight_bytes / max(inventory.quantized_weight_elements, 1)
        name = f"compiled (W{average:.2f} avg)"
    return CostRow(model=inventory.model, source=inventory.source, convention=convention, bits=bits.label,
                   name=name, groups=groups, steps=steps, batch=inventory.batch,
                   resolution=list(inventory.resolution), macs=inventory.macs(), bops=bops.total,
                   tbops=bops.total / 1e12, bops_parts=bops.parts, shift_adds=bops.shift_adds,
                   shift_add_bops=bops.shift_add_bops, rescale_overhead_bops=bops.rescale_overhead_bops,
                   model_size_bytes=size.model_size_bytes, quantized_weight_bytes=size.quantized_weight_bytes,
                   fp_param_bytes=size.fp_param_bytes, qparam_bytes=size.qparam_bytes,
                   qparam_parts={"weight_scales": size.weight_scale_bytes,
                                 "activation_tables": size.activation_table_bytes,
                                 "group_maps": size.group_map_bytes})


def standard_rows(inventory: Inventory, *, steps: int = DEFAULT_STEPS, convention: str = "paper",
                  groups: tuple = STANDARD_GROUPS, shared_group_map: bool = False) -> list[CostRow]:
    """FP32 once, then W8A8, W8A6, W4A8, W4A6 x each G."""
    rows = []
    for label in STANDARD_BITS:
        bits = parse_bits(label)
        for g in ((1,) if bits.full_precision else groups):
            rows.append(cost_row(inventory, bits, groups=g, steps=steps, convention=convention,
                                 shared_group_map=shared_group_map))
    return rows


def is_graph(model: str) -> bool:
    path = Path(model)
    return path.suffix == ".onnx" or (path.is_dir() and (path / "unet.onnx").is_file()
                                      and not (path / "config.json").is_file())


def default_resolution(config: dict, convention: str) -> int | None:
    """None = the config's sample_size x 8; `paper` counts SDXL-architecture UNets at 1024 px (Table 2)."""
    if convention == "paper" and config.get("addition_embed_type") == "text_time":
        return PAPER_SDXL_RESOLUTION
    return None


def load_inventory(model: str, *, batch: int | None = None, resolution: int | None = None,
                   convention: str = "paper") -> Inventory:
    """A zoo name / UNet config.json / folder (meta forward), or an ONNX graph (shape inference)."""
    if convention not in CONVENTIONS:
        raise SimulatorError(f"unknown BOPs convention {convention!r}: expected one of {', '.join(CONVENTIONS)}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise SimulatorError(f"batch must be a positive integer, got {batch!r}")
    if resolution is not None and (not isinstance(resolution, int) or resolution <= 0
                                   or resolution % LATENT_FACTOR):
        raise SimulatorError(f"resolution {resolution!r} px is not a positive multiple of {LATENT_FACTOR}")
    if is_graph(model):
        from simulator.cost.macs_from_graph import inventory_from_graph

        return inventory_from_graph(model, batch=batch, resolution=resolution, model=model)
    from models.zoo import resolve_config
    from simulator.cost.macs_from_config import inventory_from_config

    config = resolve_config(model)
    if resolution is None:
        resolution = default_resolution(config, convention)
    return inventory_from_config(config, batch=batch or DEFAULT_BATCH, resolution=resolution, model=model)
