"""One chain of CLI artefacts on the tiny model (export -> calibrate -> quantize -> compile), made through
`dgq`'s own main() in-process, shared by the fuzz and determinism tests."""
from __future__ import annotations

import pytest

from dgq_compiler.cli.main import main

CALIBRATE = ["--num-prompts", "1", "--steps", "2"]


def make_chain(root) -> dict:
    """Run the four stages into `root`; returns the paths of their artefacts."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"export": root / "export", "stats": root / "stats.json", "recipe": root / "recipe.json",
             "compiled": root / "compiled"}
    steps = [["export", "tiny", "-o", str(paths["export"])],
             ["calibrate", "tiny", "-o", str(paths["stats"]), *CALIBRATE],
             ["quantize", str(paths["stats"]), "-o", str(paths["recipe"])],
             ["compile", str(paths["export"]), "--recipe", str(paths["recipe"]), "-o", str(paths["compiled"]),
              "--check-points", "no"]]
    for argv in steps:
        assert main(argv) == 0, argv
    return paths


@pytest.fixture(scope="session")
def cli_chain(tmp_path_factory):
    return make_chain(tmp_path_factory.mktemp("chain") / "a")


@pytest.fixture(scope="session")
def chain_maker():
    """make_chain, for tests that need a second, independent run."""
    return make_chain
