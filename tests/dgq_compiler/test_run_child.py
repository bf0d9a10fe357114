"""`dgq run` with each configuration in a child process (dgq_compiler/run_child.py): the same files as in
process, the parent's weights released and taken back, and a failed child reported in one line."""
import json
import subprocess
import sys

import pytest
import torch

from dgq_compiler import run_child, run_config
from dgq_compiler.errors import DgqError
from dgq_compiler.run import RunOptions, run
from tests.summaries import without_timings

OPTIONS = dict(presets=("dgq-w8a8-g8",), num_prompts=1, steps=2, num_images=1, verify_timesteps=1)


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory, tiny_pipeline_dir):
    root = tmp_path_factory.mktemp("run_child")
    with pytest.MonkeyPatch.context() as mp:
        for switch in ("0", "1"):
            mp.setenv(run_child.ENV_SWITCH, switch)
            run(RunOptions(model=str(tiny_pipeline_dir), **OPTIONS), root / f"child{switch}", log=lambda *_: None)
    return root / "child0", root / "child1"


def test_child_processes_write_what_the_in_process_run_writes(both_ways):
    in_process, children = both_ways
    a, b = (json.loads((d / "summary.json").read_text()) for d in both_ways)
    assert [c["preset"] for c in b["configs"]] == ["dgq-w8a8-g8", "dgq-w8a8-g8@tensorrt-int8"]
    assert without_timings(a) == without_timings(b)
    assert all(c["verify_passed"] and c["layer_sqnr"] and c["step_snr"] for c in b["configs"])
    compared = 0
    for path in sorted(in_process.rglob("*")):
        if path.suffix in (".onnx", ".data", ".safetensors") or path.parent.name == "recipes":
            assert path.read_bytes() == (children / path.relative_to(in_process)).read_bytes(), path
            compared += 1
    assert compared >= 6  # recipes and compiled graphs of both configurations
    assert not (children / run_child.JOB_FOLDER).exists()  # the job folder is gone from the report


def test_the_report_of_the_child_run_has_the_in_process_figures(both_ways):
    in_process, children = both_ways
    assert sorted(p.name for p in (children / "figures").iterdir()) == \
        sorted(p.name for p in (in_process / "figures").iterdir())
    assert (children / "report.md").read_text().count("dgq-w8a8-g8") == \
        (in_process / "report.md").read_text().count("dgq-w8a8-g8")


def test_weights_are_released_and_taken_back_bit_for_bit(tiny_pipeline_dir):
    from dgq_compiler.calibrate.run import open_pipeline

    unet = open_pipeline(str(tiny_pipeline_dir), device="cpu").unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    run_config.release_weights(unet)
    assert all(p.numel() == 0 for p in unet.parameters())
    run_child._restore_weights(unet, str(tiny_pipeline_dir), seed=0)
    after = unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_below_the_size_threshold_configurations_run_in_process(monkeypatch):
    small = torch.nn.Linear(10, 10)
    monkeypatch.delenv(run_child.ENV_SWITCH, raising=False)
    assert not run_child.use_children(small)
    monkeypatch.setattr(run_child, "CHILD_MIN_PARAMETERS", 100)
    assert run_child.use_children(small)
    monkeypatch.setenv(run_child.ENV_SWITCH, "0")
    assert not run_child.use_children(small)
    monkeypatch.setenv(run_child.ENV_SWITCH, "yes")
    with pytest.raises(DgqError, match="DGQ_RUN_CHILD must be 0 or 1"):
        run_child.use_children(small)


class _Shared:
    """Just what `_run_child` reads before the child starts."""
    def __init__(self, tmp_path):
        self.pipe = type("Pipe", (), {"unet": type("Unet", (), {"attn_processors": {}})()})()
        self.inventory = type("Inv", (), {"batch": 2, "resolution": (64, 64), "model": "m"})()
        self.export_dir, self.out, self.options = tmp_path, tmp_path, RunOptions()
        self.layers, self.image_prompts, self.seeds, self.fp32_step_s = [], [], [], None


@pytest.mark.parametrize("script, message", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
     "configuration dgq-w8a8-g8@tensorrt-int8: its child process was killed by signal 9 (out of memory?)"),
    ("import sys; sys.exit(3)", "configuration dgq-w8a8-g8@tensorrt-int8: its child process failed with exit code 3"),
    ("import json, sys; open(sys.argv[-1].replace('job_', 'result_'), 'w').write(json.dumps({'error': 'no room'}))",
     "no room"),
])
def test_a_failed_child_is_one_line(tmp_path, monkeypatch, script, message):
    from dgq_compiler.config import preset

    real_popen = subprocess.Popen
    monkeypatch.setattr(run_child.subprocess, "Popen",
                        lambda argv, env: real_popen([sys.executable, "-c", script, argv[-1]], env=env))
    with pytest.raises(DgqError) as failure:
        run_child._run_child(0, "dgq-w8a8-g8", preset("dgq-w8a8-g8"), "tensorrt-int8", _Shared(tmp_path), "x",
                             tmp_path)
    assert str(failure.value) == message
    assert "\n" not in message
