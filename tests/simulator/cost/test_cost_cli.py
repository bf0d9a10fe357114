"""`dgq cost` on zoo names and user configs; bad input -> one-line error, exit 2."""
import json

import pytest

from dgq_compiler.cli.main import main
from models.zoo import zoo_config

TINY_XL = dict(zoo_config("tiny"), addition_embed_type="text_time", addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=6 * 8 + 32, transformer_layers_per_block=[1, 2, 1],
               use_linear_projection=True, attention_head_dim=[2, 4, 4])


def _run_json(capsys, *argv):
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, *argv) -> str:
    assert main(["cost", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_json_has_the_documented_keys(capsys):
    doc = _run_json(capsys, "--model", "tiny", "--bits", "W8A8")
    assert set(doc["macs"]) >= {"conv", "linear", "attn_qk", "attn_av", "total"}
    assert doc["macs"]["total"] == sum(doc["macs"][k] for k in ("conv", "linear", "attn_qk", "attn_av", "other"))
    assert doc["bops"] == doc["macs"]["total"] * 64 and doc["tbops"] == doc["bops"] / 1e12
    assert doc["model_size_bytes"] > 0 and doc["qparam_bytes"] > 0 and doc["groups"] == 8


def test_standard_table_is_printed(capsys):
    assert main(["cost", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in
            ("FP32", "W8A8", "W8A6", "W4A8", "W4A6")]
    assert rows == ["FP32"] + [b for b in ("W8A8", "W8A6", "W4A8", "W4A6") for _ in (8, 16)]


@pytest.mark.parametrize("config", [zoo_config("tiny"), TINY_XL], ids=["sd-like", "sdxl-like"])
def test_user_configs_work_at_every_resolution_they_accept(tmp_path, capsys, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    docs = {(b, px): _run_json(capsys, "--model", str(path), "--batch", str(b), "--resolution", str(px),
                               "--bits", "W32A32")
            for b in (1, 2) for px in (96, 128)}
    for px in (96, 128):   # every op is per sample: batch 2 costs exactly twice batch 1
        assert {k: 2 * v for k, v in docs[1, px]["macs"].items()} == docs[2, px]["macs"]
    small, large = docs[1, 96]["macs"], docs[1, 128]["macs"]
    assert large["conv"] > small["conv"] and large["attn_qk"] > small["attn_qk"]
    assert docs[1, 96]["resolution"] == [96, 96]


def test_exact_convention_prices_fp_layers_and_shift_adds(capsys):
    doc = _run_json(capsys, "--model", "tiny", "--bits", "W4A6", "--groups", "16", "--convention", "exact")
    assert doc["bops_parts"]["full_precision"] > 0 and doc["bops_parts"]["start_token"] > 0
    assert doc["bops_parts"]["attn_av"] == 0 and doc["shift_adds"] > 0
    assert doc["bops"] == sum(doc["bops_parts"].values())


@pytest.mark.parametrize("px, message", [(136, "must be divisible by 4"), (100, "not a positive multiple of 8"),
                                         (0, "positive")])
def test_bad_resolution(capsys, px, message):
    assert message in _error(capsys, "--model", "tiny", "--resolution", str(px))


@pytest.mark.parametrize("bits", ["W5A8", "8x8", "W8A3"])
def test_unknown_bit_width(capsys, bits):
    assert f"unknown bit width {bits!r}" in _error(capsys, "--model", "tiny", "--bits", bits)


def test_malformed_configs(tmp_path, capsys):
    not_json = tmp_path / "a.json"
    not_json.write_text("{ this is not json")
    assert "not valid JSON" in _error(capsys, "--model", str(not_json))
    wrong_class = tmp_path / "b.json"
    wrong_class.write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    assert "expected a UNet2DConditionModel" in _error(capsys, "--model", str(wrong_class))
    inconsistent = tmp_path / "c.json"
    inconsistent.write_text(json.dumps(dict(zoo_config("tiny"), block_out_channels=[32, 64])))
    assert "cannot" in _error(capsys, "--model", str(inconsistent))
    bad_dims = tmp_path / "d.json"
    bad_dims.write_text(json.dumps(dict(zoo_config("tiny"), cross_attention_dim="wide")))
    assert "cannot" in _error(capsys, "--model", str(bad_dims))


def test_groups_without_bits_is_an_error(capsys):
    assert "--groups needs --bits" in _error(capsys, "--model", "tiny", "--groups", "4")


def test_every_configuration_carries_latency_and_energy_on_the_target(capsys):
    npu = _run_json(capsys, "--model", "tiny")
    trt = _run_json(capsys, "--model", "tiny", "--target", "tensorrt-int8")
    assert npu["target"]["name"] == "generic-npu" and trt["target"]["name"] == "tensorrt-int8"
    for doc in (npu, trt):
        for row in doc["configurations"]:
            e = row["estimate"]
            assert e["step_latency_s"] > 0 and e["image_latency_s"] == pytest.approx(25 * e["step_latency_s"])
            assert e["step_energy_j"] == pytest.approx(e["step_compute_j"] + e["step_data_j"])
            assert (e["bits"], e["groups"]) == (row["bits"], row["groups"])
    fp, w4 = npu["configurations"][0]["estimate"], npu["configurations"][-1]["estimate"]
    assert fp["step_dram_bytes"] > w4["step_dram_bytes"] and fp["step_latency_s"] > w4["step_latency_s"]
    # a faster target (T4-class GPU against an edge NPU) predicts a shorter step for the same work
    assert trt["configurations"][1]["estimate"]["step_latency_s"] < npu["configurations"][1]["estimate"]["step_latency_s"]


def test_one_configuration_lists_every_op_with_bytes_and_intensity(capsys):
    doc = _run_json(capsys, "--model", "tiny", "--bits", "W4A6", "--groups", "16")
    ops, e = doc["ops"], doc["estimate"]
    assert len(ops) == len(_run_json(capsys, "--model", "tiny", "--bits", "W8A8")["ops"])
    assert sum(op["latency_s"] for op in ops) == pytest.approx(e["step_latency_s"])
    assert sum(op["dram_bytes"] for op in ops) == e["step_dram_bytes"]
    assert all(op["intensity"] == pytest.approx(op["macs"] / op["dram_bytes"]) for op in ops)
    assert e["step_bytes"]["start_token"] > 0 and e["step_bytes"]["partial_sums"] > 0 and e["step_bytes"]["weights"] > 0


def test_table_prints_latency_energy_and_a_per_kind_breakdown(capsys):
    assert main(["cost", "--model", "tiny", "--bits", "W4A6", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "step ms" in out and "image J" in out and "roofline on target generic-npu" in out
    assert "attention QK^T" in out and "MAC/byte" in out


def _measured(monkeypatch):
    from simulator.targets import load_target, measure

    hw = load_target("generic-npu").hardware.to_dict()
    monkeypatch.setattr(measure, "measure_hardware", lambda repeats=5, progress=None: dict(hw, sources={}))


def test_measure_target_writes_a_loadable_file_and_never_a_preset(tmp_path, capsys, monkeypatch):
    from simulator.targets import load_target

    _measured(monkeypatch)
    out = tmp_path / "box.json"
    assert main(["cost", "--measure-target", "-o", str(out)]) == 0
    target = load_target(out)
    assert target.name == "box" and target.hardware.buffer_bytes == 1 << 22
    assert target.activations == load_target("onnxruntime-cpu").activations   # onnxruntime's arithmetic
    assert "measured target written" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["box.json"]   # no temporary files left behind
    doc = _run_json(capsys, "--model", "tiny", "--bits", "W8A8", "--target", str(out))
    assert doc["target"]["name"] == "box"
    assert "already exists" in _error(capsys, "--measure-target", "-o", str(out))
    assert main(["cost", "--measure-target", "-o", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert "shipped preset" in _error(capsys, "--measure-target", "-o", str(tmp_path / "generic-npu.json"))


@pytest.mark.parametrize("argv, message", [
    (["--measure-target"], "needs -o"),
    (["--measure-target", "-o", "t.toml"], "expected a .json path"),
    (["--measure-target", "-o", "t.json", "--model", "tiny"], "takes only -o/--overwrite, not --model"),
    (["--model", "tiny", "-o", "x.json"], "go with --measure-target"),
    ([], "--model is required"),
    (["--model", "tiny", "--target", "no-such-npu"], "neither a preset"),
])
def test_bad_target_flags_are_one_line_errors(capsys, argv, message):
    assert message in _error(capsys, *argv)


def test_target_without_hardware_section_is_a_one_line_error(tmp_path, capsys):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"name": "bare"}))
    assert "no `hardware` section" in _error(capsys, "--model", "tiny", "--target", str(bare))
