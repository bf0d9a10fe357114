"""report/deploy.py: `dgq run`'s deployment rows and section on the tiny model.

Two configurations lowered for onnxruntime-cpu: every row names its integer products, a real UNet call time against
the given fp32 and QDQ times, accumulators equal to the simulator's and no check violations; the section renders
those figures (ratios computed from them) and is absent when nothing was lowered."""
from __future__ import annotations

import json
import time

from dgq_compiler.config import preset
from dgq_compiler.report.deploy import deploy_section, lowered_rows
from tests.random_recipes import random_recipe

TIMESTEPS = (901, 501, 101)


def test_lowered_rows_and_section(tmp_path, tiny_export_dir, tiny_pipeline_dir):
    from dgq_compiler.sampling import onnx_predictor

    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipes = {name: random_recipe(config, preset(name), TIMESTEPS, seed=1, model_name="m")
               for name in ("dgq-w8a8-g8", "tfmq-w8a8")}
    timed, opened_in = [], set()

    def open_predictor(graph):
        import threading
        opened_in.add(threading.get_ident())
        timed.append(graph)
        return onnx_predictor(graph)

    def time_call(predictor):
        import numpy as np
        rng = np.random.default_rng(0)
        sample = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
        states = rng.standard_normal((2, 77, config["cross_attention_dim"])).astype(np.float32)
        start = time.perf_counter()
        predictor(sample, 501.0, states)
        return time.perf_counter() - start

    rows = lowered_rows(tiny_export_dir, tmp_path, recipes, open_predictor, time_call, 0.5, {"dgq-w8a8-g8": 0.25},
                        [501])
    import threading
    assert threading.get_ident() not in opened_in  # the timed session is opened beside the verifier's, in a thread
    assert [r["preset"] for r in rows] == list(recipes) and len(timed) == 2
    for r in rows:
        assert (tmp_path / r["graph"]).is_file() and (tmp_path / r["graph"]).parent.name == f"{r['preset']}@onnxruntime-cpu"
        assert r["products"] > 0 and r["accumulators"] >= r["products"] and r["seconds"]["unet_call"] > 0
        assert r["accumulators_exact"] and r["ops_verified"] > 0 and r["violations"] == 0
    assert rows[0]["accumulators"] > rows[0]["products"] and rows[1]["accumulators"] == rows[1]["products"]
    text = "\n".join(deploy_section({"deploy": rows}))
    assert "## Deployment" in text and "dgq-w8a8-g8" in text and "tfmq-w8a8" in text
    call = rows[0]["seconds"]["unet_call"]
    assert f"{call / 0.5:.2f}x" in text and f"{call / 0.25:.2f}x" in text
    assert deploy_section({}) == [] and deploy_section({"deploy": []}) == []


def test_a_real_size_run_says_why_it_lowered_nothing(monkeypatch):
    from types import SimpleNamespace

    import torch

    from dgq_compiler import run_child
    from dgq_compiler.report.deploy import REAL_SIZE_SKIPPED, deploy_section, skipped

    shared = SimpleNamespace(pipe=SimpleNamespace(unet=torch.nn.Linear(10, 10)))
    assert skipped(shared) is None
    monkeypatch.setattr(run_child, "CHILD_MIN_PARAMETERS", 100)  # the Linear's 110 parameters are "real size" now
    assert skipped(shared) == REAL_SIZE_SKIPPED
    lines = deploy_section({"deploy": [], "deploy_skipped": skipped(shared)})
    assert lines[0].startswith("## Deployment") and REAL_SIZE_SKIPPED in lines
    assert deploy_section({"deploy": [], "deploy_skipped": None}) == []
