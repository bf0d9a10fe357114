"""One chain of CLI artefacts on the tiny model (export -> calibrate -> quantize -> compile), made through
`dgq`'s own main() in-process, shared by the fuzz, determinism and usability tests."""
from __future__ import annotations

import shutil

import pytest

from dgq_compiler.cli.main import main

CALIBRATE = ["--num-prompts", "1", "--steps", "2"]


def make_chain(root, export_from=None) -> dict:
    """Run the four stages into `root` (the export copied from `export_from`, the session's API export of the
    same tiny model, when given); returns the paths of the artefacts."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"export": root / "export", "stats": root / "stats.json", "recipe": root / "recipe.json",
             "compiled": root / "compiled"}
    steps = [["calibrate", "tiny", "-o", str(paths["stats"]), *CALIBRATE],
             ["quantize", str(paths["stats"]), "-o", str(paths["recipe"])],
             ["compile", str(paths["export"]), "--recipe", str(paths["recipe"]), "-o", str(paths["compiled"]),
              "--check-points", "no"]]
    if export_from is None:
        steps.insert(0, ["export", "tiny", "-o", str(paths["export"])])
    else:
        shutil.copytree(export_from, paths["export"])
    for argv in steps:
        assert main(argv) == 0, argv
    return paths


@pytest.fixture(scope="session")
def cli_chain(tmp_path_factory, tiny_export_dir):
    """The chain, its export being the session's tiny export (`dgq export tiny` writes the same bytes: the
    determinism test checks that too)."""
    return make_chain(tmp_path_factory.mktemp("chain") / "a", export_from=tiny_export_dir)


@pytest.fixture(scope="session")
def chain_maker():
    """make_chain, for tests that need a second, independent run."""
    return make_chain
