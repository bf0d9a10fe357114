"""Bytes moved, roofline latency and energy, checked by hand on a single Conv and a single MatMul."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from simulator.cost import load_inventory
from simulator.cost.bits import BitWidths
from simulator.cost.inventory import CountedOp, Inventory, QuantPoint
from simulator.cost.macs_from_graph import inventory_from_graph
from simulator.cost.roofline import ON_CHIP_PARTS, dram_bytes, estimate, op_estimates
from simulator.cost.traffic import op_traffic, unit_for
from simulator.errors import SimulatorError
from simulator.targets import load_target, target_from_dict

HARDWARE = {
    "peak_macs_per_s": {"int4": 2e9, "int8": 1e9, "fp16": 5e8, "fp32": 1e8, "shift_add": 1e9},
    "bandwidth_bytes_per_s": {"dram": 5e7, "on_chip": 1e9},
    "buffer_bytes": 1 << 20,
    "energy_pj_per_mac": {"int4": 0.25, "int8": 0.5, "fp16": 2.0, "fp32": 4.0, "shift_add": 0.1},
    "energy_pj_per_byte": {"dram": 100.0, "on_chip": 10.0},
}
TARGET = target_from_dict({"name": "hand", "hardware": HARDWARE})


def _save(path, nodes, inputs, inits):
    graph = helper.make_graph(nodes, "one", inputs, [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, None)],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


def _conv_graph(tmp_path):
    """sample [1, 8, 16, 16] -> 3x3 conv, 16 output channels, pad 1 -> [1, 16, 16, 16]."""
    w = numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["sample", "w"], ["out_sample"], "/unet/down/conv/Conv", pads=[1, 1, 1, 1])
    return _save(tmp_path / "conv.onnx", [node], [helper.make_tensor_value_info("sample", TensorProto.FLOAT,
                                                                                [1, 8, 16, 16])], [w])


def _matmul_graph(tmp_path):
    """sample [1, 1, 64, 32] x weight [32, 48] -> [1, 1, 64, 48] (a Linear)."""
    w = numpy_helper.from_array(np.ones((32, 48), np.float32), "w")
    node = helper.make_node("MatMul", ["sample", "w"], ["out_sample"], "/unet/mid/proj/MatMul")
    return _save(tmp_path / "mm.onnx", [node], [helper.make_tensor_value_info("sample", TensorProto.FLOAT,
                                                                              [1, 1, 64, 32])], [w])


def test_single_conv_w8a8_g4_by_hand(tmp_path):
    inv = inventory_from_graph(_conv_graph(tmp_path))
    [op] = op_estimates(inv, "W8A8", 4, TARGET.hardware)
    macs = 16 * 16 * 16 * (8 * 3 * 3)               # 294,912 int8 MACs
    rescales = 16 * 16 * 16 * 4                     # one fp32 multiply-add per output and group
    assert op.macs == macs + rescales
    weights, inputs, outputs = 16 * 8 * 9, 8 * 16 * 16, 16 * 16 * 16 * 4      # bytes: int8, uint8 codes, fp32
    qparams = 16 * (4 + 1) + 4 * (4 + 1) + 8 * 2 // 8   # weight scale+zero per channel; G scale+zero; 2-bit map
    assert op.dram_bytes == weights + inputs + outputs + qparams == 19686
    partial_sums = 16 * 16 * 16 * 4 * 4 * 2         # N x G int32, written and read back
    assert op.on_chip_bytes == 19686 + partial_sums
    compute_s = macs / 1e9 + rescales / 1e8
    assert op.compute_s == pytest.approx(4.58752e-4) == pytest.approx(compute_s)
    assert op.dram_s == pytest.approx(19686 / 5e7) and op.on_chip_s == pytest.approx(150758 / 1e9)
    assert op.bound == "compute" and op.latency_s == pytest.approx(compute_s)
    assert op.compute_j == pytest.approx((macs * 0.5 + rescales * 4.0) * 1e-12)
    assert op.dram_j == pytest.approx(19686 * 100e-12) and op.on_chip_j == pytest.approx(150758 * 10e-12)
    assert op.parts == {"weights": weights, "activations_in": inputs, "activations_out": outputs, "qparams": qparams,
                        "start_token": 0, "rereads": 0, "partial_sums": partial_sums, "fused_logits": 0}


def test_single_matmul_w4a6_g2_is_memory_bound_by_hand(tmp_path):
    inv = inventory_from_graph(_matmul_graph(tmp_path))
    [op] = op_estimates(inv, "W4A6", 2, TARGET.hardware)
    macs, rescales = 64 * 48 * 32, 64 * 48 * 2       # 6-bit x 4-bit operands run on the int8 unit
    weights = 32 * 48 * 4 // 8                       # packed INT4: 768 B
    inputs = 64 * 32 * 6 // 8                        # 6-bit codes: 1536 B
    outputs = 64 * 48 * 4
    qparams = 48 * (32 + 4) // 8 + -(-2 * (32 + 6) // 8) + 32 * 1 // 8   # 216 + 10 + 4
    assert op.dram_bytes == weights + inputs + outputs + qparams == 14822
    assert op.on_chip_bytes == 14822 + 64 * 48 * 2 * 4 * 2
    assert op.compute_s == pytest.approx(macs / 1e9 + rescales / 1e8)          # 1.597e-4 s
    assert op.bound == "dram" and op.latency_s == pytest.approx(14822 / 5e7)  # 2.964e-4 s
    assert op.intensity == pytest.approx((macs + rescales) / 14822)
    assert op.compute_j + op.dram_j + op.on_chip_j == pytest.approx(
        (macs * 0.5 + rescales * 4.0 + 14822 * 100 + 63974 * 10) * 1e-12)


def test_fp32_moves_four_bytes_per_element_and_runs_on_fp32(tmp_path):
    inv = inventory_from_graph(_matmul_graph(tmp_path))
    [op] = op_estimates(inv, "W32A32", 1, TARGET.hardware)
    assert op.dram_bytes == (64 * 32 + 32 * 48 + 64 * 48) * 4 and op.on_chip_bytes == op.dram_bytes
    assert op.compute_s == pytest.approx(64 * 48 * 32 / 1e8) and op.bound == "compute"


def test_a_small_buffer_rereads_the_larger_operand(tmp_path):
    [op] = inventory_from_graph(_conv_graph(tmp_path)).ops
    traffic = op_traffic(op, BitWidths(8, 8), 1, [8])
    assert dram_bytes(traffic, 1 << 20) == traffic.compulsory_bytes
    # 2048 B buffer: the 1152 B weight is held in 1024 B chunks -> 2 passes over the 2048 B input
    assert dram_bytes(traffic, 2048) == traffic.compulsory_bytes + 2048


def test_cross_attention_start_branch_stays_fp():
    """A.V over 4 keys (key 0 = <start>), 2 heads x batch slices, 3 queries, dv = 5."""
    op = CountedOp("attn2", "attn_av", macs=2 * 3 * 5 * 4, outputs=2 * 3 * 5, cross=True, keys=4,
                   a_elements=2 * 3 * 4, b_elements=2 * 4 * 5, slices=2)
    t = op_traffic(op, BitWidths(8, 8), 8, [5])
    assert t.a_bytes == 2 * 3 * 3 and t.b_bytes == 2 * 3 * 5        # log codes, v codes without key 0
    assert t.start_bytes == (2 * 3 + 2 * 5) * 4                     # probability column 0 and v row 0 in fp32
    assert t.macs == {"fp32": 2 * 3 * 5 + 2 * 3 * 5, "shift_add": 2 * 3 * 5 * 3}   # <start> + one rescale each
    assert t.partial_sum_bytes == 0                                  # one accumulator: no split-K
    assert t.qparam_bytes == 8 * 5 + 5 * 3 // 8 + 1                  # G scale+zero rows; 3-bit map of 5 channels


def test_unit_follows_the_widest_operand():
    assert [unit_for(4, 4), unit_for(4, 6), unit_for(8, 8), unit_for(16, 8), unit_for(32, 8)] == \
        ["int4", "int8", "int8", "fp16", "fp32"]


def test_step_and_image_totals(tmp_path):
    inv = inventory_from_graph(_conv_graph(tmp_path))
    e = estimate(inv, "W8A8", 4, TARGET, steps=25)
    [op] = op_estimates(inv, "W8A8", 4, TARGET.hardware)
    assert e.step_latency_s == op.latency_s and e.image_latency_s == pytest.approx(25 * op.latency_s)
    assert e.step_data_j == pytest.approx(op.dram_j + op.on_chip_j)
    assert e.image_energy_j == pytest.approx(25 * (op.compute_j + op.dram_j + op.on_chip_j))
    assert e.compute_bound_share == 1.0 and e.by_kind["conv"]["ops"] == 1
    assert sum(v for k, v in e.step_bytes.items() if k not in ON_CHIP_PARTS) == e.step_dram_bytes
    assert e.step_bytes["partial_sums"] == e.step_on_chip_bytes - e.step_dram_bytes


def test_lower_bits_move_fewer_bytes_and_groups_cost_partial_sums():
    inv = load_inventory("tiny")
    npu = load_target("generic-npu")
    fp, w8, w4, w4g16 = (estimate(inv, b, g, npu, 25) for b, g in
                         (("W32A32", 1), ("W8A8", 8), ("W4A6", 8), ("W4A6", 16)))
    assert fp.step_dram_bytes > w8.step_dram_bytes > w4.step_dram_bytes
    assert w4g16.step_on_chip_bytes - w4g16.step_dram_bytes > w4.step_on_chip_bytes - w4.step_dram_bytes
    assert fp.step_compute_j > w8.step_compute_j


def test_a_target_without_hardware_numbers_is_refused(tmp_path):
    inv = inventory_from_graph(_conv_graph(tmp_path))
    with pytest.raises(SimulatorError, match="no `hardware` section"):
        estimate(inv, "W8A8", 8, target_from_dict({"name": "bare"}), steps=25)


def test_fused_softmax_keeps_the_logits_on_chip():
    """Cross-attention QK^T: 2 slices x 3 queries x 4 keys (key 0 = <start>), d = 5, W8A6, G = 1."""
    op = CountedOp("attn2", "attn_qk", macs=2 * 3 * 4 * 5, outputs=2 * 3 * 4, cross=True, keys=4,
                   a_elements=2 * 3 * 5, b_elements=2 * 5 * 4, slices=2)
    plain = op_traffic(op, BitWidths(8, 6), 1, [5, 5])
    fused = op_traffic(op, BitWidths(8, 6), 1, [5, 5], fused_softmax=True)
    assert plain.output_bytes == 24 * 4 and plain.fused_logit_bytes == 0           # FP32 logits to DRAM
    assert fused.output_bytes == -(-18 * 6 // 8) + 6 * 4                           # 6-bit codes + FP <start> column
    assert fused.fused_logit_bytes == 24 * 4 * 2 and fused.macs == plain.macs
    hw = target_from_dict({"name": "f", "hardware": dict(HARDWARE, fused_softmax=True)}).hardware
    [estimate_fused] = [o for o in op_estimates(
        Inventory(source="t", model="t", batch=2, latent=(1, 1), ops=(op,), quantized_weight_elements=0,
                  weight_channels=0, fp_param_elements=0,
                  points=(QuantPoint("attn2", "q", 5), QuantPoint("attn2", "k", 5))), "W8A6", 1, hw)]
    assert estimate_fused.dram_bytes == fused.compulsory_bytes
    assert estimate_fused.on_chip_bytes == fused.compulsory_bytes + 24 * 4 * 2


def test_compiled_widths_cost_each_layer_at_its_own_width():
    """A compiled graph's per-layer widths (MixDQ) replace the configuration's only when asked (`compiled`)."""
    linear = dict(kind="linear", macs=64 * 48 * 32, outputs=64 * 48, a_elements=64 * 32, b_elements=32 * 48)
    w4 = CountedOp("mid.proj", weight_bits=4, act_bits=8, **linear)
    plain = CountedOp("mid.proj", **linear)
    as_w4a8 = op_traffic(plain, BitWidths(4, 8), 1, [32])
    assert op_traffic(w4, BitWidths(8, 8), 1, [32], compiled=True) == as_w4a8
    assert op_traffic(w4, BitWidths(8, 8), 1, [32]) == op_traffic(plain, BitWidths(8, 8), 1, [32])
    assert as_w4a8.b_bytes == 32 * 48 // 2 and as_w4a8.macs == {"int8": 64 * 48 * 32, "fp32": 64 * 48}


def test_compiled_fp_start_row_runs_on_the_fp32_unit():
    """A BOS-aware text embedding keeps the <start> row of to_k / to_v FP: those MACs are fp32 ones."""
    op = CountedOp("attn2.to_k", "linear", macs=77 * 64 * 32, outputs=77 * 64, a_elements=77 * 32,
                   b_elements=32 * 64, weight_bits=8, act_bits=8, fp_macs=64 * 32)
    t = op_traffic(op, BitWidths(8, 8), 1, [32], compiled=True)
    assert t.macs == {"int8": 76 * 64 * 32, "fp32": 64 * 32 + 77 * 64}   # <start> row + one rescale per output
    assert op_traffic(op, BitWidths(8, 8), 1, [32]).macs["int8"] == 77 * 64 * 32


def test_compiled_inventory_estimate_differs_from_its_uniform_label():
    ops = (CountedOp("a", "linear", macs=4096, outputs=64, a_elements=64, b_elements=4096, weight_bits=4, act_bits=8),
           CountedOp("b", "linear", macs=4096, outputs=64, a_elements=64, b_elements=4096, weight_bits=8, act_bits=8))
    inv = Inventory("graph", "two", 1, (8, 8), ops, 8192, 128, 0)
    mixed = estimate(inv, "W8A8", 1, TARGET, steps=1, compiled=True)
    uniform = estimate(inv, "W8A8", 1, TARGET, steps=1)
    assert mixed.step_bytes["weights"] == 4096 // 2 + 4096 and uniform.step_bytes["weights"] == 2 * 4096
    assert mixed.step_latency_s < uniform.step_latency_s
