"""`check` (target conformance, worst-case accumulators) and `verify` (simulator vs onnxruntime), via the API and the CLI."""
import json

import numpy as np
import onnx
import pytest

from dgq_compiler.cli.main import main
from simulator.check import check_graph


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, qdq):
    root = tmp_path_factory.mktemp("graphs")
    out = {}
    for name, (model, _) in {"conv6": qdq.conv(axis="pixel", bits=6, w_bits=4),
                             "attn": qdq.attention(axis="channel", split_bos=True),
                             "linear8": qdq.linear(axis="tensor", bits=8, w_bits=8)}.items():
        folder = root / name
        folder.mkdir()
        onnx.save(model, str(folder / "unet.onnx"))
        out[name] = folder
    return out


def test_tensorrt_target_reports_groups_6_bit_grid_and_log_quantizer(graphs):
    conv = check_graph(str(graphs["conv6"] / "unet.onnx"), "tensorrt-int8")
    rules = conv.by_rule()
    assert rules["activation bits"] == 1 and "6-bit grid" in next(v.asks for v in conv.violations if v.rule == "activation bits")
    assert rules["activation granularity"] == 1 and "pixel (G=4)" in next(
        v.asks for v in conv.violations if v.rule == "activation granularity")
    assert rules["activation scale source"] == 1 and rules["pixel groups on kxk conv"] == 1
    assert rules["weight bits"] == 1 and rules["group map"] == 1
    attn = check_graph(str(graphs["attn"] / "unet.onnx"), "tensorrt-int8", latent_size=None)
    log = [v for v in attn.violations if v.rule == "log quantizer"]
    assert len(log) == 1 and "log2" in log[0].asks and log[0].allows == "no log quantizer"
    assert attn.by_rule()["fp side branch"] == 1
    generic = check_graph(str(graphs["conv6"] / "unet.onnx"), "generic-npu")
    assert generic.ok, generic.violations


def narrow_target(path, weight_bits: int):
    """A target file like generic-npu's activations but a 16-bit accumulator, with `weight_bits` weights."""
    path.write_text(json.dumps({"name": "narrow", "accumulator_bits": 16,
                                "activations": {"bits": [6, 8], "granularity": ["tensor", "pixel"], "max_groups": 8,
                                                "pixel_groups_kxk_conv": True, "scale_sources": ["computed"],
                                                "per_step_group_maps": True},
                                "weights": {"bits": [weight_bits]}}))
    return path


def test_worst_case_accumulator_analysis_flags_narrow_accumulators(graphs, tmp_path):
    target = narrow_target(tmp_path / "narrow.json", 4)
    report = check_graph(str(graphs["conv6"] / "unet.onnx"), str(target))
    (acc,) = report.accumulators
    # K = 8 channels * 3 * 3; |a| <= 63 (6-bit), |b| <= 15 (int4): 72 * 63 * 15 = 68040 -> 17 bits + sign
    assert acc.reduction == 72 and acc.operand_bits == (6, 4) and acc.worst_bits == 18 and acc.may_overflow
    assert [v.rule for v in report.violations] == ["accumulator width"]


def test_cli_check_and_verify(graphs, tmp_path, capsys):
    assert main(["check", str(graphs["conv6"]), "--target", "tensorrt-int8"]) == 1
    out = capsys.readouterr().out
    assert "activation granularity" in out and "6-bit grid" in out and "violations" in out
    assert main(["check", str(graphs["linear8"]), "--target", "generic-npu"]) == 0
    report = tmp_path / "verify.json"
    assert main(["verify", str(graphs["attn"]), "--target", "generic-npu", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "mismatch rate" in out
    data = json.loads(report.read_text())
    assert data["passed"] and len(data["tensors"]) == 4 and all(t["codes"] > 0 for t in data["tensors"])
    assert max(t["max_lsb"] for t in data["tensors"]) <= 1
    assert sorted(t["role"] for t in data["tensors"]) == ["attn_probs", "k", "q", "v"]


def test_verify_fails_beyond_tolerance_and_bad_target_is_a_one_line_error(graphs, tmp_path, capsys):
    narrow = tmp_path / "acc12.json"
    narrow.write_text(json.dumps({"name": "acc12", "accumulator_bits": 12,
                                  "activations": {"bits": [8], "granularity": ["tensor"], "scale_sources": ["computed"]}}))
    assert main(["verify", str(graphs["linear8"]), "--target", str(narrow)]) == 1
    out = capsys.readouterr().out
    assert "accumulator overflows" in out and "FAIL" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "epilogue": {"rounding": "SOMETIMES"}}))
    assert main(["verify", str(graphs["linear8"]), "--target", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'epilogue.rounding'" in err and len(err.strip().splitlines()) == 1
    assert main(["check", str(tmp_path / "missing"), "--target", "generic-npu"]) == 2


def test_check_and_verify_leave_big_weights_in_the_external_file(qdq, tmp_path, monkeypatch):
    """Real-size graphs keep weights above check.INLINE_ELEMENTS in unet.onnx.data: the analysis must take their
    shapes from the initializers' dims (reading their values failed on every SDXL compile), from any directory."""
    import simulator.check

    model, _ = qdq.conv(axis="pixel", bits=6, w_bits=8)  # int8 weights: stored as raw data, so they go external
    inline, external = tmp_path / "inline", tmp_path / "external"
    for folder in (inline, external):
        folder.mkdir()
    onnx.save(model, str(inline / "unet.onnx"))
    onnx.save(model, str(external / "unet.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="unet.onnx.data", size_threshold=0)
    monkeypatch.setattr(simulator.check, "INLINE_ELEMENTS", 200)  # the conv weight (360 values) stays external
    analysed = simulator.check.load_for_analysis(external / "unet.onnx")
    assert [list(t.dims) for t in analysed.graph.initializer if t.external_data] == [[5, 8, 3, 3]]
    monkeypatch.chdir(tmp_path)  # external locations resolve against the graph's folder, not the working directory
    narrow = narrow_target(tmp_path / "narrow.json", 8)
    (acc,) = check_graph(str(external / "unet.onnx"), str(narrow)).accumulators
    assert acc.reduction == 72 and acc.may_overflow  # K from the external weight's dims: 8 channels x 3 x 3
    assert acc == check_graph(str(inline / "unet.onnx"), str(narrow)).accumulators[0]
    from dgq_compiler.verify import verify_graph

    said = []
    assert verify_graph(external, "generic-npu", progress=said.append).passed
    assert said[0].startswith("loading") and said[1].endswith("onnxruntime ...")  # the long load is announced


def _with_activation_zero_points(model, dtype, value):
    """The linear graph with its activation zero-point table replaced by `value` stored as `dtype` (the codes'
    type follows it: QuantizeLinear's output type is its zero point's)."""
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    (table,) = [t for t in out.graph.initializer if t.name == "lin/input/zero_point_table"]
    table.CopyFrom(numpy_helper.from_array(np.full(list(table.dims), value, dtype), table.name))
    return out


def unsigned_symmetric_target(path):
    """Unsigned activation codes with zero point 0 only (a grid for non-negative values), everything else open."""
    path.write_text(json.dumps({"name": "unsigned-symmetric", "activations": {
        "bits": [8], "grids": ["unsigned"], "symmetric_only": True, "granularity": ["tensor"],
        "scale_sources": ["computed"]}}))
    return path


def test_check_judges_the_grid_a_target_runs_not_its_storage_type(qdq, tmp_path):
    """An 8-bit grid with zero point 128 is stored as int8 codes with zero point 0 (passes/qdq.code_type): on an
    unsigned target with zero points (generic-npu) that is uint8 with zero point 128, not a violation (mixdq-w5a8
    reported "signed codes" once for a cross-attention v whose calibrated range was symmetric). On a target that
    takes unsigned codes with zero point 0 only, the same signed symmetric grid cannot run and is reported."""
    model, _ = qdq.linear(axis="tensor", bits=8, w_bits=8)
    signed = _with_activation_zero_points(model, np.int8, 0)
    (q,) = check_graph(signed, "generic-npu").info.quantizers
    assert q.signed and q.symmetric and not q.flip_symmetric  # as uint8 its zero point is 128
    assert check_graph(signed, "generic-npu").ok
    strict = check_graph(signed, str(unsigned_symmetric_target(tmp_path / "t.json")))
    assert [(v.rule, v.asks) for v in strict.violations] == [("activation grid", "signed codes")]
    # the other way: uint8 with zero point 128 is int8 with zero point 0 on a signed symmetric-only target ...
    shifted = check_graph(_with_activation_zero_points(model, np.uint8, 128), "tensorrt-int8").by_rule()
    assert "activation grid" not in shifted and "activation zero point" not in shifted
    # ... and any other uint8 zero point is not
    asymmetric = check_graph(_with_activation_zero_points(model, np.uint8, 100), "tensorrt-int8").by_rule()
    assert asymmetric["activation grid"] == 1 and asymmetric["activation zero point"] == 1
