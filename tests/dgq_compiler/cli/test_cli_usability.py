"""What the artefacts record so the next command needs no extra flags: statistics name a model quantize can
reopen ('embedded' too), compile.json's latent size serves cost (and verify, see the determinism test)."""
from __future__ import annotations

import json
import shutil

from dgq_compiler.cli.main import main


def test_statistics_naming_the_embedded_model_reopen_it(cli_chain, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    shutil.copy(cli_chain["stats"].with_suffix(".safetensors"), stats.with_suffix(".safetensors"))
    doc = json.loads(cli_chain["stats"].read_text())
    doc["model"]["name"] = "embedded"
    stats.write_text(json.dumps(doc))
    assert main(["quantize", str(stats), "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    # the shipped model was opened (and is not the tiny model these statistics came from)
    assert "does not exist" not in err and "another model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.safetensors").exists()


def test_cost_of_a_compiled_folder_takes_the_latent_size_from_compile_json(cli_chain, capsys):
    assert main(["cost", "--model", str(cli_chain["compiled"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["resolution"] == [128, 128] and doc["source"] == "graph"
