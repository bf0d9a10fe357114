"""Two identical runs of export, calibrate, quantize, compile (and verify --json) on the tiny model give
byte-identical artefacts; the JSON reports may differ only in their one top-level `timings` section, and the
paths they record are relative (the two runs live in different folders).

The first run's export is the session's `export_unet` of the tiny model; the second runs `dgq export tiny`:
same function, same arguments, so this also holds the CLI to the API's bytes."""
from __future__ import annotations

import json

from dgq_compiler.cli.main import main


def _files(root):
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _without_timings(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    timings = doc.pop("timings", None)
    return doc, timings


def test_two_identical_runs_give_identical_artefacts_outside_timings(cli_chain, chain_maker, tmp_path):
    first_root = cli_chain["export"].parent
    second = chain_maker(tmp_path / "b")
    for chain in (cli_chain, second):
        assert main(["verify", str(chain["compiled"]), "--timesteps", "1", "--json",
                     str(chain["compiled"].parent / "verify.json")]) == 0
    first, other = _files(first_root), _files(tmp_path / "b")
    assert sorted(first) == sorted(other)
    reports = {"export/export.json", "compiled/compile.json", "verify.json"}
    assert reports <= set(first)
    for name, path in first.items():
        if name in reports:
            (a, timings_a), (b, timings_b) = _without_timings(path), _without_timings(other[name])
            assert a == b, name
            assert timings_a and timings_b, f"{name}: expected its run times under 'timings'"
            assert path.read_text().count('"timings"') == 1
            assert str(first_root) not in path.read_text() and str(tmp_path) not in other[name].read_text()
        else:
            assert path.read_bytes() == other[name].read_bytes(), name
    modes = {p.stat().st_mode for p in first.values()}
    assert len(modes) == 1, "safetensors, ONNX and JSON files are written with one mode"
    compile_report, _ = _without_timings(first["compiled/compile.json"])
    assert compile_report["graph"] == "../export/unet.onnx" and compile_report["latent_size"] == 16
    verify_report, _ = _without_timings(first["verify.json"])
    assert verify_report["graph"] == "compiled/unet.onnx" and verify_report["latent_size"] == 16  # from compile.json
