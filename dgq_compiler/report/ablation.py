"""report.md of `dgq ablate`: the paper's Table 3 (b) grouping and (c) attention tables, with intervals, plots
and the suite's own run time."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dgq_compiler.report.markdown import _table as table
from dgq_compiler.report.markdown import stage_times
from dgq_compiler.report.quality import (METRIC_TITLES, SET_TITLES, images_phrase, interval_text, metric_cell,
                                         metric_digits)

METRICS = ("frechet", "alignment", "is_like")
DIMENSION_TITLES = {"channel": "channel only", "pixel": "pixel only", "auto": "chosen (V_d)", "-": "- (per tensor)"}
DIMENSION_STYLE = {"channel": ("tab:blue", "s"), "pixel": ("tab:orange", "^"), "auto": ("tab:green", "o")}


def _metric_cells(scores: dict, sets: list[str]) -> list[str]:
    return [metric_cell(scores[s], m) for s in sets for m in METRICS]


def _metric_headers(sets: list[str]) -> list[str]:
    return [f"{METRIC_TITLES[m]} ({SET_TITLES.get(s, s)})" for s in sets for m in METRICS]


def grouping_table(summary: dict, sets: list[str]) -> str:
    fp = summary["quality"]["configs"][summary["quality"]["fp"]]
    rows = [["32/32", "-", "FP", *[interval_text(fp[s][m], metric_digits(m)) for s in sets for m in METRICS], "-"]]
    for r in summary["rows"]:
        if r["table"] == "grouping":
            f = r["factors"]
            rows.append([f"{summary['options']['weight_bits']}/{f['act_bits']}", f["groups"],
                         DIMENSION_TITLES[f["dimension"]], *_metric_cells(r["scores"], sets),
                         round(sum(r["seconds"].values()), 1)])
    return table(["bits W/A", "G", "grouping dimension", *_metric_headers(sets), "build + images s"], rows)


def attention_table(summary: dict, sets: list[str]) -> str:
    fp = summary["quality"]["configs"][summary["quality"]["fp"]]
    rows = [["32/32", "FP", "-", "-", *[interval_text(fp[s][m], metric_digits(m)) for s in sets for m in METRICS]]]
    for r in summary["rows"]:
        if r["table"] == "attention":
            f = r["factors"]
            quantizer = "linear" if f["quantizer"] == "uniform" else \
                f"log2 ({'dynamic' if f['dynamic'] else 'static, calibrated'} scale)"
            rows.append([f"{summary['options']['weight_bits']}/{f['act_bits']}", quantizer,
                         "✓" if f["exclude_bos"] else "✗", r["name"], *_metric_cells(r["scores"], sets)])
    return table(["bits W/A", "attention quantizer", "separate <start>", "configuration", *_metric_headers(sets)],
                 rows)


def grouping_figure(summary: dict, set_name: str, path: Path) -> Path:
    """Per activation width (columns) and metric (rows): metric against G, one line per grouping dimension."""
    from dgq_compiler.report.figures import _pyplot, _save

    plt = _pyplot()
    bits = list(summary["options"]["act_bits"])
    fp = summary["quality"]["configs"][summary["quality"]["fp"]][set_name]
    fig, axes = plt.subplots(2, len(bits), figsize=(4.2 * len(bits), 6.0), squeeze=False)
    for col, a in enumerate(bits):
        rows = [r for r in summary["rows"] if r["table"] == "grouping" and r["factors"]["act_bits"] == a]
        single = [r for r in rows if r["factors"]["groups"] == 1]
        for row_index, metric in enumerate(("alignment", "frechet")):
            ax = axes[row_index][col]
            for dim, (color, marker) in DIMENSION_STYLE.items():
                points = single + [r for r in rows if r["factors"]["dimension"] == dim]
                xs = np.array([r["factors"]["groups"] for r in points], dtype=float)
                values, errors = _values_and_error_bars(points, set_name, metric)
                offset = {"channel": 0.94, "pixel": 1.0, "auto": 1.06}[dim]  # side by side, error bars readable
                ax.errorbar(xs * offset, values, yerr=errors, color=color, marker=marker, capsize=2, linewidth=1,
                            label=DIMENSION_TITLES[dim])
            ax.axhline(fp[metric]["value"], color="black", linestyle="--", linewidth=0.8, label="FP")
            ax.axhspan(fp[metric]["low"], fp[metric]["high"], color="black", alpha=0.08)
            ax.set_xscale("log", base=2)
            ax.set_xticks(summary["options"]["groups"], [str(g) for g in summary["options"]["groups"]])
            ax.set_xlabel("groups G")
            ax.set_ylabel(METRIC_TITLES[metric])
            ax.set_title(f"W{summary['options']['weight_bits']}A{a}: {METRIC_TITLES[metric]} "
                         f"({SET_TITLES.get(set_name, set_name)})")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def attention_figure(summary: dict, set_name: str, path: Path) -> Path:
    """Per activation width and metric: one bar per attention variant, with its interval; FP dashed."""
    from dgq_compiler.report.figures import _pyplot, _save

    plt = _pyplot()
    bits = list(summary["options"]["act_bits"])
    fp = summary["quality"]["configs"][summary["quality"]["fp"]][set_name]
    fig, axes = plt.subplots(2, len(bits), figsize=(4.6 * len(bits), 6.4), squeeze=False)
    for col, a in enumerate(bits):
        rows = [r for r in summary["rows"] if r["table"] == "attention" and r["factors"]["act_bits"] == a]
        labels = [_attention_label(r["factors"]) for r in rows]
        for row_index, metric in enumerate(("alignment", "frechet")):
            ax = axes[row_index][col]
            values, errors = _values_and_error_bars(rows, set_name, metric)
            colors = ["tab:gray" if r["factors"]["quantizer"] == "uniform" else
                      ("tab:green" if r["factors"]["dynamic"] else "tab:purple") for r in rows]
            ax.bar(np.arange(len(rows)), values, yerr=errors, color=colors, capsize=3,
                   hatch=None, edgecolor=["black" if r["factors"]["exclude_bos"] else "none" for r in rows])
            ax.axhline(fp[metric]["value"], color="black", linestyle="--", linewidth=0.8, label="FP")
            ax.set_xticks(np.arange(len(rows)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(METRIC_TITLES[metric])
            ax.set_title(f"W{summary['options']['weight_bits']}A{a}: {METRIC_TITLES[metric]} "
                         f"({SET_TITLES.get(set_name, set_name)})")
            ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def _values_and_error_bars(rows: list[dict], set_name: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's metric and its interval as matplotlib's [2, N] error bars (never negative)."""
    scores = [r["scores"][set_name][metric] for r in rows]
    values = np.array([s["value"] for s in scores])
    errors = np.array([[s["value"] - s["low"], s["high"] - s["value"]] for s in scores]).T.clip(0)
    return values, errors


def _attention_label(f: dict) -> str:
    quantizer = "linear" if f["quantizer"] == "uniform" else f"log2 {'dyn' if f['dynamic'] else 'static'}"
    return f"{quantizer}, <start> {'sep.' if f['exclude_bos'] else 'in'}"


def write_ablation_report(summary: dict, out: Path) -> Path:
    quality = summary["quality"]
    sets = list(quality["sets"])
    opts, run = summary["options"], summary["options"]["run"]
    tables = opts["tables"]
    figures = {}
    for set_name in sets:
        for name, draw in (("grouping", grouping_figure), ("attention", attention_figure)):
            if name in tables:
                figures[f"{name}_{set_name}"] = draw(summary, set_name, out / "figures" / f"{name}_{set_name}.png").name
    summary["figures"] = figures
    seconds = summary["seconds"]
    builds = [r for r in summary["rows"] if r["seconds"]]
    check = quality["evaluator_check"]
    parts = [f"# DGQ ablations: {summary['model']}", "",
             f"The paper's Table 3 on this model: **{seconds['total']:.0f} s** in all "
             f"({len({r['name'] for r in summary['rows']})} configurations built once each, calibration "
             f"{summary['calibration']['prompts']} prompts × {run['steps']} {run.get('scheduler', 'pndm').upper()} steps, "
             f"run once). Every row: {images_phrase(quality['sets'])} from its compiled (QDQ) "
             f"graph in a default onnxruntime session, the same prompts and seeds as FP; seed {run['seed']}, guidance {run['guidance']}. "
             "95% intervals in brackets (alignment: bootstrap; Fréchet, IS-like: jackknife); **bold**: separates "
             "from FP. Weights W"
             f"{opts['weight_bits']} per output channel ({'min-max' if opts['weight_bits'] == 8 else 'MSE search'}).",
             ""]
    if "grouping" in tables:
        parts += ["## (b) Grouping: group count and dimension selection", "",
                  "Activations grouped along channels only, pixels only, or the dimension the metric V_d chooses "
                  "per layer (DGQ); G = 1 is per tensor. Attention as in DGQ (log2, dynamic scale, <start> "
                  "separated).", "", grouping_table(summary, sets), ""]
        parts += [f"![grouping ablation, {SET_TITLES.get(s, s)}](figures/{figures[f'grouping_{s}']})" for s in sets]
        parts += [""]
    if "attention" in tables:
        parts += ["## (c) Attention-aware quantization", "",
                  f"Activations as DGQ at G = {opts['attention_groups']} (dimension chosen); the attention "
                  "probabilities quantized linearly (one scale per step) or by log2 with a dynamic (max of the "
                  "tensor at inference) or static (calibrated) scale; <start> separated: the <start> column of "
                  "cross-attention probabilities and its key/value row kept FP.", "",
                  attention_table(summary, sets), ""]
        parts += [f"![attention ablation, {SET_TITLES.get(s, s)}](figures/{figures[f'attention_{s}']})" for s in sets]
        parts += [""]
    accuracy = ", ".join(f"{k} {v:.2f}" for k, v in check["accuracy"].items())
    parts += [f"Evaluator check: accuracy per attribute on {check['scenes']} fresh rendered scenes of these "
              f"prompts {accuracy} ({'passed' if check['passed'] else 'FAILED'}, threshold {check['threshold']}).",
              "", "## Time", "",
              f"Total {seconds['total']:.0f} s. Per configuration: quantize + compile + images "
              f"(median {np.median([sum(r['seconds'].values()) for r in builds]):.0f} s).", "",
              *stage_times(summary)]
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
