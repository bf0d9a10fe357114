"""`dgq run` end to end on the test suite's saved tiny pipeline (a local diffusers folder), twice."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from dgq_compiler.cli.main import main
from dgq_compiler.errors import DgqError
from dgq_compiler.run import RunOptions
from tests.summaries import without_timings

ARGS = ["--presets", "dgq-w4a6-g16,tfmq-w8a8", "--num-prompts", "2", "--steps", "3", "--num-images", "2",
        "--images", "4,3"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_pipeline_dir):
    root = tmp_path_factory.mktemp("run")
    for name in ("a", "b"):
        assert main(["run", "--model", str(tiny_pipeline_dir), "-o", str(root / name), *ARGS]) == 0
    return root / "a", root / "b"


def test_report_links_only_figures_this_run_wrote(two_runs):
    out, _ = two_runs
    report = (out / "report.md").read_text()
    linked = re.findall(r"\]\(figures/([^)]+)\)", report)
    assert {"image_grid.png", "layer_sqnr.png", "step_snr.png"} <= set(linked)
    assert sorted(set(linked)) == sorted(p.name for p in (out / "figures").iterdir())
    for name in linked:
        image = np.asarray(Image.open(out / "figures" / name).convert("L"))
        assert image.shape[0] > 150 and image.shape[1] > 300
        assert image.std() > 5  # not a blank canvas
    assert {"image_grid.png", "quality_images.png"} <= set(linked)
    for section in ("## Summary", "## Cost", "## Fidelity", "## Distributions", "## Images", "## Verify and check"):
        assert section in report


def test_every_configuration_was_compiled_verified_and_checked(two_runs):
    out, _ = two_runs
    summary = json.loads((out / "summary.json").read_text())
    assert [c["preset"] for c in summary["configs"]] == ["dgq-w4a6-g16", "tfmq-w8a8", "dgq-w4a6-g16@tensorrt-int8"]
    for config in summary["configs"]:
        graph_dir = out / "graphs" / config["preset"]
        assert {"unet.onnx", "encodings.json", "verify.json", "check.json"} <= {p.name for p in graph_dir.iterdir()}
        assert config["verify_passed"] and config["verify"]["tensors"] > 50
        assert len(config["step_snr"]) == len(summary["calibration"]["timesteps"]) + 1  # PNDM repeats one step
        assert all(np.isfinite(s) for _, s in config["step_snr"])
        assert [t for t, _ in config["guidance_snr"]] == [t for t, _ in config["step_snr"]]
        assert all(np.isfinite(s) for _, s in config["guidance_snr"])
    dgq, tfmq, trt = summary["configs"]
    assert {"log quantizer", "group map"} <= set(dgq["check_violations"])   # what TensorRT cannot run
    assert "log quantizer" not in tfmq["check_violations"]
    # the DGQ preset compiled for TensorRT: every static graph conforms; its fidelity cost is its own row
    assert trt["check_violations"] == {}
    checked = json.loads((out / "graphs" / trt["preset"] / "check.json").read_text())
    assert len(checked["graphs"]) == len(summary["calibration"]["timesteps"])
    assert trt["cost"]["model_size_bytes"] > dgq["cost"]["model_size_bytes"]  # W8 instead of W4
    for config in summary["configs"]:  # every graph ran in a default onnxruntime session, timed against fp32
        assert config["onnxruntime"] == {"default_session": True}
        assert config["seconds"]["unet_call"] > 0 and config["seconds"]["fp32_unet_call"] > 0
    assert set(summary["cost"]) == {"this model (from its ONNX graph)", "sd-v1.4 (from its config)",
                                    "sdxl-base (from its config)"}



def test_report_opens_with_the_quality_table_of_fp_and_every_configuration(two_runs):
    out, _ = two_runs
    report = (out / "report.md").read_text()
    first_section = report.index("## ")
    assert report[first_section:].startswith("## Image quality (the paper's Table 2 layout)")
    assert report.index("## Image quality") < report.index("## Summary")
    table = report[report.index("| method |"):].split("\n\n")[0].splitlines()
    assert table[0].startswith("| method | configuration | bits W/A | G | Fréchet ↓ (held-out) | alignment ↑ (held-out)")
    assert "TBOPs (paper) | size MB |" in table[0]
    rows = [line.split(" | ")[1] for line in table[2:]]
    assert rows == ["-", "FP32", "dgq-w4a6-g16", "tfmq-w8a8", "dgq-w4a6-g16@tensorrt-int8"]
    quality = json.loads((out / "summary.json").read_text())["quality"]
    assert [r["label"] for r in quality["table"]] == rows[1:]
    assert [r["bits"] for r in quality["table"]] == ["32/32", "4/6", "8/8", "8/8"]  # the TensorRT row is W8A8
    assert quality["table"][1]["groups"] == 16 and quality["table"][2]["groups"] is None
    # images from the integer-lowered graph where it has one integer product per op (per-tensor activations: TFMQ),
    # else from the QDQ graph (DGQ's channel groups split each product per group); never the target adaptation's
    lowered = {row["preset"]: row for row in json.loads((out / "summary.json").read_text())["deploy"]}
    assert lowered["tfmq-w8a8"]["accumulators"] == lowered["tfmq-w8a8"]["products"]
    assert lowered["dgq-w4a6-g16"]["accumulators"] > lowered["dgq-w4a6-g16"]["products"]
    assert [r["graph"] for r in quality["table"]] == [
        "export/unet.onnx", "graphs/dgq-w4a6-g16/unet.onnx",
        "graphs/tfmq-w8a8@onnxruntime-cpu/unet.onnx", "graphs/dgq-w4a6-g16@tensorrt-int8/unet.onnx"]
    assert "1 of 3 configurations from its integer-lowered onnxruntime-cpu graph" in report
    assert "4 images per configuration on the held-out set, 3 on the rephrased set" in report
    fp, dgq = quality["table"][0], quality["table"][1]
    assert dgq["tbops_paper"] == pytest.approx(fp["tbops_paper"] * 4 * 6 / 32 / 32)  # paper convention
    for label, sets in quality["configs"].items():
        assert set(sets) == {"heldout", "rephrased"}
        for name, scores in sets.items():
            assert scores["images"] == {"heldout": 4, "rephrased": 3}[name]
            assert scores["alignment"]["low"] <= scores["alignment"]["value"] <= scores["alignment"]["high"]
            assert ("versus_fp" in scores) == (label != "FP32")


def test_reports_name_files_relative_to_the_report_folder(two_runs):
    out, _ = two_runs
    compiled = json.loads((out / "graphs" / "tfmq-w8a8" / "compile.json").read_text())
    assert (compiled["graph"], compiled["output"]) == ("export/unet.onnx", "graphs/tfmq-w8a8")
    verified = json.loads((out / "graphs" / "tfmq-w8a8" / "verify.json").read_text())
    assert verified["graph"] == "graphs/tfmq-w8a8/unet.onnx"
    for path in out.rglob("*.json"):  # no temporary (or any absolute) folder left in a report
        assert str(out.parent) not in path.read_text(), path


def test_two_runs_give_the_same_numbers_and_byte_identical_graphs(two_runs):
    a, b = two_runs
    for rel in ("export/unet.onnx", "graphs/dgq-w4a6-g16/unet.onnx", "graphs/tfmq-w8a8/unet.onnx",
                "recipes/dgq-w4a6-g16.safetensors", "calibration/stats.safetensors"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert without_timings(json.loads((a / "summary.json").read_text())) == \
        without_timings(json.loads((b / "summary.json").read_text()))


def test_existing_output_is_refused_before_any_work(capsys, two_runs):
    out, _ = two_runs
    assert main(["run", "--model", "tiny", "-o", str(out), *ARGS]) == 2
    assert "already exists (pass --overwrite to replace it)" in capsys.readouterr().err


def test_bad_options_are_named():
    with pytest.raises(DgqError, match="unknown preset 'dgq-w9a9'"):
        RunOptions(presets=("dgq-w9a9",))
    with pytest.raises(DgqError, match="--steps must be at least 2"):
        RunOptions(steps=1)
