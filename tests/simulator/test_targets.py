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


GOOD_HARDWARE = {
    "peak_macs_per_s": {"int4": 2e12, "int8": 1e12, "fp16": 5e11, "fp32": 1e11, "shift_add": 1e12},
    "bandwidth_bytes_per_s": {"dram": 5e10, "on_chip": 1e12},
    "buffer_bytes": 1 << 20,
    "energy_pj_per_mac": {"int4": 0.1, "int8": 0.3, "fp16": 1.5, "fp32": 4.6, "shift_add": 0.13},
    "energy_pj_per_byte": {"dram": 160.0, "on_chip": 12.5},
}


def test_every_preset_states_its_hardware_numbers_and_their_sources():
    from simulator.targets.hardware import FIELDS, PRECISIONS

    for name in PRESETS:
        hw = load_target(name).hardware
        assert hw is not None, name
        assert set(hw.sources) == set(FIELDS) and all(len(text) > 20 for text in hw.sources.values()), name
        assert all(hw.peak_macs_per_s[p] > 0 for p in PRECISIONS)
    npu = load_target("generic-npu").hardware    # the widely cited 45 nm figures (Horowitz, ISSCC 2014)
    assert npu.energy_pj_per_mac.int8 == pytest.approx(0.2 + 0.1) and npu.energy_pj_per_byte.dram == 640 / 4
    assert npu.peak_macs_per_s.int4 > npu.peak_macs_per_s.int8 > npu.peak_macs_per_s.fp32


def test_user_hardware_section_loads(tmp_path):
    t = load_target(_write(tmp_path, {"name": "mine", "hardware": dict(GOOD_HARDWARE, sources={"buffer_bytes": "x"})}))
    assert t.hardware.peak_macs_per_s.int8 == 1e12 and t.hardware.buffer_bytes == 1 << 20
    assert load_target(_write(tmp_path, {"name": "bare"}, "bare.json")).hardware is None
    assert not t.hardware.fused_softmax
    fused = load_target(_write(tmp_path, {"name": "f", "hardware": dict(GOOD_HARDWARE, fused_softmax=True)}, "f.json"))
    assert fused.hardware.fused_softmax


@pytest.mark.parametrize("change, field", [
    ({"buffer_bytes": 0}, "hardware.buffer_bytes"),
    ({"buffer_bytes": 1.5}, "hardware.buffer_bytes"),
    ({"peak_macs_per_s": dict(GOOD_HARDWARE["peak_macs_per_s"], int8=0)}, "hardware.peak_macs_per_s.int8"),
    ({"peak_macs_per_s": dict(GOOD_HARDWARE["peak_macs_per_s"], int2=1e9)}, "hardware.peak_macs_per_s.int2"),
    ({"peak_macs_per_s": {"int8": 1e12}}, "hardware.peak_macs_per_s.int4"),
    ({"bandwidth_bytes_per_s": dict(GOOD_HARDWARE["bandwidth_bytes_per_s"], dram="fast")},
     "hardware.bandwidth_bytes_per_s.dram"),
    ({"energy_pj_per_byte": dict(GOOD_HARDWARE["energy_pj_per_byte"], on_chip=-1)}, "hardware.energy_pj_per_byte.on_chip"),
    ({"energy_pj_per_mac": None}, "hardware.energy_pj_per_mac"),
    ({"sources": {"peak": "made up"}}, "hardware.sources"),
    ({"clock_hz": 1e9}, "hardware.clock_hz"),
    ({"fused_softmax": "yes"}, "hardware.fused_softmax"),
])
def test_malformed_hardware_names_the_field(tmp_path, change, field):
    with pytest.raises(SimulatorError) as err:
        load_target(_write(tmp_path, {"name": "x", "hardware": dict(GOOD_HARDWARE, **change)}))
    assert f"'{field}'" in str(err.value)


def test_a_missing_hardware_field_is_named(tmp_path):
    doc = {k: v for k, v in GOOD_HARDWARE.items() if k != "energy_pj_per_byte"}
    with pytest.raises(SimulatorError, match="'hardware.energy_pj_per_byte' is missing"):
        load_target(_write(tmp_path, {"name": "x", "hardware": doc}))


def test_measured_target_is_a_complete_loadable_target():
    """The real micro-benchmark (one timed run each): onnxruntime-cpu's arithmetic, this machine's numbers."""
    from simulator.targets import target_from_dict
    from simulator.targets.measure import measured_target

    doc = measured_target(name="here", repeats=1)
    target = target_from_dict(doc)
    hw = target.hardware
    assert target.name == "here" and target.activations == load_target("onnxruntime-cpu").activations
    assert hw.peak_macs_per_s.int4 == hw.peak_macs_per_s.int8          # no 4-bit unit on a CPU
    assert hw.peak_macs_per_s.fp16 == hw.peak_macs_per_s.fp32 == hw.peak_macs_per_s.shift_add
    assert hw.bandwidth_bytes_per_s.on_chip > hw.bandwidth_bytes_per_s.dram   # in-cache copies are faster
    assert "measured" in hw.sources["peak_macs_per_s"] and "not measured" in hw.sources["energy_pj_per_mac"]
