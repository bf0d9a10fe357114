"""The weight-free trace + tensor-by-tensor binding give exactly the graph a whole-model export gives."""
import json
import warnings

import onnx
import pytest
import torch

from dgq_compiler.errors import DgqError
from dgq_compiler.export import _dynamic_axes, _wrapper, example_inputs, export_model
from dgq_compiler.export_trace import bind_initializers, placeholder_skeleton, trace_graph
from dgq_compiler.export_weights import ModuleWeights, SpilledWeights, content_classes
from models.loader import load_unet
from models.zoo import unet_from_config, zoo_config

QUIET = {"progress": lambda _msg: None}


def _whole_model_export(unet, path):
    """What export did before streaming: the legacy exporter with the weights, re-saved inline."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())
    wrapper, _ = _wrapper(unet)
    inputs = example_inputs(unet, 2, 16, 500.0, 0)
    raw = path.parent / "raw.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(inputs.values()), str(raw), input_names=list(inputs),
                          output_names=["out_sample"], dynamic_axes=_dynamic_axes(list(inputs)),
                          opset_version=21, dynamo=False, do_constant_folding=True)
    onnx.save_model(onnx.load(str(raw)), str(path))


def test_streamed_export_is_byte_identical_to_a_whole_model_export(tmp_path, tiny_export_dir, tiny_pipeline_dir):
    _whole_model_export(load_unet(tiny_pipeline_dir), tmp_path / "whole.onnx")
    assert (tmp_path / "whole.onnx").read_bytes() == (tiny_export_dir / "unet.onnx").read_bytes()


def test_folder_export_reads_safetensors_and_matches_the_in_memory_export(tmp_path, tiny_export_dir,
                                                                          tiny_pipeline_dir):
    report = export_model(str(tiny_pipeline_dir), tmp_path / "folder", **QUIET)
    assert report.worst_error <= 1e-4 and report.parameters == 1466500
    for name in ("unet.onnx", "module_map.json"):
        assert (tmp_path / "folder" / name).read_bytes() == (tiny_export_dir / name).read_bytes()


def test_spilled_zoo_weights_are_the_zoo_loaders(tmp_path):
    config = zoo_config("tiny")
    spilled = SpilledWeights(config, 4, tmp_path / "w.bin")
    reference = unet_from_config(config, device="cpu", seed=4).state_dict()
    assert sorted(spilled.names()) == sorted(reference)
    for name in spilled.names():
        assert spilled.shape(name) == tuple(reference[name].shape)
        assert torch.equal(spilled.tensor(name), reference[name])
    assert (tmp_path / "w.bin").stat().st_size == 4 * sum(t.numel() for t in reference.values())


def test_content_classes_group_exactly_the_equal_tensors():
    module = torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4),
                                 torch.nn.LayerNorm(3))
    source = ModuleWeights(module)
    classes = content_classes(source, source.names())
    assert classes["0.weight"] == classes["1.weight"] != classes["0.bias"] == classes["1.bias"]
    assert classes["3.weight"] != classes["0.weight"]  # equal values, other shape
    assert len({classes["2.weight"], classes["2.bias"], classes["0.weight"], classes["0.bias"]}) == 4


@pytest.fixture(scope="module")
def traced_tiny(tmp_path_factory):
    unet = load_unet("models/trained/shapes-sd")
    source = ModuleWeights(unet)
    skeleton = placeholder_skeleton(dict(unet.config), content_classes(source, source.names()))
    from diffusers.models.attention_processor import AttnProcessor

    skeleton.set_attn_processor(AttnProcessor())
    assert sum(p.untyped_storage().nbytes() for p in skeleton.parameters()) == 4 * len(source.names())
    wrapper, _ = _wrapper(skeleton)
    inputs = example_inputs(skeleton, 1, 16, 500.0, 0)
    path = tmp_path_factory.mktemp("trace") / "traced.onnx"
    trace_graph(wrapper, inputs, path, 21, _dynamic_axes(list(inputs)))
    return onnx.load(str(path)), list(inputs), {n: source.shape(n) for n in source.names()}


def test_bindings_transpose_exactly_the_matmul_weights(traced_tiny):
    model, data_inputs, shapes = traced_tiny
    assert not model.graph.initializer  # the trace carries no weights
    bindings = bind_initializers(model, data_inputs, shapes)
    by_parameter = {b.parameter: b for b in bindings}
    to_q = by_parameter["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
    assert to_q.transpose and to_q.shape == shapes[to_q.parameter][::-1]
    conv = by_parameter["conv_in.weight"]
    assert not conv.transpose and conv.initializer == "unet.conv_in.weight"
    norm = by_parameter["down_blocks.0.resnets.0.norm1.weight"]  # GroupNorm scale, folded to [C, 1, 1]
    assert not norm.transpose and norm.shape == (*shapes[norm.parameter], 1, 1)
    assert all(not b.transpose for b in bindings if not b.initializer.startswith("onnx::MatMul"))


def test_binding_refuses_a_shape_that_does_not_match(traced_tiny):
    model, data_inputs, shapes = traced_tiny
    wrong = dict(shapes, **{"conv_in.weight": (1, 2, 3, 3)})
    with pytest.raises(DgqError, match="'unet.conv_in.weight' has shape"):
        bind_initializers(model, data_inputs, wrong)
    folded = next(b for b in bind_initializers(model, data_inputs, shapes)
                  if b.transpose and b.shape[0] != b.shape[1])
    untransposed = dict(shapes, **{folded.parameter: folded.shape})  # not the reverse of the MatMul operand
    with pytest.raises(DgqError, match="is not .* transposed"):
        bind_initializers(model, data_inputs, untransposed)


def test_export_of_a_non_unet_folder_is_a_clear_error(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(Exception, match="neither model_index.json"):
        export_model(str(tmp_path / "m"), tmp_path / "out", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]



def test_float16_export_halves_the_weights_and_keeps_the_float32_interface(tmp_path, tiny_export_dir,
                                                                          tiny_pipeline_dir):
    report = export_model(str(tiny_pipeline_dir), tmp_path / "half", float16=True, **QUIET)
    assert report.dtype == "float16" and report.tolerance == 1e-2
    assert 1e-5 < report.worst_error <= 1e-2  # half precision's own error, far above float32's
    half = onnx.load(str(tmp_path / "half" / "unet.onnx"))
    assert {i.data_type for i in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [onnx.TensorProto.FLOAT] * 3
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp32 = onnx.load(str(tiny_export_dir / "unet.onnx"))
    assert len(half.graph.initializer) == len(fp32.graph.initializer)
    assert 2 * sum(len(i.raw_data) for i in half.graph.initializer) == sum(len(i.raw_data) for i in fp32.graph.initializer)
    modules = {(e["module"], e["kind"]) for e in json.loads((tmp_path / "half" / "module_map.json").read_text())["entries"]}
    full = {(e["module"], e["kind"]) for e in json.loads((tiny_export_dir / "module_map.json").read_text())["entries"]}
    assert modules == full


def test_sdxl_style_folder_exports_added_conditions_with_external_weights(tmp_path):
    from onnx.external_data_helper import uses_external_data

    from models.zoo import save_random_unet

    config = dict(zoo_config("tiny"), addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=16 + 6 * 8, transformer_layers_per_block=[1, 2, 1],
                  use_linear_projection=True)
    save_random_unet(config, 3, tmp_path / "unet")
    report = export_model(str(tmp_path / "unet"), tmp_path / "xl", external_data=True, **QUIET)
    assert report.inputs == ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    assert 0 < report.worst_error <= 1e-4
    model = onnx.load(str(tmp_path / "xl" / "unet.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    assert external and all(len(t.raw_data) < 1024 for t in model.graph.initializer if not uses_external_data(t))
    offsets = [int(next(e.value for e in t.external_data if e.key == "offset")) for t in external]
    assert all(o % 4096 == 0 for o in offsets)  # page-aligned: runtimes can memory-map them
