"""dgq sensitivity -> dgq allocate -> dgq quantize --allocation on the tiny chain; bad input is one line, exit 2."""
from __future__ import annotations

import json

import pytest

from dgq_compiler.cli.main import main
from dgq_compiler.recipe import Recipe


@pytest.fixture(scope="module")
def table(cli_chain, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixdq")
    path, figure = out / "sensitivity.json", out / "sensitivity.png"
    assert main(["sensitivity", str(cli_chain["stats"]), "--model", "tiny", "--num-prompts", "1", "--calls", "2",
                 "--steps", "2", "-o", str(path), "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 0
    doc = json.loads(path.read_text())  # an A8 budget: weights measured, inputs recorded as 0
    assert doc["measured"] == ["weight"] and all(layer["act"] == {"6": 0.0, "8": 0.0} for layer in doc["layers"])
    assert sum(layer["weight"]["4"] for layer in doc["layers"]) > 0
    return path


def test_allocate_then_quantize_gives_a_recipe_with_the_allocated_widths(table, cli_chain, tmp_path, capsys):
    allocation, front = tmp_path / "allocation.json", tmp_path / "front.png"
    assert main(["allocate", str(table), "--preset", "mixdq-w5a8", "-o", str(allocation), "--front", str(front)]) == 0
    assert "total sensitivity" in capsys.readouterr().out and front.stat().st_size > 0
    doc = json.loads(allocation.read_text())
    assert doc["achieved"]["weight_bits"] <= 5.0 + 1e-9 and doc["method"] == "ilp"
    recipe_path = tmp_path / "recipe.json"
    assert main(["quantize", str(cli_chain["stats"]), "--preset", "mixdq-w5a8", "--allocation", str(allocation),
                 "-o", str(recipe_path)]) == 0
    recipe = Recipe.load(recipe_path)
    for module, widths in doc["layers"].items():
        assert recipe.tensors[(module, "weight")].bits == widths["weight_bits"]
        assert recipe.tensors[(module, "input")].bits == widths["act_bits"]
    assert {tq.bits for (_m, r), tq in recipe.tensors.items() if r == "weight"} == {4, 8}
    text = [tq for (m, r), tq in recipe.tensors.items() if r == "input" and m.endswith(("attn2.to_k", "attn2.to_v"))]
    assert text and all(tq.exclude_bos for tq in text)
    random_path = tmp_path / "random.json"
    assert main(["allocate", str(table), "--preset", "mixdq-w5a8", "--random", "3", "-o", str(random_path)]) == 0
    rand = json.loads(random_path.read_text())
    assert rand["method"] == "random" and rand["achieved"]["weight_bits"] <= doc["achieved"]["weight_bits"] + 1e-9
    assert rand["objective"] >= doc["objective"] - 1e-12


@pytest.mark.parametrize("argv, words", [
    (["allocate", "{table}", "-o", "{tmp}/a.json"], "no budget"),
    (["allocate", "{table}", "--preset", "dgq-w8a8-g8", "-o", "{tmp}/a.json"], "mixed-precision preset"),
    (["allocate", "{table}", "--weight-bits", "9", "-o", "{tmp}/a.json"], "weight_bits must be in 4..8"),
    (["allocate", "{table}", "--preset", "mixdq-w5a8", "--fp", "-o", "{tmp}/a.json"], "choose a -fp preset"),
    (["allocate", "{tmp}/missing.json", "--weight-bits", "5", "-o", "{tmp}/a.json"], "not found"),
    (["quantize", "{stats}", "--preset", "mixdq-w5a8", "-o", "{tmp}/r.json"], "needs a bit allocation"),
    (["sensitivity", "{stats}", "--calls", "0", "-o", "{tmp}/s.json"], "--calls must be in 1..100"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, words, table, cli_chain, tmp_path, capsys):
    argv = [a.format(table=table, tmp=tmp_path, stats=cli_chain["stats"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "r.json").exists()


def test_an_fp_allocation_quantizes_to_a_recipe_without_quantizers_on_its_fp_layers(table, cli_chain, tmp_path,
                                                                                       capsys):
    from dgq_compiler.mixdq.allocate import Allocation, Budget, allocate
    from dgq_compiler.mixdq.sensitivity import SensitivityTable

    sens = SensitivityTable.load(table)
    best = allocate(sens, Budget(weight_bits=5.0, fp=True))
    by_cli = tmp_path / "cli.json"
    assert main(["allocate", str(table), "--weight-bits", "5", "--fp", "-o", str(by_cli)]) == 0
    assert "FP layers allowed" in capsys.readouterr().out
    assert Allocation.load(by_cli) == best and json.loads(by_cli.read_text())["budget"]["fp"] is True
    fp_layers = sorted(best.layers)[:2]  # two layers left FP by hand (the ILP's choice depends on the table)
    layers = {m: (32, 32) if m in fp_layers else w for m, w in best.layers.items()}
    allocation = Allocation(best.model_name, best.config_sha256, "ilp", best.budget, layers, 0.0, best.achieved)
    path = allocation.save(tmp_path / "fp.json")
    recipe_path = tmp_path / "recipe.json"
    assert main(["quantize", str(cli_chain["stats"]), "--preset", "mixdq-w5a8-fp", "--allocation", str(path),
                 "-o", str(recipe_path)]) == 0
    recipe = Recipe.load(recipe_path)
    assert set(fp_layers) <= set(recipe.fp_modules) and recipe.config.mixed_fp
    assert not [key for key in recipe.tensors if key[0] in fp_layers]
    assert {(m, r) for m in set(layers) - set(fp_layers) for r in ("weight", "input")} <= set(recipe.tensors)
    capsys.readouterr()
    assert main(["quantize", str(cli_chain["stats"]), "--preset", "mixdq-w5a8", "--allocation", str(path),
                 "-o", str(tmp_path / "refused.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not allow FP layers" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "refused.json").exists()
