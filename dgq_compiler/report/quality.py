"""The report's opening section: image quality per configuration in the paper's Table 2 layout, with intervals,
which rows separate from FP, alignment per attribute, and whether the evaluator still reads rendered scenes."""
from __future__ import annotations

from dgq_compiler.report.markdown import _table as table

SET_TITLES = {"heldout": "held-out", "rephrased": "rephrased"}
METRIC_TITLES = {"frechet": "Fréchet ↓", "alignment": "alignment ↑", "is_like": "IS-like ↑"}


def images_phrase(sets: dict) -> str:
    """'32 images per configuration and prompt set', or per set when the counts differ (the summary's `sets`)."""
    counts = [(SET_TITLES.get(n, n), s["images"]) for n, s in sets.items()]
    if len({c for _, c in counts}) == 1:
        return f"{counts[0][1]} images per configuration and prompt set"
    return ", ".join(f"{c} images per configuration on the {n} set" if k == 0 else f"{c} on the {n} set"
                     for k, (n, c) in enumerate(counts))


def interval_text(m: dict, digits: int) -> str:
    return f"{m['value']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def metric_digits(metric: str) -> int:
    return {"frechet": 0, "alignment": 3, "is_like": 2}[metric]


def metric_cell(scores: dict, metric: str) -> str:
    """value [low, high], bold when the interval separates from FP's."""
    text = interval_text(scores[metric], metric_digits(metric))
    separates = scores.get("versus_fp", {}).get(metric, {}).get("separates")
    return f"**{text}**" if separates else text


def table2_rows(quality: dict, metrics=("frechet", "alignment", "is_like")) -> tuple[list[str], list[list]]:
    """(headers, rows): a real-scene row, then FP and every configuration."""
    sets = list(quality["sets"])
    headers = ["method", "configuration", "bits W/A", "G"]
    headers += [f"{METRIC_TITLES[m]} ({SET_TITLES.get(s, s)})" for s in sets for m in metrics]
    headers += ["TBOPs (paper)", "size MB"]
    rows = [["real rendered scenes", "-", "-", "-", *[interval_text(quality["real"][s][m], metric_digits(m))
                                                      for s in sets for m in metrics], "-", "-"]]
    for row in quality["table"]:
        scores = quality["configs"][row["label"]]
        rows.append([row["method"], row["label"], row["bits"], row["groups"] or "-",
                     *[metric_cell(scores[s], m) for s in sets for m in metrics],
                     *_cost_cells(row)])
    return headers, rows


def _cost_cells(row: dict) -> list[str]:
    """TBOPs and size; mixed-precision rows have per-layer widths: their exact cost is in the summary table."""
    if row["tbops_paper"] != row["tbops_paper"]:  # NaN
        return ["per layer (see Summary)", "per layer (see Summary)"]
    return [f"{row['tbops_paper']:.4g}", f"{row['model_size_bytes'] / 1e6:.3f}"]


def separation_rows(quality: dict) -> tuple[list[str], list[list]]:
    """Per configuration and set: which metrics' intervals separate from FP's, and the paired differences."""
    sets = list(quality["sets"])
    headers = ["configuration"] + [f"{SET_TITLES.get(s, s)}: {word}" for s in sets
                                   for word in ("separates from FP", "paired Δ alignment", "paired Δ Fréchet")]
    rows = []
    for row in quality["table"][1:]:
        cells = [row["label"]]
        for s in sets:
            versus = quality["configs"][row["label"]][s]["versus_fp"]
            separated = [METRIC_TITLES[m].split()[0] for m in ("frechet", "alignment", "is_like")
                         if versus[m]["separates"]]
            cells += [", ".join(separated) or "none",
                      _delta(versus["alignment"], 3), _delta(versus["frechet"], 0)]
        rows.append(cells)
    return headers, rows


def _delta(versus: dict, digits: int) -> str:
    text = interval_text(versus["paired_delta"], digits)
    return text + (" ≠0" if versus["paired_differs"] else "")


def attribute_rows(quality: dict, name: str) -> tuple[list[str], list[list]]:
    labels = ["real rendered scenes"] + [row["label"] for row in quality["table"]]
    scores = [quality["real"][name]] + [quality["configs"][row["label"]][name] for row in quality["table"]]
    attributes = list(scores[0]["per_attribute"])
    rows = [[label, *[f"{s['per_attribute'][a]['value']:.2f}" if a in s["per_attribute"] else "-"
                      for a in attributes]] for label, s in zip(labels, scores)]
    return ["configuration", *attributes], rows


def graphs_used(quality: dict) -> str:
    """Which graphs the configurations' images came from (rows of older summaries name none)."""
    graphs = [row.get("graph", "") for row in quality["table"][1:]]
    lowered = sum("@onnxruntime-cpu/" in g for g in graphs)
    if not lowered:
        return ""
    which = "every configuration" if lowered == len(graphs) else f"{lowered} of {len(graphs)} configurations"
    others = "" if lowered == len(graphs) else "; the others from their QDQ graphs"
    return (f" ({which} from its integer-lowered onnxruntime-cpu graph, whose int32 accumulators equal the "
            f"simulator's{others})")


def quality_section(summary: dict) -> list[str]:
    quality = summary.get("quality") or {}
    if "skipped" in quality or not quality:
        return ["## Image quality", "", f"No quality table: {quality.get('skipped', 'the stage did not run')}.", ""]
    opts = quality["options"]
    sets = quality["sets"]
    check = quality["evaluator_check"]
    scheduler = summary.get("options", {}).get("scheduler", "pndm").upper()
    headers, rows = table2_rows(quality)
    parts = ["## Image quality (the paper's Table 2 layout)", "",
             f"{images_phrase(sets)}, the same prompts and seeds for every row, "
             f"{opts['steps']} {scheduler} steps, guidance {opts['guidance']}; every row (FP too) from its ONNX graph "
             f"in a default onnxruntime session{graphs_used(quality)}. Prompt sets: "
             + "; ".join(f"**{SET_TITLES.get(n, n)}** ({s['prompts']} prompts: {s['description']})"
                         for n, s in sets.items()) + ". 95% intervals in brackets; **bold**: the interval does "
             "not overlap FP's.", "",
             table(headers, rows), "",
             "Fréchet: distance between the shapes evaluator's features of the images and of real rendered scenes "
             f"of the same prompts ({opts['reference_per_prompt']} per prompt; FID analogue). Alignment: share of "
             "the attributes each prompt asks for that the evaluator recognises in its image (CLIP-score "
             "analogue). IS-like: geometric mean over the evaluator's attribute heads of exp E KL(p(y|x) ‖ p(y)). "
             "Intervals: alignment by percentile bootstrap "
             f"({opts['resamples']} resamples, seed {opts['seed']}); Fréchet and IS-like by the jackknife (a "
             "bootstrap resample repeats images, which biases these whole-set statistics upward). The real-scene "
             "row renders one scene per prompt: the ceiling of alignment and the floor of the Fréchet distance "
             "at this many images. TBOPs: Σ MACs × b_w × b_a of one UNet forward at batch 2; size: weights at "
             "b_w bits, FP parameters at 32 bits.", ""]
    headers, rows = separation_rows(quality)
    parts += ["**Against FP** (paired: image i of every row answers the same prompt and seed; Δ = row − FP, "
              "≠0 where the paired interval excludes zero):", "", table(headers, rows), ""]
    for name in sets:
        headers, rows = attribute_rows(quality, name)
        parts += [f"**Alignment per attribute, {SET_TITLES.get(name, name)} set:**", "", table(headers, rows), ""]
    accuracy = ", ".join(f"{k} {v:.2f}" for k, v in check["accuracy"].items())
    parts += [f"Evaluator check: on {check['scenes']} freshly rendered scenes of these prompts its accuracy per "
              f"attribute is {accuracy} ({'all' if check['passed'] else 'NOT all'} ≥ {check['threshold']}"
              f"{'' if check['passed'] else ': the scores above are not to be trusted'}).", ""]
    if quality.get("figure"):
        parts += [f"![quality images](figures/{quality['figure']})", ""]
    return parts


def terminal_rows(quality: dict) -> tuple[list[str], list[list]]:
    """The table for the terminal: point values, * where the interval separates from FP's."""
    sets = list(quality["sets"])
    headers = ["configuration", "bits", "G"] + [f"{METRIC_TITLES[m].split()[0]} {SET_TITLES.get(s, s)}"
                                                for s in sets for m in ("frechet", "alignment")]
    rows = []
    for row in quality["table"]:
        scores = quality["configs"][row["label"]]
        cells = [row["label"], row["bits"], row["groups"] or "-"]
        for s in sets:
            for m in ("frechet", "alignment"):
                mark = "*" if scores[s].get("versus_fp", {}).get(m, {}).get("separates") else ""
                cells.append(f"{scores[s][m]['value']:.{metric_digits(m)}f}{mark}")
        rows.append(cells)
    return headers, rows
