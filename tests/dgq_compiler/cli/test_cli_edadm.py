"""`dgq calibrate --select` and `dgq reconstruct` on the tiny chain: summaries, recipes the compiler takes, and
bad input as one line with exit code 2 and nothing written."""
from __future__ import annotations

import json

import pytest

from dgq_compiler.cli.main import main


def test_calibrate_select_records_the_selection_and_its_match(tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert main(["calibrate", "tiny", "--select", "1", "--num-prompts", "3", "--steps", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "match: kernel MMD to the pool" in printed and "1 latents per timestep" in printed
    selection = json.loads(out.read_text())["sampling"]["selection"]
    assert selection["pool_per_step"] == 3 and selection["chosen_per_step"] == 1
    assert selection["mean_mmd"] >= 0 and selection["rule"] == "density-diversity"
    assert main(["calibrate", "tiny", "--select", "4", "--num-prompts", "3", "--steps", "2",
                 "-o", str(tmp_path / "x.json")]) == 2
    assert "exceeds the pool" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_reconstruct_writes_a_recipe_with_codes_and_a_block_table(cli_chain, tmp_path, capsys):
    from dgq_compiler.recipe import Recipe

    out = tmp_path / "rec.json"
    argv = ["reconstruct", str(cli_chain["recipe"]), "--model", "tiny", "--num-prompts", "2",
            "--samples-per-step", "1", "--iterations", "3", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "loss (nearest)" in printed and "down_blocks.0.resnets.0" in printed and "total block loss" in printed
    recipe, original = Recipe.load(out), Recipe.load(cli_chain["recipe"])
    assert recipe.tensors.keys() == original.tensors.keys()
    assert any(tq.codes is not None for tq in recipe.tensors.values())
    assert main(argv) == 2  # exists: needs --overwrite
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--samples-per-step", "3"], "exceeds the pool"),
    (["--steps", "3", "--samples-per-step", "1"], "not calibrated at"),
    (["--iterations", "0"], "expected an integer in 1..100000"),
])
def test_reconstruct_bad_input_is_one_line_exit_2(cli_chain, tmp_path, capsys, extra, message):
    out = tmp_path / "bad.json"
    argv = ["reconstruct", str(cli_chain["recipe"]), "--model", "tiny", "--num-prompts", "2", "-o", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()
