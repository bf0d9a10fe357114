"""MixDQ with FP as an allocation width, on the embedded trained model: the same size budget with and without FP.

    python benchmarks/mixdq_fp.py --export EXPORT_DIR --stats STATS.json --table SENSITIVITY.json --work DIR

For mixdq-w5a8 and mixdq-w5a8-fp (an average of 5 weight bits per parameter, A8): the ILP allocation from the
sensitivity table (`dgq sensitivity`), the recipe, torch fake-quant and onnxruntime mean noise-prediction SNR
against FP over every UNet call of the FP sampling runs of held-out prompts (teacher-forced: the FP inputs), `dgq
verify` (generic-npu simulator) and `dgq check`, and the cost model on each compiled graph at its own widths (model
size, exact BOPs; FP layers at 32 bits) against the budget of a uniform 5-bit model. Prints a table, writes
WORK/mixdq_fp.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models.trained import SHAPES_GUIDANCE

from mixdq_judged import fp_reference, heldout, mean_snr  # benchmarks/ is the script's folder: on the path

BUDGET = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--table", required=True, help="sensitivity table from `dgq sensitivity` (mixdq-w5a8)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--prompts", type=int, default=8, help="held-out prompts for the SNR")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--presets", default="mixdq-w5a8,mixdq-w5a8-fp")
    args = ap.parse_args()

    import torch

    from dgq_compiler.calibrate.run import open_pipeline, use_pndm
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.mixdq.allocate import Budget, allocate, is_fp
    from dgq_compiler.mixdq.compose import compiled_cost_row
    from dgq_compiler.mixdq.sensitivity import SensitivityTable
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.sampling import onnx_predictor, torch_predictor
    from dgq_compiler.verify import verify_graph
    from models.trained import trained_pipeline_dir
    from simulator.check import check_graph
    from simulator.cost import cost_row
    from simulator.cost.macs_from_graph import inventory_from_graph

    torch.manual_seed(0)
    work = Path(args.work)
    (work / "graphs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats = CalibrationStats.load(args.stats)
    table = SensitivityTable.load(args.table)
    pipe = open_pipeline(str(trained_pipeline_dir()), device="cpu")
    use_pndm(pipe)
    unet = pipe.unet.float().eval()
    prompts = heldout(args.prompts)
    calls, _images = fp_reference(pipe, prompts, list(range(len(prompts))), args.steps, SHAPES_GUIDANCE)
    print(f"FP reference: {len(calls)} UNet calls of {len(prompts)} prompts ({time.perf_counter() - started:.0f} s)",
          flush=True)
    fp_inventory = inventory_from_graph(Path(args.export) / "unet.onnx", batch=2, resolution=stats.resolution[0] * 8)
    uniform = cost_row(fp_inventory, "W8A8", convention="exact", steps=stats.T)
    budget_bytes = -(-fp_inventory.quantized_weight_elements * int(BUDGET) // 8) + uniform.fp_param_bytes

    results = {}
    for name in args.presets.split(","):
        t0 = time.perf_counter()
        config = preset(name)
        allocation = allocate(table, Budget.of_config(config), fixed_weight=config.weight_bits)
        allocation.save(work / f"allocation-{name}.json", overwrite=True)
        recipe, _ = quantize_stats(stats, config, unet, widths=allocation.widths())
        with apply_recipe(unet, recipe):
            torch_snr = mean_snr(torch_predictor(unet), calls)
        graph_dir = work / "graphs" / name
        compile_graph(Path(args.export), recipe, graph_dir, CompileOptions(overwrite=True), progress=lambda *_: None)
        graph = graph_dir / "unet.onnx"
        ort_snr = mean_snr(onnx_predictor(graph), calls)
        verify = verify_graph(graph, target="generic-npu", latent_size=stats.resolution[0],
                              timesteps=[float(stats.timesteps[0]), float(stats.timesteps[-1])])
        check = check_graph(str(graph), "generic-npu", latent_size=stats.resolution[0])
        row = compiled_cost_row(graph, config, fp_inventory, stats.T)
        fp_layers = sorted(m for m, w in allocation.layers.items() if is_fp(w))
        results[name] = {
            "noise_snr_db_onnxruntime": ort_snr, "noise_snr_db_torch_fakequant": torch_snr,
            "allocation": allocation.achieved, "objective": allocation.objective, "fp_layers": fp_layers,
            "fp_layer_params": sum(table.by_module()[m].params for m in fp_layers),
            "verify_passed": verify.passed, "overflows": int(sum(o.overflows for o in verify.overflows)),
            "check_violations": len(check.violations), "model_size_bytes": row.model_size_bytes,
            "quantized_weight_bytes": row.quantized_weight_bytes, "fp_param_bytes": row.fp_param_bytes,
            "tbops_exact": row.tbops, "bops_full_precision": row.bops_parts["full_precision"],
            "cost_row": row.name, "budget_bytes": budget_bytes, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name}: SNR {ort_snr:.2f} dB (torch {torch_snr:.2f}), {len(fp_layers)} FP layers, size "
              f"{row.model_size_bytes / 1e6:.4f} MB (budget {budget_bytes / 1e6:.4f}), verify "
              f"{'pass' if verify.passed else 'FAIL'}, check {len(check.violations)} violations "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"\n{'config':<16} {'SNR ORT':>8} {'SNR torch':>9} {'W avg':>6} {'FP layers':>9} {'size MB':>8} "
          f"{'budget MB':>9} {'TBOPs':>7} verify/check")
    for name, r in results.items():
        print(f"{name:<16} {r['noise_snr_db_onnxruntime']:8.2f} {r['noise_snr_db_torch_fakequant']:9.2f} "
              f"{r['allocation']['weight_bits']:6.3f} {len(r['fp_layers']):9d} {r['model_size_bytes'] / 1e6:8.4f} "
              f"{r['budget_bytes'] / 1e6:9.4f} {r['tbops_exact']:7.4f} "
              f"{'pass' if r['verify_passed'] else 'FAIL'} {r['overflows']} overflows / {r['check_violations']} violations")
    out = work / "mixdq_fp.json"
    out.write_text(json.dumps({"prompts": len(prompts), "calls": len(calls), "budget_weight_bits": BUDGET,
                               "results": results, "seconds": round(time.perf_counter() - started, 1)},
                              indent=1, sort_keys=True) + "\n")
    print(f"total {time.perf_counter() - started:.0f} s -> {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
