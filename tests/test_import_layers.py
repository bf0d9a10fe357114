"""The import directions of .importlinter hold (so scripts/test.sh and CI catch a wrong import), and the
contract's list of passes names every module that defines a pass."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"


def _pass_modules() -> set[str]:
    """passes.<file> for every file under passes/ with a class deriving from Pass."""
    found = set()
    for path in (ROOT / "passes").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Pass" for b in node.bases)
               for node in tree.body):
            found.add(f"passes.{path.stem}")
    return found


def test_every_pass_is_in_the_independence_contract():
    config = configparser.ConfigParser()
    config.read(CONFIG)
    listed = set(config["importlinter:contract:passes-independent"]["modules"].split())
    assert _pass_modules() == listed


def test_import_directions_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
