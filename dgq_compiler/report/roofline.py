"""The report's roofline figure and latency/energy table, from the cost model on a hardware target.

One call for the report (`roofline_summary`): estimates every named configuration of one inventory on a
target, draws the roofline (one point per op kind and configuration, the target's roofs drawn) and returns
a JSON-able dict with the figure's file name and a latency/energy table (headers + rows).
"""
from __future__ import annotations

from pathlib import Path

from dgq_compiler.report.figures import _pyplot, _save

UNIT_LABELS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int4", "shift_add": "shift-add"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
TABLE_HEADERS = ["configuration", "step ms", "image s", "step mJ", "compute mJ", "data movement mJ",
                 "data movement %", "DRAM MB/step", "compute-bound %"]


def preset_configs(names) -> dict:
    """{"FP32": ("W32A32", 1)} plus each named quantization preset -> (its WxAy label, its groups)."""
    from dgq_compiler.config import preset

    configs = {"FP32": ("W32A32", 1)}
    for name in names:
        config = preset(name)
        configs[name] = (f"W{config.weight_bits}A{config.act_bits}", config.groups)
    return configs


def estimate_configs(inventory, configs: dict, target="generic-npu", steps: int = 25,
                     per_op: dict | None = None) -> dict:
    """name -> (Estimate, [OpEstimate]) for `configs` = {name: (bits label, groups)} on `target`; `per_op`:
    {name: the inventory of its compiled graph}, whose ops carry their own widths (mixed precision)."""
    from simulator.cost.roofline import estimate, op_estimates
    from simulator.targets import load_target

    target = load_target(target)
    out = {}
    per_op = per_op or {}
    for name, (bits, groups) in configs.items():
        inv, compiled = (per_op[name], True) if name in per_op else (inventory, False)
        out[name] = (estimate(inv, bits, groups, target, steps, compiled),
                     op_estimates(inv, bits, groups, target.hardware, compiled))
    return out


def _by_kind(ops: list) -> dict:
    """kind -> (MACs per DRAM byte, attained MAC/s) of all ops of that kind together."""
    sums: dict = {}
    for op in ops:
        s = sums.setdefault(op.kind, [0, 0, 0.0])
        s[0] += op.macs
        s[1] += op.dram_bytes
        s[2] += op.latency_s
    return {kind: (macs / max(dram, 1), macs / max(seconds, 1e-30)) for kind, (macs, dram, seconds) in sums.items()}


def roofline_figure(per_config: dict, hardware, path: str | Path, title: str) -> Path:
    """Log-log roofline: x = MACs per DRAM byte, y = attained GMAC/s; one point per op kind (marker) and
    configuration (colour); the DRAM-bandwidth slope and each unit's peak drawn as the roof."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    points = {name: _by_kind(ops) for name, ops in per_config.items()}
    xs = [x for kinds in points.values() for x, _ in kinds.values()]
    x_lo, x_hi = min(xs + [1.0]) / 4, max(xs + [1.0]) * 4
    bandwidth = hardware.bandwidth_bytes_per_s.dram
    peaks = {unit: hardware.peak_macs_per_s[unit] for unit in ("fp32", "fp16", "int8", "int4", "shift_add")}
    top = max(peaks.values())
    ax.plot([x_lo, top / bandwidth], [bandwidth * x_lo / 1e9, top / 1e9], color="black", linewidth=1.2,
            label=f"DRAM {bandwidth / 1e9:.3g} GB/s")
    drawn = set()
    for unit, peak in sorted(peaks.items(), key=lambda kv: kv[1]):
        if peak in drawn:
            continue
        drawn.add(peak)
        same = [UNIT_LABELS[u] for u, p in peaks.items() if p == peak]
        ax.plot([peak / bandwidth, max(x_hi, peak / bandwidth * 2)], [peak / 1e9] * 2, color="black",
                linestyle="--", linewidth=0.9)
        ax.annotate(f"{' / '.join(same)} peak {peak / 1e9:.4g} GMAC/s", (max(x_hi, peak / bandwidth * 2), peak / 1e9),
                    fontsize=7, ha="right", va="bottom")
    kinds = sorted({k for p in points.values() for k in p})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, (name, by_kind) in enumerate(points.items()):
        for kind, (x, y) in by_kind.items():
            ax.scatter([x], [y / 1e9], marker=MARKERS[kinds.index(kind) % len(MARKERS)], s=42,
                       color=colours[c % len(colours)], edgecolors="black", linewidths=0.4, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MAC per DRAM byte)")
    ax.set_ylabel("attained throughput (GMAC/s)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    handles = [ax.lines[0]]
    handles += [plt.Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)], markerfacecolor="white",
                           markeredgecolor="black", label=kind) for i, kind in enumerate(kinds)]
    handles += [plt.Line2D([], [], linestyle="", marker="o", color=colours[c % len(colours)], label=name)
                for c, name in enumerate(points)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              title="roof, op kind (marker), configuration (colour)", title_fontsize=7)
    return _save(fig, path)


def latency_energy_table(estimates: dict) -> tuple[list[str], list[list]]:
    """(headers, rows) for `estimates` = {name: Estimate}: latency per step and image, energy split."""
    rows = []
    for name, e in estimates.items():
        rows.append([name, round(e.step_latency_s * 1e3, 3), round(e.image_latency_s, 3),
                     round(e.step_energy_j * 1e3, 2), round(e.step_compute_j * 1e3, 2), round(e.step_data_j * 1e3, 2),
                     round(100 * e.step_data_j / max(e.step_energy_j, 1e-30), 1), round(e.step_dram_bytes / 1e6, 2),
                     round(100 * e.compute_bound_share, 1)])
    return list(TABLE_HEADERS), rows


def roofline_summary(inventory, configs: dict, figure_path: str | Path, target="generic-npu", steps: int = 25,
                     per_op: dict | None = None) -> dict:
    """Estimate `configs` ({name: (bits label, groups)}) on `target` (`per_op`: see estimate_configs), draw the
    roofline to `figure_path`; returns {"target", "steps", "batch", "figure" (file name), "headers", "rows",
    "estimates", "per_op_widths" (the names costed at their compiled graph's widths)} (JSON-able)."""
    from simulator.targets import load_target

    target = load_target(target)
    results = estimate_configs(inventory, configs, target, steps, per_op)
    h, w = inventory.resolution
    title = (f"Roofline on {target.name}: one UNet step, batch {inventory.batch}, {h}x{w} px "
             "(one point per op kind)")
    path = roofline_figure({name: ops for name, (_, ops) in results.items()}, target.hardware, figure_path, title)
    headers, rows = latency_energy_table({name: e for name, (e, _) in results.items()})
    return {"target": target.name, "steps": steps, "batch": inventory.batch, "figure": Path(path).name,
            "headers": headers, "rows": rows,
            "estimates": {name: e.to_json() for name, (e, _) in results.items()},
            "per_op_widths": sorted(per_op or {})}
