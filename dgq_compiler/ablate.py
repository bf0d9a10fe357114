"""`dgq ablate`: the paper's Table 3 on this model, into one output folder a user can keep.

Two tables, at each activation width (8 and 6 bits by default, 8-bit weights):
- grouping: G = 1, 2, 4, 8, 16 with the grouping dimension forced to channels, forced to pixels, or chosen by
  the metric V_d (DGQ); attention as in DGQ (log2, dynamic, <start> separated);
- attention: uniform vs log2 quantizer, <start> separated or not, dynamic vs static (calibrated) log2 scale;
  activations as DGQ at G = 8.
Export and calibration run once (`run.export_and_calibrate`); then per configuration quantize -> compile (the
QDQ graph) -> images from that graph in a default onnxruntime session, scored by the quality stage like `dgq run`'s
table. A configuration that appears in both tables is built once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable
from dgq_compiler.run import RunOptions

TABLES = ("grouping", "attention")
DIMENSIONS = ("channel", "pixel", "auto")     # auto = chosen by the metric (DGQ's dimension selection)
ATTENTION_VARIANTS = (("uniform", False, True), ("uniform", True, True), ("log2", False, True),
                      ("log2", True, True), ("log2", False, False), ("log2", True, False))  # quantizer, bos, dynamic


@dataclass(frozen=True)
class AblateOptions:
    run: RunOptions = field(default_factory=RunOptions)   # model, calibration, sampling, seed, images
    weight_bits: int = 8
    act_bits: tuple[int, ...] = (8, 6)
    groups: tuple[int, ...] = (1, 2, 4, 8, 16)
    attention_groups: int = 8
    sets: tuple[str, ...] = ("heldout", "rephrased")
    tables: tuple[str, ...] = TABLES

    def __post_init__(self):
        from dgq_compiler.config import GROUP_COUNTS

        if not self.act_bits or any(not 4 <= b <= 8 for b in self.act_bits):
            raise DgqError(f"--act-bits must be widths in 4..8, got {', '.join(map(str, self.act_bits)) or 'none'}")
        if not self.groups or any(g not in GROUP_COUNTS for g in self.groups):
            raise DgqError(f"--groups must be some of {', '.join(map(str, GROUP_COUNTS))}, "
                           f"got {', '.join(map(str, self.groups)) or 'none'}")
        if self.attention_groups not in GROUP_COUNTS:
            raise DgqError(f"--attention-groups must be one of {', '.join(map(str, GROUP_COUNTS))}, "
                           f"got {self.attention_groups}")
        if not self.tables or any(t not in TABLES for t in self.tables):
            raise DgqError(f"--tables must be some of {', '.join(TABLES)}, got {', '.join(self.tables) or 'none'}")
        if self.run.images == 0:  # RunOptions refuses every other count below 2
            raise DgqError("--images must be at least 2 for the ablation tables, got 0")


@dataclass(frozen=True)
class Ablation:
    table: str        # grouping | attention
    name: str         # file-safe and readable: w8a6-g4-channel, w8a8-g8-log2-static-bos
    config: object    # QuantConfig
    factors: dict     # what this row varies, for the tables and plots


def ablations(options: AblateOptions) -> list[Ablation]:
    """Every row of both tables, in table order."""
    from dgq_compiler.config import QuantConfig

    weights = "minmax" if options.weight_bits == 8 else "mse"
    rows = []
    for a in options.act_bits:
        base = QuantConfig("dgq", options.weight_bits, a, 1, weight_method=weights)
        for g in options.groups if "grouping" in options.tables else ():
            for dim in (("auto",) if g == 1 else DIMENSIONS):
                rows.append(Ablation("grouping", f"w{options.weight_bits}a{a}-g{g}" + (f"-{dim}" if g > 1 else ""),
                                     base.replace(groups=g, dimension=dim),
                                     {"act_bits": a, "groups": g, "dimension": dim if g > 1 else "-"}))
        for quantizer, bos, dynamic in ATTENTION_VARIANTS if "attention" in options.tables else ():
            name = (f"w{options.weight_bits}a{a}-g{options.attention_groups}-{quantizer}"
                    f"{'' if dynamic or quantizer == 'uniform' else '-static'}{'-bos' if bos else ''}")
            rows.append(Ablation("attention", name,
                                 base.replace(groups=options.attention_groups, attn_quantizer=quantizer,
                                              exclude_bos=bos, log_dynamic=dynamic),
                                 {"act_bits": a, "quantizer": quantizer, "exclude_bos": bos,
                                  "dynamic": dynamic if quantizer == "log2" else None}))
    return rows


def ablate(options: AblateOptions, output: str | Path, overwrite: bool = False, log=print) -> dict:
    """Run the suite into `output` (report.md, summary.json, figures/, recipes/, graphs/); returns the summary."""
    from dgq_compiler.run import resolve_model

    output = check_writable(output, overwrite=overwrite, kind="folder")
    source, label = resolve_model(options.run.model)
    from dgq_compiler.timing import JobClock

    clock = JobClock()
    with atomic_path(output, directory=True) as out:
        summary = _ablate_into(options, source, label, out, log)
        clock.stamp(summary)
        from dgq_compiler.report.ablation import write_ablation_report

        write_ablation_report(summary, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    return summary


def _ablate_into(options: AblateOptions, source: str, label: str, out: Path, log) -> dict:
    from dgq_compiler.quality.stage import QualityOptions, QualityStage, unsupported
    from dgq_compiler.quality.table2 import FP_LABEL
    from dgq_compiler.run import export_and_calibrate, open_model, run_stage
    from dgq_compiler.run_config import quantize_and_compile
    from dgq_compiler.timing import StageTimer

    timer = StageTimer(log, digits=1, numbered=True)
    run_options = options.run
    pipe, run_options = open_model(run_options, source, label)
    quality_options = QualityOptions(images=run_options.images, steps=run_options.steps,
                                     guidance=run_options.guidance, seed=run_options.seed,
                                     latent_size=run_options.latent_size, sets=options.sets)
    reason = unsupported(pipe, quality_options)
    if reason:
        raise DgqError(f"cannot run the ablation suite on {label}: {reason}")
    (out / "figures").mkdir()
    export, stats, prompts = export_and_calibrate(timer, pipe, run_options, source, label, out)
    with run_stage(timer, "quality: evaluator check, references, FP images"):
        stage = QualityStage(pipe, quality_options)
        stage.score_graph(FP_LABEL, out / "export" / "unet.onnx", fp=True)

    rows = ablations(options)
    built: dict = {}   # config -> (name, seconds): a configuration in both tables is built and scored once
    for row in rows:
        if row.config in built:
            continue
        with run_stage(timer, f"{row.name}: quantize, compile, images"):
            own = StageTimer(digits=1)
            built_row = quantize_and_compile(row.name, row.config, stats, pipe, out / "export", out, own,
                                             options=run_options)
            with own.stage("images"):  # from the QDQ graph: faster than lowering + the channel-grouped integer graph
                stage.score_graph(row.name, built_row.graph)
        built[row.config] = (row.name, own.seconds)

    quality = stage.to_json()
    entries = []
    for row in rows:
        name, seconds = built[row.config]
        entries.append({"table": row.table, "name": name, "factors": row.factors, "config": row.config.to_dict(),
                        "seconds": seconds, "scores": quality["configs"][name]})
    return {"model": label, "source": source, "options": {**asdict(options), "run": asdict(run_options)},
            "calibration": {"prompts": len(prompts), "timesteps": list(stats.timesteps)},
            "export": {"parameters": export.parameters}, "quality": quality, "rows": entries,
            "seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds}
