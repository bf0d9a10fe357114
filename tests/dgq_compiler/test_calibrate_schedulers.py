"""Few-step schedules: any diffusers scheduler at any step count calibrates, compiles and verifies, and every
timestep the sampler feeds the compiled graph finds the step it was calibrated at."""
from __future__ import annotations

import pytest

from dgq_compiler.calibrate.run import SCHEDULERS, calibrate, open_pipeline, use_scheduler
from dgq_compiler.calibrate.schedule import FirstSeenSchedule
from dgq_compiler.errors import DgqError

PROMPTS = ["a red circle", "two blue squares"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return open_pipeline("tiny", device="cpu")


@pytest.mark.parametrize("name, steps", [("euler", 4), ("ddim", 4), ("euler", 1)])
def test_few_step_schedule_is_the_samplers_own_timesteps(pipe, name, steps):
    stats = calibrate(pipe, PROMPTS[:1], model_name="tiny", steps=steps, seed=3, scheduler=name)
    scheduler = pipe.scheduler
    assert type(scheduler).__name__ == SCHEDULERS[name][0]
    scheduler.set_timesteps(steps)
    expected = [int(round(float(t))) for t in scheduler.timesteps]
    assert list(stats.timesteps) == expected and stats.T == steps
    assert stats.sampling["scheduler"] == SCHEDULERS[name][0] and stats.sampling["steps"] == steps
    use_scheduler(pipe, "pndm")  # back to the default: the next calibration records PNDM again
    assert stats.sampling != calibrate(pipe, PROMPTS[:1], model_name="tiny", steps=steps, seed=3).sampling


def test_fractional_timesteps_round_to_their_own_steps_and_the_recipe_maps_them_back():
    from dgq_compiler.config import preset
    from dgq_compiler.recipe import Recipe

    schedule = FirstSeenSchedule()
    fed = [999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0]  # Euler 'linspace' spacing: half-integers
    indices = [schedule(t) for t in fed + fed[:2]]
    assert indices == list(range(7)) + [0, 1]
    recipe = Recipe("m", "0" * 64, preset("dgq-w8a8-g1"), tuple(schedule.timesteps), (16, 16))
    assert [recipe.step_index(t) for t in fed] == list(range(7))  # what the graph computes in float32
    with pytest.raises(DgqError, match="finite non-negative"):
        schedule(float("nan"))
    with pytest.raises(DgqError, match="unknown scheduler 'heun'"):
        use_scheduler(None, "heun")


def test_four_step_euler_calibrates_compiles_and_verifies(pipe, tiny_export_dir, tmp_path):
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.verify import verify_graph

    stats = calibrate(pipe, PROMPTS, model_name="tiny", steps=4, seed=0, scheduler="euler")
    recipe, _ = quantize_stats(stats, preset("dgq-w4a8-g8"), pipe.unet)
    assert recipe.T == 4 and all(tq.scale.shape[0] == 4 for (_m, r), tq in recipe.tensors.items() if r != "weight")
    report = compile_graph(tiny_export_dir, recipe, tmp_path / "g", CompileOptions(), progress=lambda *_: None)
    rate, lsb = report.worst_mismatch  # every quantizer at each of the 4 steps vs torch fake-quant
    assert len(report.point_check) == 4 and rate <= report.tolerance and lsb <= 1
    result = verify_graph(tmp_path / "g" / "unet.onnx", target="generic-npu",
                          timesteps=[float(t) for t in stats.timesteps], latent_size=16)
    assert result.passed, result.failures
    assert sum(o.overflows for o in result.overflows) == 0 and len(result.output_error) == 4
    import json

    import onnx

    from passes.contract import MODEL_TIMESTEPS, node_props

    model = onnx.load(str(tmp_path / "g" / "unet.onnx"), load_external_data=False)
    assert json.loads(node_props(model)[MODEL_TIMESTEPS]) == list(stats.timesteps)
