"""The report's roofline figure and latency/energy table."""
import pytest

from dgq_compiler.report.roofline import (TABLE_HEADERS, _by_kind, latency_energy_table, preset_configs,
                                          roofline_summary)
from simulator.cost import load_inventory
from simulator.cost.roofline import estimate, op_estimates
from simulator.targets import load_target

CONFIGS = {"FP32": ("W32A32", 1), "dgq-w8a8-g8": ("W8A8", 8), "dgq-w4a6-g16": ("W4A6", 16)}


@pytest.fixture(scope="module")
def tiny():
    return load_inventory("tiny")


def test_summary_draws_the_figure_and_tabulates_every_configuration(tmp_path, tiny):
    s = roofline_summary(tiny, CONFIGS, tmp_path / "roofline.png", steps=10)
    assert (tmp_path / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and s["figure"] == "roofline.png"
    assert s["headers"] == TABLE_HEADERS and [r[0] for r in s["rows"]] == list(CONFIGS)
    npu = load_target("generic-npu")
    for row in s["rows"]:
        e = estimate(tiny, *CONFIGS[row[0]], npu, 10)
        assert row[1] == round(e.step_latency_s * 1e3, 3) and row[2] == round(10 * e.step_latency_s, 3)
        assert row[3] == round(e.step_energy_j * 1e3, 2)
    assert s["estimates"]["FP32"]["step_dram_bytes"] > s["estimates"]["dgq-w4a6-g16"]["step_dram_bytes"]


def test_one_point_per_op_kind_from_the_ops_of_that_kind(tiny):
    ops = op_estimates(tiny, "W8A8", 8, load_target("generic-npu").hardware)
    points = _by_kind(ops)
    assert set(points) == {op.kind for op in ops} and len(points) < len(ops)
    convs = [op for op in ops if op.kind == "conv"]
    x, y = points["conv"]
    assert x == pytest.approx(sum(o.macs for o in convs) / sum(o.dram_bytes for o in convs))
    assert y == pytest.approx(sum(o.macs for o in convs) / sum(o.latency_s for o in convs))


def test_table_rows_split_energy_into_compute_and_data_movement(tiny):
    e = estimate(tiny, "W4A6", 8, load_target("generic-npu"), 25)
    headers, [row] = latency_energy_table({"w4a6": e})
    values = dict(zip(headers, row))
    assert values["step mJ"] == pytest.approx(values["compute mJ"] + values["data movement mJ"], abs=0.02)
    assert 0 < values["data movement %"] < 100


def test_preset_configs_name_fp32_and_each_preset_with_its_widths_and_groups():
    assert preset_configs(["dgq-w4a6-g16", "tfmq-w8a8"]) == {
        "FP32": ("W32A32", 1), "dgq-w4a6-g16": ("W4A6", 16), "tfmq-w8a8": ("W8A8", 1)}
