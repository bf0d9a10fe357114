"""BOPs (paper / exact) and size formulas on a hand-built inventory, and bit-width parsing."""
import pytest

from simulator.cost.bits import BitWidths, parse_bits
from simulator.cost.bops import exact_bops, paper_bops
from simulator.cost.inventory import CountedOp, Inventory, QuantPoint
from simulator.cost.size import size_report
from simulator.errors import SimulatorError

OPS = (
    CountedOp("conv_in", "conv", macs=1000, outputs=10, full_precision=True),
    CountedOp("down.conv", "conv", macs=2000, outputs=20),
    CountedOp("attn1.to_q", "linear", macs=300, outputs=30),
    CountedOp("attn1", "attn_qk", macs=400, outputs=100, keys=10),
    CountedOp("attn1", "attn_av", macs=400, outputs=40, keys=10),
    CountedOp("attn2", "attn_qk", macs=770, outputs=154, cross=True, keys=77),   # 2 queries x 77 keys, d = 5
    CountedOp("attn2", "attn_av", macs=770, outputs=10, cross=True, keys=77),    # 2 queries x dv 5
)
INVENTORY = Inventory(source="test", model="hand", batch=1, latent=(8, 8), ops=OPS,
                      quantized_weight_elements=1000, weight_channels=10, fp_param_elements=100,
                      points=(QuantPoint("a", "input", 16), QuantPoint("b", "q", 32)))


def test_paper_counts_every_mac_at_wbits_times_abits():
    assert paper_bops(INVENTORY, BitWidths(4, 6)).total == (1000 + 2000 + 300 + 400 + 400 + 770 + 770) * 4 * 6
    assert paper_bops(INVENTORY, BitWidths(4, 6)).parts["attn_av"] == (400 + 770) * 24


def test_exact_prices_each_op_at_its_own_widths():
    b = exact_bops(INVENTORY, BitWidths(4, 6), groups=8)
    assert b.parts["conv"] == 2000 * 4 * 6
    assert b.parts["linear"] == 300 * 4 * 6
    assert b.parts["full_precision"] == 1000 * 32 * 32                  # conv_in stays FP
    assert b.parts["attn_qk"] == (400 + (770 - 770 // 77)) * 6 * 6      # activation x activation, minus <start>
    assert b.parts["attn_av"] == 0                                       # log-coded: no multiplies
    assert b.parts["start_token"] == (770 // 77 + 770 // 77) * 32 * 32  # QK^T column 0 and A[:, 0] x V[0]
    rescales = (20 + 30) * 8 + 100 * 8 + (154 - 2) * 8 + (40 + 10) * 1
    assert b.parts["rescale"] == rescales * 32 * 32
    assert b.rescale_overhead_bops == ((20 + 30) * 7 + 100 * 7 + 152 * 7) * 32 * 32
    assert b.shift_adds == 400 + 770 - 10 and b.shift_add_bops == b.shift_adds * 6
    assert b.total == sum(b.parts.values())


def test_exact_equals_paper_at_full_precision_and_grows_with_groups():
    fp = BitWidths(32, 32)
    assert exact_bops(INVENTORY, fp, groups=16).total == paper_bops(INVENTORY, fp).total
    assert exact_bops(INVENTORY, fp, groups=16).shift_adds == 0
    g8, g16 = (exact_bops(INVENTORY, BitWidths(8, 8), groups=g) for g in (8, 16))
    assert g16.total - g8.total == ((20 + 30) + 100 + 152) * 8 * 32 * 32


def test_model_size_and_qparams():
    s = size_report(INVENTORY, BitWidths(4, 8), groups=8, steps=25)
    assert (s.quantized_weight_bytes, s.fp_param_bytes, s.model_size_bytes) == (1000 * 4 // 8, 400, 900)
    assert s.weight_scale_bytes == 10 * (32 + 4) // 8                   # float32 scale + 4-bit zero point
    assert s.activation_table_bytes == 2 * 25 * 8 * (32 + 8) // 8        # [T, G] scales + zero points, 2 points
    assert s.group_map_bytes == (16 + 32) * 25 * 3 // 8                  # 3-bit index per channel per step
    assert s.qparam_bytes == s.weight_scale_bytes + s.activation_table_bytes + s.group_map_bytes
    shared = size_report(INVENTORY, BitWidths(4, 8), groups=8, steps=25, shared_group_map=True)
    assert shared.group_map_bytes == (16 + 32) * 3 // 8
    assert size_report(INVENTORY, BitWidths(8, 8), groups=1, steps=25).group_map_bytes == 0
    fp32 = size_report(INVENTORY, BitWidths(32, 32), groups=8, steps=25)
    assert (fp32.model_size_bytes, fp32.qparam_bytes) == (1100 * 4, 0)


@pytest.mark.parametrize("text, expected", [("W8A6", (8, 6)), ("w4a8", (4, 8)), ("W32A32", (32, 32)),
                                            ("W16A8", (16, 8))])
def test_parse_bits_accepts_the_supported_widths(text, expected):
    bits = parse_bits(text)
    assert (bits.weight, bits.activation) == expected


@pytest.mark.parametrize("text", ["W5A8", "W8A7", "W8", "8/8", "W8A64", "A8W8", ""])
def test_parse_bits_rejects_anything_else(text):
    with pytest.raises(SimulatorError, match="unknown bit width"):
        parse_bits(text)
