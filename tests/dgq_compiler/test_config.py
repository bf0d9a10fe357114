"""QuantConfig validation, serialization and presets."""
import json

import pytest

from dgq_compiler.config import PRESETS, QuantConfig, load_config, preset, resolve_config
from dgq_compiler.errors import DgqError


def test_every_preset_round_trips_through_a_dict_and_is_named_after_itself():
    assert len([n for n in PRESETS if "mixdq" not in n and "edadm" not in n]) == 4 * (6 + 5 + 2)
    for name, config in PRESETS.items():
        assert QuantConfig.from_dict(config.to_dict()) == config
        assert config.name == name


def test_presets_carry_the_method_fields():
    dgq = preset("dgq-w4a6-g16")
    assert (dgq.weight_bits, dgq.act_bits, dgq.groups, dgq.attn_quantizer, dgq.exclude_bos, dgq.per_step) == \
        (4, 6, 16, "log2", True, True)
    assert dgq.attention_bits == 6 and dgq.weight_method == "mse"
    assert preset("dgq-w8a8-g8-shared").shared_group_map
    qd = preset("qdiffusion-w8a6")
    assert (qd.groups, qd.per_step, qd.attn_quantizer, qd.attention_bits, qd.exclude_bos) == (1, False, "uniform", 6, False)
    assert preset("tfmq-w8a8").per_step


@pytest.mark.parametrize("changes, words", [
    ({"weight_bits": 6}, "weight_bits"),
    ({"act_bits": 3}, "act_bits"),
    ({"groups": 3}, "groups"),
    ({"method": "brecq"}, "method"),
    ({"attn_quantizer": "log10"}, "attn_quantizer"),
    ({"groups": 1, "shared_group_map": True}, "shared_group_map"),
    ({"act_bits": "8"}, "act_bits"),
    ({"exclude_bos": 1}, "exclude_bos"),
])
def test_bad_fields_are_named(changes, words):
    with pytest.raises(DgqError, match=words):
        QuantConfig().replace(**changes)


def test_baselines_must_be_per_tensor_linear():
    with pytest.raises(DgqError, match="groups must be 1"):
        preset("tfmq-w8a8").replace(groups=8)
    with pytest.raises(DgqError, match="per_step"):
        preset("qdiffusion-w8a8").replace(per_step=True)


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(DgqError, match="unknown field"):
        QuantConfig.from_dict({"bits": 8})
    with pytest.raises(DgqError, match="unknown preset"):
        preset("dgq-w2a2-g8")


def test_config_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"groups": 4, "act_bits": 6}))
    assert load_config(path) == QuantConfig(groups=4, act_bits=6)
    assert resolve_config(str(path)) == QuantConfig(groups=4, act_bits=6)
    assert resolve_config("tfmq-w4a8") is PRESETS["tfmq-w4a8"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DgqError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(DgqError, match="not found"):
        load_config(tmp_path / "missing.json")


def test_mixdq_presets_and_fields():
    mixed = preset("mixdq-w5a8")
    assert (mixed.method, mixed.groups, mixed.text_bos_fp, mixed.mixed_weight_bits, mixed.mixed_act_bits) == \
        ("mixdq", 1, True, 5.0, None)
    assert mixed.mixed and not preset("mixdq-w4a8").mixed and not preset("dgq-w4a8-g8").text_bos_fp
    both = preset("dgq-mixdq-w5a7-g8")
    assert (both.method, both.groups, both.mixed_act_bits, both.act_bits) == ("dgq", 8, 7.0, 8)
    assert preset("dgq-mixdq-edadm-w5a8-g8").reconstruct and preset("dgq-edadm-w4a8-g8").groups == 8
    assert preset("mixdq-w5a8").replace(mixed_weight_bits=5.5).name == "mixdq-w5.5a8"


@pytest.mark.parametrize("changes, words", [
    ({"mixed_weight_bits": 9.0}, "mixed_weight_bits must be null or an average width in 4..8"),
    ({"mixed_act_bits": 5.0}, "mixed_act_bits must be null or an average width in 6..8"),
    ({"weight_bits": 8}, "weight_bits must be 4"),
    ({"groups": 8}, "method mixdq is per tensor"),
    ({"text_bos_fp": False}, "text_bos_fp true"),
    ({"mixed_act_bits": 7.0, "act_bits": 6}, "act_bits must be 8"),
])
def test_mixdq_fields_are_checked(changes, words):
    with pytest.raises(DgqError, match=words):
        preset("mixdq-w5a8").replace(**changes)
