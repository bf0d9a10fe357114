"""The ILP bit allocation: budgets respected, the optimum found where a greedy choice is not."""
import itertools

import pytest

from dgq_compiler.errors import DgqError
from dgq_compiler.mixdq.allocate import Allocation, Budget, achieved, allocate, objective, random_allocation
from dgq_compiler.mixdq.sensitivity import LayerSensitivity, SensitivityTable


def _table(rows):
    """rows: (params, macs, S_w4, S_w8, S_a6, S_a8)."""
    layers = tuple(LayerSensitivity(f"layer{i}", "content", p, m, {"4": w4, "8": w8}, {"6": a6, "8": a8})
                   for i, (p, m, w4, w8, a6, a8) in enumerate(rows))
    return SensitivityTable("test", "0" * 64, "mixdq-w4a8", 4, 2, layers, {"content": 1.0, "alignment": 1.0})


# A knapsack a greedy (sensitivity per parameter) choice gets wrong: layer0 has the best ratio (4/400 bits), but
# widening it leaves no room; widening layers 1 and 2 (2.5 + 2.5 within the same 600 extra bits) is optimal.
KNAPSACK = _table([(100, 10, 4.0, 0.0, 0.0, 0.0), (75, 10, 2.5, 0.0, 0.0, 0.0), (75, 10, 2.5, 0.0, 0.0, 0.0)])


def test_ilp_picks_the_known_optimum_and_respects_the_size_budget():
    allocation = allocate(KNAPSACK, Budget(weight_bits=6.4))
    assert allocation.layers == {"layer0": (4, 8), "layer1": (8, 8), "layer2": (8, 8)}
    assert allocation.objective == pytest.approx(4.0)
    assert allocation.achieved["weight_bits"] == pytest.approx(6.4) and allocation.achieved["weight_bits"] <= 6.4 + 1e-9
    # brute force over every assignment agrees
    best = min(sum(s for s, w in zip((4.0, 2.5, 2.5), ws) if w == 4)
               for ws in itertools.product((4, 8), repeat=3)
               if sum(p * w for p, w in zip((100, 75, 75), ws)) <= 6.4 * 250)
    assert allocation.objective == pytest.approx(best)


@pytest.mark.parametrize("bits, wide", [(4.0, 0), (5.0, 0), (6.0, 1), (8.0, 3)])
def test_size_budget_sweeps_from_all_narrow_to_all_wide(bits, wide):
    allocation = allocate(KNAPSACK, Budget(weight_bits=bits))
    assert sum(w == 8 for w, _a in allocation.layers.values()) == wide
    assert allocation.achieved["weight_bits"] <= bits + 1e-9


def test_activation_and_bops_budgets_choose_input_widths():
    # layer0 is cheap in MACs but sensitive at A6; layer1 is MAC-heavy and insensitive: it takes A6
    table = _table([(10, 100, 0.0, 0.0, 9.0, 0.0), (10, 900, 0.0, 0.0, 1.0, 0.0)])
    allocation = allocate(table, Budget(act_bits=7.0))
    assert allocation.layers == {"layer0": (8, 8), "layer1": (8, 6)}
    assert allocation.achieved["act_bits"] == pytest.approx((100 * 8 + 900 * 6) / 1000)
    bops = allocate(table, Budget(bops_per_mac=40.0))  # w x a per MAC <= 40 forces the heavy layer down
    assert bops.achieved["bops_per_mac"] <= 40.0 + 1e-9
    assert bops.layers["layer0"] == (8, 8)


def test_bad_budgets_are_clear_errors():
    with pytest.raises(DgqError, match="weight_bits must be in 4..8"):
        Budget(weight_bits=3.0)
    with pytest.raises(DgqError, match="bops_per_mac must be in 24..64"):
        Budget(bops_per_mac=20.0)


def test_random_allocation_is_no_larger_and_no_better_than_the_ilp(tmp_path):
    rows = [(10 * (i + 1), 50, 1.0 / (i + 1), 0.0, 0.0, 0.0) for i in range(12)]
    table = _table(rows)
    best = allocate(table, Budget(weight_bits=5.0))
    for seed in range(5):
        rand = random_allocation(table, best, seed=seed)
        assert rand.achieved["weight_bits"] <= best.achieved["weight_bits"] + 1e-9
        assert rand.objective >= best.objective - 1e-12
        assert rand.objective == pytest.approx(objective(table, rand.layers))
        assert achieved(table, rand.layers) == rand.achieved
    assert random_allocation(table, best, seed=1).layers == random_allocation(table, best, seed=1).layers
    path = best.save(tmp_path / "alloc.json")
    loaded = Allocation.load(path)
    assert loaded == best and path.read_bytes() == best.save(tmp_path / "again.json").read_bytes()
    with pytest.raises(DgqError, match="exists"):
        best.save(path)
    path.write_text(path.read_text().replace('"weight_bits": 8', '"weight_bits": 6', 1))
    with pytest.raises(DgqError, match="W6A8"):
        Allocation.load(path)


def test_random_allocation_widens_every_layer_it_can():
    """Every layer is offered a wider width: at the full budget the random draw is all W8, at the narrowest all W4."""
    table = _table([(10 * (i + 1), 50, 1.0, 0.0, 0.0, 0.0) for i in range(8)])
    for seed in range(3):
        assert set(random_allocation(table, allocate(table, Budget(weight_bits=8.0)), seed).layers.values()) == {(8, 8)}
        assert set(random_allocation(table, allocate(table, Budget(weight_bits=4.0)), seed).layers.values()) == {(4, 8)}


# FP as a width: layer0 is small (10 parameters) and sensitive at both integer widths, layer1 large and nearly
# insensitive. At 5 bits per parameter (5050 bits) layer0 fits at 32 bits (320 + 1000 x 4 = 4320): FP is optimal.
FP_CASE = _table([(10, 100, 10.0, 5.0, 0.0, 0.0), (1000, 100, 1.0, 0.0, 0.0, 0.0)])
FP = (32, 32)


def _brute_force(table, budget_bits, choices):
    params = [layer.params for layer in table.layers]
    best = None
    for pick in itertools.product(choices, repeat=len(params)):
        if sum(p * w for p, (w, _a) in zip(params, pick)) > budget_bits * sum(params):
            continue
        value = sum(0.0 if c == FP else layer.weight[str(c[0])] + layer.act[str(c[1])]
                    for layer, c in zip(table.layers, pick))
        best = value if best is None else min(best, value)
    return best


def test_ilp_leaves_a_layer_fp_where_that_is_the_optimum_counting_it_at_32_bits():
    with_fp = allocate(FP_CASE, Budget(weight_bits=5.0, fp=True))
    assert with_fp.layers == {"layer0": FP, "layer1": (4, 8)}
    assert with_fp.objective == pytest.approx(1.0)
    assert with_fp.achieved["weight_bits"] == pytest.approx((10 * 32 + 1000 * 4) / 1010)  # 4.28 <= 5
    assert with_fp.achieved["act_bits"] == pytest.approx((100 * 32 + 100 * 8) / 200)  # FP inputs at 32 bits
    assert with_fp.objective == pytest.approx(_brute_force(FP_CASE, 5.0, [(4, 8), (8, 8), FP]))
    # without the opt-in the same budget gives W8 (the old behaviour), and FP never breaks a budget it does not fit
    assert allocate(FP_CASE, Budget(weight_bits=5.0)).layers == {"layer0": (8, 8), "layer1": (4, 8)}
    tight = allocate(FP_CASE, Budget(weight_bits=4.1, fp=True))  # 4141 bits: FP layer0 (4320) does not fit
    assert tight.layers["layer0"] == (8, 8) and tight.achieved["weight_bits"] <= 4.1 + 1e-9
    for bits in (4.0, 4.3, 4.6, 5.0, 6.0, 8.0):
        alloc = allocate(FP_CASE, Budget(weight_bits=bits, fp=True))
        assert alloc.achieved["weight_bits"] <= bits * (1 + 1e-9)
        assert alloc.objective == pytest.approx(_brute_force(FP_CASE, bits, [(4, 8), (8, 8), FP]))


def test_fp_allocations_round_trip_and_are_refused_where_fp_is_not_allowed(tmp_path):
    from dgq_compiler.mixdq.compose import check_allocation
    from dgq_compiler.config import preset

    with_fp = allocate(FP_CASE, Budget(weight_bits=5.0, fp=True))
    path = with_fp.save(tmp_path / "fp.json")
    assert Allocation.load(path) == with_fp and '"fp": true' in path.read_text()
    plain = allocate(FP_CASE, Budget(weight_bits=5.0)).save(tmp_path / "plain.json")
    assert '"fp"' not in plain.read_text()  # allocations without FP are written as before the option existed
    path.write_text(path.read_text().replace('"fp": true', '"fp": false'))
    with pytest.raises(DgqError, match="W32A32"):
        Allocation.load(path)

    class Stats:
        config_sha256 = "0" * 64

    check_allocation(with_fp, Stats(), preset("mixdq-w5a8-fp"))
    with pytest.raises(DgqError, match="does not allow FP layers"):
        check_allocation(with_fp, Stats(), preset("mixdq-w5a8"))
    rand = random_allocation(FP_CASE, with_fp, seed=0)  # the random baseline: integer widths, no larger
    assert FP not in rand.layers.values() and rand.achieved["weight_bits"] <= with_fp.achieved["weight_bits"] + 1e-9
