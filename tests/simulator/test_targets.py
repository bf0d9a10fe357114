"""Target files: presets load, user files validate, malformed files name the field."""
import json

import pytest

from simulator.errors import SimulatorError
from simulator.targets import PRESETS, load_target


def test_presets_load_and_differ():
    targets = {name: load_target(name) for name in PRESETS}
    assert targets["generic-npu"].log_quantizer.supported
    assert "pixel" in targets["generic-npu"].activations.granularity
    trt = targets["tensorrt-int8"]
    assert trt.activations.granularity == ("tensor",) and trt.activations.scale_sources == ("constant",)
    assert not trt.log_quantizer.supported and trt.activations.bits == (8,)


def _write(tmp_path, data, name="t.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return path


@pytest.mark.parametrize("doc, field", [
    ({"name": "x", "accumulator_bits": 4}, "accumulator_bits"),
    ({"name": "x", "activations": {"max_groups": "many"}}, "activations.max_groups"),
    ({"name": "x", "activations": {"granularity": ["tensor", "diagonal"]}}, "activations.granularity[1]"),
    ({"name": "x", "epilogue": {"rounding": "HALF_SIDEWAYS"}}, "epilogue.rounding"),
    ({"name": "x", "epilogue": {"arithmetic": "float8"}}, "epilogue.arithmetic"),
    ({"name": "x", "weights": {"bitz": [8]}}, "weights.bitz"),
    ({"name": "x", "verify": {"max_code_mismatch_rate": 2}}, "verify.max_code_mismatch_rate"),
    ({"name": "x", "log_quantizer": {"supported": True, "bits": []}}, "log_quantizer.bits"),
    ({"name": "x", "epilogue": {"arithmetic": "fixed_point", "multiplier_bits": 31}, "accumulator_bits": 40},
     "accumulator_bits"),
    ({"accumulator_bits": 32}, "name"),
    ({"name": "x", "colour": "red"}, "colour"),
])
def test_malformed_target_names_the_field(tmp_path, doc, field):
    with pytest.raises(SimulatorError) as err:
        load_target(_write(tmp_path, doc))
    assert repr(field) in str(err.value) or f"'{field}'" in str(err.value)


def test_toml_target_and_unparseable_files(tmp_path):
    toml = 'name = "mine"\naccumulator_bits = 24\n[activations]\nbits = [6, 8]\ngranularity = ["tensor", "channel"]\nmax_groups = 4\n'
    t = load_target(_write(tmp_path, toml, "mine.toml"))
    assert t.name == "mine" and t.accumulator_bits == 24 and t.activations.max_groups == 4
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SimulatorError, match="not valid json"):
        load_target(bad)
    with pytest.raises(SimulatorError, match="neither a preset"):
        load_target("no-such-target")
