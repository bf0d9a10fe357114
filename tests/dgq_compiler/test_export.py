import json

import numpy as np
import onnx
import pytest
import torch

from dgq_compiler.errors import DgqError
from dgq_compiler.export import example_inputs, export_unet
from dgq_compiler.runtime import session
from models.loader import load_unet
from models.zoo import unet_from_config, zoo_config
from passes.module_map import load_module_map

QUIET = {"progress": lambda _msg: None}


def _run(graph, inputs):
    return session(graph, "default").run(["out_sample"], {k: v.numpy() for k, v in inputs.items()})[0]


def test_tiny_export_validates_within_1e_4(tiny_export_dir):
    report = json.loads((tiny_export_dir / "export.json").read_text())
    assert report["opset"] == 21 and report["tolerance"] == 1e-4
    assert set(report["max_abs_error"]) == {"999.0", "1.0"}
    assert 0 < max(report["max_abs_error"].values()) <= 1e-4
    onnx.checker.check_model(str(tiny_export_dir / "unet.onnx"), full_check=True)


def test_graph_interface_and_explicit_attention(tiny_export_dir):
    model = onnx.load(str(tiny_export_dir / "unet.onnx"))
    assert [i.name for i in model.graph.input] == ["sample", "timestep", "encoder_hidden_states"]
    assert [o.name for o in model.graph.output] == ["out_sample"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4, "height", "width"]
    ops = {n.op_type for n in model.graph.node}
    assert "Softmax" in ops and not ops & {"Attention", "MultiHeadAttention", "ScaledDotProductAttention"}


def test_dynamic_batch_and_spatial_size_match_torch(tiny_export_dir, tiny_pipeline_dir):
    unet = load_unet(tiny_pipeline_dir)
    inputs = example_inputs(unet, batch=1, latent_size=24, timestep=321.0, seed=7)
    with torch.no_grad():
        ref = unet(*inputs.values(), return_dict=False)[0].numpy()
    got = _run(tiny_export_dir / "unet.onnx", inputs)
    assert got.shape == (1, 4, 24, 24)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_module_map_covers_every_conv_linear_and_attention(tiny_export_dir, tiny_pipeline_dir):
    unet = load_unet(tiny_pipeline_dir)
    modules = dict(unet.named_modules())
    entries = load_module_map(tiny_export_dir / "module_map.json")
    weighted = {e.module for e in entries if e.kind in ("conv", "linear")}
    expected = {n for n, m in modules.items() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert weighted == expected
    attention = {n for n, m in modules.items() if type(m).__name__ == "Attention"}
    assert {e.module for e in entries if e.kind == "attn_qk"} == attention
    assert {e.module for e in entries if e.kind == "attn_av"} == attention
    graph_tensors = {t for n in onnx.load(str(tiny_export_dir / "unet.onnx")).graph.node for t in n.input}
    for e in entries:
        assert set(e.inputs.values()) <= graph_tensors
    to_k = next(e for e in entries if e.module.endswith("attn2.to_k"))
    assert to_k.inputs["input"] == "encoder_hidden_states" and to_k.weight_layout == "in_out"


def test_external_data_is_one_file_checked_on_the_path(tmp_path, tiny_pipeline_dir):
    out = tmp_path / "ext"
    report = export_unet(load_unet(tiny_pipeline_dir), out, external_data=True, **QUIET)
    assert report.external_data
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "module_map.json", "unet.onnx", "unet.onnx.data"]
    assert 4 * (out / "unet.onnx").stat().st_size < (out / "unet.onnx.data").stat().st_size
    onnx.checker.check_model(str(out / "unet.onnx"))


def test_sdxl_style_added_conditions_are_graph_inputs(tmp_path):
    config = dict(zoo_config("tiny"), addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=16 + 6 * 8, transformer_layers_per_block=[1, 2, 1],
                  use_linear_projection=True)
    report = export_unet(unet_from_config(config, device="cpu"), tmp_path / "xl", **QUIET)
    assert report.inputs == ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert report.worst_error <= 1e-4


def test_failed_validation_leaves_no_output(tmp_path, tiny_pipeline_dir):
    with pytest.raises(DgqError, match=r"max abs error .* > tolerance 0"):
        export_unet(load_unet(tiny_pipeline_dir), tmp_path / "out", tolerance=0.0, **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_model_that_is_not_a_unet(tmp_path):
    with pytest.raises(DgqError, match="model is a Linear, expected a diffusers UNet2DConditionModel"):
        export_unet(torch.nn.Linear(2, 2), tmp_path / "out", **QUIET)


def test_existing_output_is_kept_unless_overwrite(tmp_path, tiny_pipeline_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DgqError, match="already exists"):
        export_unet(load_unet(tiny_pipeline_dir), out, **QUIET)
    assert (out / "mine.txt").read_text() == "keep me"
    export_unet(load_unet(tiny_pipeline_dir), out, overwrite=True, **QUIET)
    assert not (out / "mine.txt").exists() and (out / "unet.onnx").is_file()


def test_same_seed_gives_byte_identical_graphs(tmp_path, tiny_pipeline_dir):
    a = export_unet(load_unet(tiny_pipeline_dir), tmp_path / "a", **QUIET)
    b = export_unet(load_unet(tiny_pipeline_dir), tmp_path / "b", **QUIET)
    assert a.max_abs_error == b.max_abs_error
    for name in ("unet.onnx", "module_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
