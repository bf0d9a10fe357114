"""`dgq run --quick / --latent-size / --device`: what is shortened, and that the report says so."""
import pytest

from dgq_compiler.errors import DgqError
from dgq_compiler.report.markdown import _shortened
from dgq_compiler.run import QUICK, RunOptions, shortened


def test_quick_replaces_only_the_options_left_at_their_defaults():
    options, changes = shortened(RunOptions(quick=True, steps=6, latent_size=32))
    assert options.steps == 6 and "steps" not in changes  # given explicitly: kept
    assert options.num_prompts == QUICK["num_prompts"] and options.presets == ("dgq-w8a8-g8",)
    assert options.num_images == 1 and options.verify_timesteps == 1 and options.latent_size == 32
    assert changes["num_images"] == {"full": 4, "quick": 1}
    assert changes["num_prompts"] == {"full": "all", "quick": 2}


def test_without_quick_nothing_is_shortened():
    options = RunOptions(steps=6)
    assert shortened(options) == (options, {})
    assert _shortened({}) == []


def test_the_report_names_every_shortened_option():
    _, changes = shortened(RunOptions(quick=True))
    text = " ".join(_shortened(changes))
    for words in ("num prompts 2", "steps 4 (full run: 25)", "num images 1 (full run: 4)",
                  "presets dgq-w8a8-g8 (full run: 8)", "verify timesteps 1"):
        assert words in text


@pytest.mark.parametrize("size", [0, 12])
def test_latent_size_must_be_a_multiple_of_8(size):
    with pytest.raises(DgqError, match=f"--latent-size must be a positive multiple of 8, got {size}"):
        RunOptions(latent_size=size)


def test_run_cli_has_the_real_size_flags(capsys):
    from dgq_compiler.cli.main import main

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--latent-size" in out and "--device" in out
