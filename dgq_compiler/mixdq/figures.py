"""MixDQ figures: per-layer sensitivity, and the size-vs-quality front of ILP and random allocations."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dgq_compiler.report.figures import _pyplot, _save


def sensitivity_figure(table, path: str | Path) -> Path:
    """Normalised sensitivity of each layer's weights at W4 and its input at A6 (log scale), by metric class."""
    plt = _pyplot()
    layers = table.layers
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.12 * len(layers) + 3), 4.0))
    floor = 1e-8
    for key, label, marker in (("weight", "weights W4", "o"), ("act", "input A6", "s")):
        values = np.array([max(getattr(layer, key)["4" if key == "weight" else "6"], floor) for layer in layers])
        for cls, color in (("content", "tab:blue"), ("alignment", "tab:red")):
            mask = np.array([layer.metric == cls for layer in layers])
            if mask.any():
                ax.scatter(x[mask], values[mask], marker=marker, s=14, color=color, alpha=0.8 if key == "weight" else 0.45,
                           label=f"{label} ({cls})")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([layer.module for layer in layers], rotation=90, fontsize=5)
    ax.set_ylabel("normalised sensitivity (share of its class total)")
    ax.set_title(f"MixDQ metric-decoupled sensitivity ({table.config}; {table.calls} UNet calls, "
                 f"{table.prompts} prompts)\ncontent: noise-prediction error; alignment: guidance-direction "
                 "error (cross-attention to_k/to_v)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def front_figure(points: dict, path: str | Path, ylabel: str, title: str, log: bool = False) -> Path:
    """points: series name -> [(average weight bits, quality)]; one line (ILP) or scatter (random) per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, series in points.items():
        series = sorted(series)
        xs, ys = [p[0] for p in series], [p[1] for p in series]
        if name.startswith("random"):
            ax.scatter(xs, ys, s=14, alpha=0.6, label=name)
        else:
            ax.plot(xs, ys, marker="o", linewidth=1.2, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("average weight bits per parameter (model size)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
