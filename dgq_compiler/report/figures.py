"""Report figures. Every function takes plain arrays, writes one PNG atomically, and labels its axes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dgq_compiler.io import atomic_path

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "dgq"})
    return plt


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png", metadata={"Software": None})
    fig.clf()
    _pyplot().close(fig)
    return Path(path)


def image_grid(images: dict[str, np.ndarray], prompts: list[str], path: str | Path) -> Path:
    """Rows: configurations (FP first); columns: prompts. `images[name]` is uint8 [N, H, W, 3]."""
    plt = _pyplot()
    rows, cols = len(images), len(prompts)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.4, 1.6 * rows + 0.6), squeeze=False)
    for r, (name, batch) in enumerate(images.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(batch[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(_wrap(prompts[c], 22), fontsize=7)
    height = 1.6 * rows + 0.6
    fig.subplots_adjust(top=1 - 0.75 / height)  # room for three lines of prompt above the first row
    fig.suptitle("Same prompts and seeds, FP vs quantized (compiled ONNX graphs in onnxruntime)",
                 fontsize=9, y=1 - 0.05 / height)
    return _save(fig, path)


def quality_grid(images: dict[str, dict[str, np.ndarray]], prompts: dict[str, tuple], path: str | Path,
                 per_set: int = 6) -> Path:
    """The quality stage's first `per_set` images of every prompt set side by side, one row per configuration
    (`images[label][set]` uint8 [N, H, W, 3], `prompts[set]` in image order)."""
    sets = list(prompts)
    count = min(per_set, *(len(batch) for rows in images.values() for batch in rows.values()))
    combined = {label: np.concatenate([rows[name][:count] for name in sets]) for label, rows in images.items()}
    titles = [f"[{name}] {prompts[name][i % len(prompts[name])]}" for name in sets for i in range(count)]
    return image_grid(combined, titles, path)


def layer_sqnr(sqnr: dict[str, dict[str, float]], path: str | Path, title: str) -> Path:
    """One line per configuration: SQNR (dB) of each layer's output against FP, layers in graph order."""
    plt = _pyplot()
    layers = list(next(iter(sqnr.values())))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.12 * len(layers) + 3), 4.0))
    x = np.arange(len(layers))
    for name, values in sqnr.items():
        ax.plot(x, [values.get(layer, np.nan) for layer in layers], marker=".", linewidth=1, label=name)
    ax.set_xlabel(f"layer (graph order, {len(layers)} layers)")
    ax.set_ylabel("SQNR vs FP (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def step_snr(snr: dict[str, list[tuple[float, float]]], path: str | Path) -> Path:
    """End-to-end noise-prediction SNR per sampling step, one line per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for name, points in snr.items():
        steps = np.arange(len(points))
        ax.plot(steps, [p[1] for p in points], marker=".", linewidth=1, label=name)
    ax.set_xlabel("sampling step (t from 999 down to 1)")
    ax.set_ylabel("noise-prediction SNR vs FP (dB)")
    ax.set_title("End-to-end noise prediction fidelity per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def ranges(lo: np.ndarray, hi: np.ndarray, groups: np.ndarray | None, dim: str, title: str,
           path: str | Path) -> Path:
    """Per-index [min, max] bars along one dimension (channel or pixel), coloured by DGQ group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    x = np.arange(len(lo))
    if groups is None:
        ax.vlines(x, lo, hi, linewidth=1.0, color="tab:blue", label="range")
    else:
        cmap = plt.get_cmap("tab20")
        for g in np.unique(groups):
            idx = x[groups == g]
            ax.vlines(idx, lo[idx], hi[idx], linewidth=1.0, color=cmap(int(g) % 20), label=f"group {int(g)}")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel(f"{dim} index")
    ax.set_ylabel("activation value (min..max)")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 12:
        handles, labels = handles[:12], labels[:11] + [f"... {len(labels)} groups"]
    ax.legend(handles, labels, fontsize=6, ncol=4, loc="upper right")
    return _save(fig, path)


def attention_histogram(bos: np.ndarray, rest: np.ndarray, path: str | Path, title: str) -> Path:
    """Histogram of log2 cross-attention probabilities: the <start> column against every other token."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    floor = -40.0  # probabilities below 2^-40 are drawn in the first bin
    logs = {name: np.log2(np.clip(np.asarray(v, dtype=np.float64).ravel(), 2.0 ** floor, None))
            for name, v in (("other tokens", rest), ("<start> token", bos))}
    low = min(float(v.min()) for v in logs.values() if v.size)
    bins = np.linspace(np.floor(low) - 0.5, 0.5, 61)
    for (label, values), color in zip(logs.items(), ("tab:blue", "tab:red")):
        ax.hist(values, bins=bins, density=True, alpha=0.6, color=color, label=f"{label} (n={values.size})")
    ax.set_xlabel("log2(attention probability)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:3]) + ("..." if len(lines) > 3 else "")


def range_figures(stats, recipe, preset: str | None, figures_dir: Path) -> list[dict]:
    """Per-channel / per-pixel ranges at the points with the strongest outliers, with the groups `recipe` (a DGQ
    configuration's, made by `preset`) chose there; one figure each, and a row describing it."""
    from dgq_compiler.report import analysis

    rows = []
    for k, (module, role, dim, ratio, step) in enumerate(analysis.outlier_points(stats)):
        point = stats.point(module, role)
        lo, hi = stats.get(point, f"{dim}_min")[step], stats.get(point, f"{dim}_max")[step]
        groups, chosen = None, None
        tq = recipe.tensors.get((module, role)) if recipe else None
        if tq is not None:
            chosen = tq.axis
            if tq.axis == dim and tq.group_map is not None:
                groups = tq.group_map[min(step, tq.group_map.shape[0] - 1)]
        t = stats.timesteps[step]
        title = f"{module} input, per {dim} (t={t}); {preset or 'DGQ'} chose: {chosen or 'n/a'}"
        path = ranges(lo, hi, groups, dim, title, figures_dir / f"ranges_{k}_{dim}.png")
        rows.append({"module": module, "dimension": dim, "outlier_ratio": ratio, "timestep": int(t),
                     "dgq_axis": chosen, "figure": path.name})
    return rows
