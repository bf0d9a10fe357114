"""MixDQ on the embedded trained model: mixed precision vs uniform widths, ILP vs random allocation, the
BOS-aware text embedding, each configuration compiled, verified (simulator) and run in onnxruntime.

    python benchmarks/mixdq_judged.py --export EXPORT_DIR --stats STATS.json --work DIR [--prompts N] [--seeds K]

One run, held-out prompts (models/prompts/shapes_heldout.txt), the same seeds for every configuration:
- sensitivity (dgq sensitivity's measure) on 4 *calibration* prompts, per base quantizer; ILP allocation
  (dgq allocate) at an average of 5 weight bits with A8; random allocations no larger (seeds 0..R-1);
- per configuration: recipe -> compile -> dgq verify (generic-npu simulator: overflows, tolerance) ->
  onnxruntime (default session): mean noise-prediction SNR over every UNet call of the FP sampling runs
  (teacher-forced: the FP inputs), images of the quantized sampling runs scored by the shipped evaluator
  (alignment, with a 95% bootstrap interval over images, and the paired difference to uniform W4A8);
- cost model on each compiled graph at its own widths (`compiled` row): model size, under the budget of a
  uniform 5-bit model;
- text-embedding quantization error at every to_k/to_v input (held-out text states, every calibrated step):
  BOS-aware (<start> row FP) vs plain per-tensor, at 8 and 6 bits;
- the measured size-vs-quality front: torch fake-quant SNR of ILP and random allocations at several budgets.
Writes WORK/judged.json and WORK/front.png, prints the tables.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models.trained import SHAPES_GUIDANCE

BUDGET = 5.0
FRONT_BITS = (4.0, 4.5, 5.0, 6.0, 7.0, 8.0)


def heldout(n):
    from models.trained import shapes_prompts_file
    from dgq_compiler.calibrate.run import read_prompts

    return read_prompts(shapes_prompts_file("shapes_heldout.txt"))[:n]


def fp_reference(pipe, prompts, seeds, steps, guidance):
    from dgq_compiler.report.analysis import UNetCall
    from dgq_compiler.sampling import decode, sample, torch_predictor

    calls = []
    latents = sample(pipe, torch_predictor(pipe.unet), prompts, seeds, steps, guidance,
                     on_step=lambda i, t, x, s, e: calls.append(UNetCall(i, t, x, s, e)))
    return calls, decode(pipe, latents)


def mean_snr(predict, calls):
    from dgq_compiler.report.analysis import snr_db

    return float(np.mean([snr_db(c.eps, predict(c.sample, c.timestep, c.states)) for c in calls]))


def per_image_alignment(evaluator, images, prompts):
    return np.array([evaluator.alignment(images[i:i + 1], [p]).score for i, p in enumerate(prompts)])


def interval(values, seed=0, draws=2000):
    rng = np.random.default_rng(seed)
    means = [float(np.mean(rng.choice(values, len(values)))) for _ in range(draws)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def text_embedding_error(pipe, prompts, recipes):
    """Relative squared error of the quantized text embedding at every to_k/to_v input, every step."""
    import torch

    from dgq_compiler.fakequant import quantize_uniform
    from dgq_compiler.recipe import reads_text_embedding
    from dgq_compiler.sampling import encode_prompts

    cond, uncond = encode_prompts(pipe, prompts)
    x = torch.from_numpy(np.concatenate([uncond, cond]))
    out = {}
    for label, recipe in recipes.items():
        num = den = 0.0
        for (module, role), tq in recipe.tensors.items():
            if not reads_text_embedding(module, role):
                continue
            for step in range(recipe.T):
                if tq.axis == "tensor":
                    s, z = torch.tensor(tq.scale[step, 0]), torch.tensor(float(tq.zero_point[step, 0]))
                else:
                    gm = tq.group_map[0 if tq.shared_map else step]
                    s = torch.from_numpy(tq.scale[step][gm]).reshape(1, -1, 1)
                    z = torch.from_numpy(tq.zero_point[step][gm].astype(np.float32)).reshape(1, -1, 1)
                if tq.exclude_bos:
                    xq = torch.cat([x[:, :1], quantize_uniform(x[:, 1:], s, z, tq.bits)], dim=1)
                else:
                    xq = quantize_uniform(x, s, z, tq.bits)
                num += float(((xq - x) ** 2).sum())
                den += float((x ** 2).sum())
        out[label] = {"relative_error": num / den, "sqnr_db": float(10 * np.log10(den / num))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts (one image each)")
    ap.add_argument("--random", type=int, default=3, help="random allocations (seeds 0..R-1)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--verify-timesteps", type=int, default=2)
    ap.add_argument("--front-bits", type=lambda t: [float(b) for b in t.split(",")], default=list(FRONT_BITS),
                    help="budgets of the measured front, comma-separated average weight bits")
    ap.add_argument("--front-random", type=int, default=2, help="random allocations per budget on the front")
    ap.add_argument("--torch-only", type=lambda t: t.split(","), default=[],
                    help="configurations measured by torch fake-quant SNR only (no compile, verify, images)")
    ap.add_argument("--no-w8", action="store_true", help="leave out the W8A8 references (mixdq-w8a8, tfmq-w8a8)")
    args = ap.parse_args()

    import torch

    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, use_pndm
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.mixdq.allocate import Budget, allocate, random_allocation
    from dgq_compiler.mixdq.compose import compiled_cost_row, sensitivity_calls
    from dgq_compiler.mixdq.figures import front_figure
    from dgq_compiler.mixdq.sensitivity import SensitivityTable, measure
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.sampling import decode, onnx_predictor, sample, torch_predictor
    from dgq_compiler.verify import verify_graph
    from models.evaluator import load_evaluator
    from models.trained import shapes_prompts_file, trained_pipeline_dir
    from simulator.cost import cost_row
    from simulator.cost.macs_from_graph import inventory_from_graph

    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats = CalibrationStats.load(args.stats)
    pipe = open_pipeline(str(trained_pipeline_dir()), device="cpu")
    use_pndm(pipe)
    unet = pipe.unet.float().eval()
    prompts = heldout(args.prompts)
    seeds = list(range(len(prompts)))
    calls, fp_images = fp_reference(pipe, prompts, seeds, args.steps, SHAPES_GUIDANCE)
    evaluator = load_evaluator()
    fp_align = per_image_alignment(evaluator, fp_images, prompts)
    cal_prompts = read_prompts(shapes_prompts_file("shapes_calibration.txt"))
    sens_calls = sensitivity_calls(pipe, cal_prompts, args.steps, SHAPES_GUIDANCE, seed=0)
    print(f"FP reference: {len(calls)} UNet calls, alignment {fp_align.mean():.3f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)

    fp_inventory = inventory_from_graph(Path(args.export) / "unet.onnx", batch=2, resolution=stats.resolution[0] * 8)
    uniform5 = cost_row(fp_inventory, "W8A8", convention="exact", steps=stats.T)  # for the budget size below
    budget_bytes = -(-fp_inventory.quantized_weight_elements * int(BUDGET) // 8) + uniform5.fp_param_bytes

    configs, tables, allocations = {}, {}, {}
    for base_name, mixed_name in (("mixdq-w4a8", "mixdq-w5a8"), ("dgq-w4a8-g8", "dgq-mixdq-w5a8-g8")):
        mixed = preset(mixed_name)
        t0 = time.perf_counter()
        table_path = work / f"sensitivity-{mixed_name}.json"  # reused by a rerun into the same folder
        if table_path.is_file():
            table = SensitivityTable.load(table_path)
        elif tables:  # A8 budgets measure weights only, with activations FP: the same for every base quantizer
            table = next(iter(tables.values()))
        else:
            table = measure(pipe, stats, mixed, sens_calls, progress=True, prompts=4)
            table.save(table_path)
        tables[mixed_name] = table
        best = allocate(table, Budget(weight_bits=BUDGET))
        allocations[mixed_name] = best
        print(f"sensitivity {mixed_name}: {len(table.layers)} layers in {time.perf_counter() - t0:.0f} s; ILP "
              f"W{best.achieved['weight_bits']:.3f}", flush=True)
        configs[base_name] = (preset(base_name), None)
        configs[mixed_name] = (mixed, best.widths())
        for seed in range(args.random if base_name.startswith("mixdq") else 0):
            rand = random_allocation(table, best, seed=seed)
            configs[f"{mixed_name}-random{seed}"] = (mixed, rand.widths())
            allocations[f"{mixed_name}-random{seed}"] = rand
    if not args.no_w8:
        configs["mixdq-w8a8"] = (preset("mixdq-w8a8"), None)
        configs["tfmq-w8a8"] = (preset("tfmq-w8a8"), None)

    results = {}
    (work / "results").mkdir(exist_ok=True)
    (work / "graphs").mkdir(exist_ok=True)
    for label, (config, widths) in configs.items():
        t0 = time.perf_counter()
        done = work / "results" / f"{label}.json"  # a rerun into the same folder skips finished configurations
        if done.is_file():
            results[label] = json.loads(done.read_text())
            continue
        recipe, _ = quantize_stats(stats, config, unet, widths=widths)
        with apply_recipe(unet, recipe):
            torch_snr = mean_snr(torch_predictor(unet), calls)
        if label in args.torch_only:  # no compile / verify / images: the torch fake-quant SNR alone
            results[label] = {"config": config.name, "noise_snr_db_torch_fakequant": torch_snr, "torch_only": True,
                              "allocation": allocations[label].achieved if label in allocations else None}
            print(f"{label}: torch fake-quant SNR {torch_snr:.2f} dB (not compiled in this run)", flush=True)
            continue
        graph_dir = work / "graphs" / label
        compile_graph(Path(args.export), recipe, graph_dir, CompileOptions(overwrite=True), progress=lambda *_: None)
        graph = graph_dir / "unet.onnx"
        verify = verify_graph(graph, target="generic-npu", latent_size=stats.resolution[0],
                              timesteps=[float(stats.timesteps[i]) for i in
                                         np.linspace(0, stats.T - 1, args.verify_timesteps).round().astype(int)])
        predictor = onnx_predictor(graph)
        ort_snr = mean_snr(predictor, calls)
        images = decode(pipe, sample(pipe, predictor, prompts, seeds, args.steps, SHAPES_GUIDANCE))
        align = per_image_alignment(evaluator, images, prompts)
        row = compiled_cost_row(graph, config, fp_inventory, stats.T) or cost_row(
            fp_inventory, f"W{config.weight_bits}A{config.act_bits}", groups=config.groups, steps=stats.T,
            convention="exact")
        results[label] = {
            "config": config.name, "noise_snr_db_onnxruntime": ort_snr, "noise_snr_db_torch_fakequant": torch_snr,
            "alignment": float(align.mean()), "alignment_ci95": interval(align), "_align": align.tolist(),
            "verify_passed": verify.passed, "overflows": int(sum(o.overflows for o in verify.overflows)),
            "worst_mismatch_rate": max((t.mismatch_rate for t in verify.tensors), default=0.0),
            "model_size_bytes": row.model_size_bytes, "quantized_weight_bytes": row.quantized_weight_bytes,
            "tbops_exact": row.tbops, "cost_row": row.name,
            "allocation": allocations[label].achieved if label in allocations else None,
            "allocation_objective": allocations[label].objective if label in allocations else None,
            "seconds": round(time.perf_counter() - t0, 1)}
        done.write_text(json.dumps(results[label], indent=1, sort_keys=True) + "\n")
        print(f"{label}: SNR {ort_snr:.2f} dB (torch {torch_snr:.2f}), alignment {align.mean():.3f}, verify "
              f"{'pass' if verify.passed else 'FAIL'} ({results[label]['overflows']} overflows), size "
              f"{row.model_size_bytes / 1e6:.3f} MB ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = np.array(results["mixdq-w4a8"]["_align"])
    for label, r in results.items():
        if "_align" not in r:
            continue
        diff = np.array(r.pop("_align")) - base
        r["alignment_minus_mixdq_w4a8_ci95"] = interval(diff)

    fast = dict(weight_method="minmax")  # only the activation quantizers matter here
    text = text_embedding_error(pipe, prompts, {
        "plain per-tensor (tfmq-w8a8)": quantize_stats(stats, preset("tfmq-w8a8").replace(**fast), unet)[0],
        "BOS-aware (mixdq-w8a8)": quantize_stats(stats, preset("mixdq-w8a8").replace(**fast), unet)[0],
        "plain per-tensor A6 (tfmq-w8a6)": quantize_stats(stats, preset("tfmq-w8a6").replace(**fast), unet)[0],
        "BOS-aware A6": quantize_stats(stats, preset("mixdq-w8a8").replace(act_bits=6, **fast), unet)[0]})

    front = {"ILP (mixdq-wXa8)": [], "random, no larger": []}
    table = tables["mixdq-w5a8"]
    # per-layer weights are quantized independently: a W4 and a W8 recipe (same A8 inputs) assemble any allocation,
    # exactly what quantize_stats(widths=...) gives, without re-running the weight search per allocation
    uniform = {w: quantize_stats(stats, preset(f"mixdq-w{w}a8"), unet)[0] for w in (4, 8)}

    def assembled(widths):
        from dataclasses import replace as _replace

        tensors = dict(uniform[8].tensors)
        for module, (w, _a) in widths.items():
            tensors[(module, "weight")] = uniform[w].tensors[(module, "weight")]
        return _replace(uniform[8], tensors=tensors)

    for bits in args.front_bits:
        best = allocate(table, Budget(weight_bits=bits))
        for label, alloc in [("ILP (mixdq-wXa8)", best)] + [("random, no larger", random_allocation(table, best, s))
                                                              for s in range(args.front_random)]:
            with apply_recipe(unet, assembled(alloc.widths())):
                front[label].append((alloc.achieved["weight_bits"], mean_snr(torch_predictor(unet), calls)))
    front_figure(front, work / "front.png", "mean noise-prediction SNR (dB), held-out prompts",
                 "MixDQ size vs quality: ILP and random allocations (A8, torch fake-quant)")

    doc = {"prompts": len(prompts), "calls": len(calls), "fp_alignment": float(fp_align.mean()),
           "fp_alignment_ci95": interval(fp_align), "budget_weight_bits": BUDGET,
           "budget_model_size_bytes": budget_bytes, "configs": results, "text_embedding": text, "front": front,
           "seconds": round(time.perf_counter() - started, 1)}
    (work / "judged.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"\nbudget: uniform {BUDGET:g}-bit weights = {budget_bytes / 1e6:.4f} MB")
    print(f"{'config':34s} {'SNR ORT':>8s} {'SNR torch':>9s} {'align':>6s} {'align 95% CI':>15s} {'size MB':>8s} "
          f"{'W avg':>6s} verify")
    for label, r in results.items():
        w = r["allocation"]["weight_bits"] if r["allocation"] else float("nan")
        if r.get("torch_only"):
            print(f"{label:34s} {'-':>8s} {r['noise_snr_db_torch_fakequant']:9.2f}  (torch fake-quant only)")
            continue
        print(f"{label:34s} {r['noise_snr_db_onnxruntime']:8.2f} {r['noise_snr_db_torch_fakequant']:9.2f} "
              f"{r['alignment']:6.3f} [{r['alignment_ci95'][0]:.3f}, {r['alignment_ci95'][1]:.3f}] "
              f"{r['model_size_bytes'] / 1e6:8.4f} {w:6.3f} {'pass' if r['verify_passed'] else 'FAIL'} "
              f"{r['overflows']} overflows")
    for label, r in text.items():
        print(f"text embedding {label:36s} relative error {r['relative_error']:.3e}  SQNR {r['sqnr_db']:.2f} dB")
    print(f"total {doc['seconds']:.0f} s -> {work / 'judged.json'}, {work / 'front.png'}")


if __name__ == "__main__":
    main()
