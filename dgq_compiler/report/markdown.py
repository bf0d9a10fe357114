"""report.md: every number and figure of one `dgq run`, in the order a reader asks for them."""
from __future__ import annotations

from pathlib import Path

from dgq_compiler.report.deploy import deploy_section


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "inf" if v == float("inf") else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def summary_rows(summary: dict) -> list[list]:
    """One row per configuration: the terminal summary and the report's headline table."""
    rows = []
    for r in summary["configs"]:
        rows.append([r["preset"], f"{r['cost']['tbops_exact']:.4g}", _mb(r["compiled_bytes"]),
                     _min_mean([s for _, s in r["step_snr"]]), _min_mean([s for _, s in r.get("guidance_snr", [])]),
                     "pass" if r["verify_passed"] else "FAIL",
                     f"{r['verify']['worst_mismatch_rate']:.2e}", r["verify"]["max_lsb"],
                     sum(r["check_violations"].values()), _stock_onnxruntime(r)])
    return rows


def _min_mean(values: list) -> str:
    return f"{min(values):.1f} / {sum(values) / len(values):.1f}" if values else "-"


def _stock_onnxruntime(r: dict) -> str:
    """Ran in a default onnxruntime session; its UNet call against the fp32 graph's."""
    if not r.get("onnxruntime", {}).get("default_session"):
        return "-"
    seconds = r.get("seconds", {})
    if not seconds.get("fp32_unet_call"):
        return "yes"
    return f"yes, {seconds['unet_call'] / seconds['fp32_unet_call']:.2f}x fp32"


SUMMARY_HEADERS = ["configuration", "TBOPs (exact)", "graph MB", "noise SNR dB (min / mean)",
                   "guidance SNR dB (min / mean)",
                   "verify (generic-npu)", "worst code mismatch", "max LSB", "TensorRT-like violations",
                   "stock onnxruntime (UNet call)"]


def _shortened(changes: dict | None) -> list[str]:
    """The `--quick` paragraph: which options ran shortened, against the full run's values."""
    if not changes:
        return []
    items = ", ".join(f"{name.replace('_', ' ')} {c['quick'] if not isinstance(c['quick'], (list, tuple)) else ', '.join(c['quick'])}"
                      f" (full run: {c['full'] if not isinstance(c['full'], (list, tuple)) else len(c['full'])})"
                      for name, c in changes.items())
    return [f"**Quick run (`--quick`)**: shortened to {items}. The figures show what the method does, not its "
            "full-budget fidelity.", ""]


def write_report(summary: dict, out: Path) -> Path:
    from dgq_compiler.report.quality import quality_section

    opts = summary["options"]
    cal = summary["calibration"]
    exp = summary["export"]
    parts = [
        f"# DGQ report: {summary['model']}",
        "",
        f"Every number and figure below comes from this run (`dgq run`, seed {opts['seed']}, "
        f"{cal['prompts']} calibration prompts, {opts['steps']} PNDM steps, guidance {opts['guidance']}). "
        f"Total time {summary['seconds'].get('total', 0):.0f} s.",
        "",
        *_shortened(summary.get("shortened")),
        *quality_section(summary),
        "## Summary",
        "",
        _table(SUMMARY_HEADERS, summary_rows(summary)),
        "",
        "Noise SNR: the compiled graph's noise prediction against FP on the FP sampling trajectory "
        "(all steps, all image prompts). Guidance SNR: the same for the guidance direction eps_cond - eps_uncond, "
        "the part classifier-free guidance multiplies and the prompt lives in; a whole-prediction SNR barely "
        "weighs it, and it follows the image metrics where noise SNR does not (a negative value: the error is "
        "larger than the direction). Verify: the integer simulator against onnxruntime on the same "
        "compiled graph. Violations: what a TensorRT-like INT8 target cannot run (see below); the row "
        "`<preset>@tensorrt-int8` is that preset compiled for it (`dgq compile --target`), its violations counted "
        "over its static per-step graphs. Stock onnxruntime: the graph ran in a default session (no options), "
        "and its median UNet call time against the fp32 graph's in the same kind of session.",
        "",
        *deploy_section(summary),
        "## Export",
        "",
        f"`export/unet.onnx`: {exp['parameters'] / 1e6:.2f} M parameters, opset {exp['opset']}, validated against "
        f"torch at timesteps {', '.join(exp['max_abs_error'])}: max abs error "
        f"{max(exp['max_abs_error'].values()):.3g} (tolerance {exp['tolerance']:g}).",
        "",
        "## Cost",
        "",
    ]
    for title, rows in summary["cost"].items():
        parts += [f"**{title}**, paper convention (Σ MACs × b_w × b_a), batch {rows[0]['batch']}, "
                  f"resolution {rows[0]['resolution'][0]}×{rows[0]['resolution'][1]} px:", "",
                  _table(["bits", "G", "TBOPs", "model size MB", "quant. params MB"],
                         [[r["bits"], r["groups"], r["tbops"], _mb(r["model_size_bytes"]),
                           _mb(r["qparam_bytes"])] for r in rows]), ""]
    r = summary["roofline"]
    parts += [f"### Latency and energy (roofline on {r['target']})", "", f"![roofline](figures/{r['figure']})", "",
              _table(r["headers"], r["rows"]), ""]
    if r.get("per_op_widths"):
        parts += ["Costed at the widths their compiled graph gives each layer (mixed precision, FP <start> row): "
                  + ", ".join(r["per_op_widths"]) + "; the other rows at their configuration's one width.", ""]
    parts += ["Exact-convention TBOPs of each configuration of this model are in the summary table.", "",
              "## Fidelity", "",
              f"![per-layer SQNR](figures/{summary['figures']['layer_sqnr']})", "",
              f"![noise prediction SNR per step](figures/{summary['figures']['step_snr']})", "",
              _table(["configuration", "median layer SQNR dB", "worst layer", "worst layer SQNR dB"],
                     [[r["preset"], _median(r["layer_sqnr"]), *_worst(r["layer_sqnr"])]
                      for r in summary["configs"]]), "",
              "## Distributions", ""]
    for row in summary["figures"]["ranges"]:
        parts += [f"`{row['module']}` per {row['dimension']}: largest |range| is {row['outlier_ratio']:.1f}× the "
                  f"median at t={row['timestep']}; DGQ chose the **{row['dgq_axis']}** dimension.", "",
                  f"![ranges](figures/{row['figure']})", ""]
    if "attention" in summary["figures"]:
        att = summary["attention"]
        parts += [f"Cross-attention: the <start> column holds {100 * att['bos_share_of_mass']:.1f}% of the "
                  f"probability mass (mean probability {att['bos_mean']:.3g} against {att['other_mean']:.3g} "
                  "for the other tokens).", "",
                  f"![cross-attention log-probabilities](figures/{summary['figures']['attention']})", ""]
    parts += [structure_sentence(summary), ""]
    parts += ["## Images", "",
              "Same prompts and seeds; FP from torch, every other row from the compiled ONNX graph in onnxruntime.", "",
              f"![image grid](figures/{summary['figures']['image_grid']})", "",
              "Prompts: " + "; ".join(f"`{p}`" for p in summary["image_prompts"]), "",
              "## Verify and check", "",
              _table(["configuration", "quantized tensors", "worst code mismatch", "max LSB", "overflows",
                      "output error (rel. RMS)", "verify", "TensorRT-like violations by rule"],
                     [[r["preset"], r["verify"]["tensors"], f"{r['verify']['worst_mismatch_rate']:.2e}",
                       r["verify"]["max_lsb"], r["verify"]["overflows"], r["verify"]["output_error"],
                       "pass" if r["verify_passed"] else "FAIL: " + "; ".join(r["verify"]["failures"]),
                       ", ".join(f"{k}: {v}" for k, v in sorted(r["check_violations"].items())) or "none"]
                      for r in summary["configs"]]), "",
              "Per-tensor tables: `graphs/<configuration>/verify.json`; violations: `graphs/<configuration>/check.json`.",
              "", "## Files", "",
              "`export/` fp32 graph + module map · `calibration/` statistics · `recipes/` one recipe per configuration · "
              "`graphs/<configuration>/` compiled graph, encodings.json, compile.json, verify.json, check.json · "
              "`figures/` the PNGs above · `summary.json` every number of this page.", "",
              "## Stage times", "", *stage_times(summary)]
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# What makes a model "like real Stable Diffusion" for DGQ: outlier channels or pixels far above the median (the
# shapes testbed's stay below 20x), and a <start> column that draws a multiple of the other tokens' attention.
# DGQ's groups and its FP <start> column are built for exactly these two properties.
SD_OUTLIER_RATIO = 30.0  # largest |range| at least this many times the median: SD-scale outliers
START_PEAK = 5.0         # <start>'s mean probability at least this many times the other tokens': a peak


def structure_sentence(summary: dict) -> str:
    """One plain sentence: does this model have SD's activation outliers and <start> attention peak?"""
    top = max(summary["figures"]["ranges"], key=lambda row: row["outlier_ratio"], default={"outlier_ratio": 0.0})
    ratio, where = top["outlier_ratio"], f", at {top['module']}'s input" if top.get("module") else ""
    if ratio >= SD_OUTLIER_RATIO:
        outliers = (f"has activation outliers at real Stable Diffusion's scale (largest range {ratio:.0f}× the median"
                    f"{where})")
    else:
        outliers = f"lacks real Stable Diffusion's activation outliers (largest range {ratio:.1f}× the median{where})"
    att = summary.get("attention")
    if not att:
        start = "has no cross-attention to measure a <start> peak in"
    else:
        draws = f"{att['bos_mean'] / att['other_mean']:.1f}× the other tokens' probability"
        peak = att["bos_mean"] >= START_PEAK * att["other_mean"]
        start = f"has a <start> attention peak ({draws})" if peak else \
            f"lacks SD's <start> attention peak (<start> draws {draws})"
    return (f"**This model {outliers}, and it {start}.** DGQ's gains over per-tensor quantization depend on both: "
            "where a model lacks them, expect DGQ and the baselines to score alike.")


def stage_times(summary: dict) -> list[str]:
    """The stage table: wall and CPU seconds (CPU: this process and its children, over all cores), with the load."""
    cpu = summary.get("cpu_seconds", {})
    load = summary.get("load")
    lines = []
    if load:
        lines += [f"Machine load (1-minute average) {load['start']:.1f} at the start, {load['end']:.1f} at the end; "
                  f"CPU seconds count every core this run used, so they change little with the load.", ""]
    rows = [[k, v, cpu.get(k, "-")] for k, v in summary["seconds"].items()]
    return lines + [_table(["stage", "wall s", "CPU s"], rows), ""]


def _median(values: dict) -> float:
    finite = sorted(v for v in values.values() if v != float("inf"))
    return finite[len(finite) // 2] if finite else float("inf")


def _worst(values: dict) -> list:
    if not values:
        return ["-", float("nan")]
    name = min(values, key=lambda k: values[k])
    return [f"`{name}`", values[name]]
