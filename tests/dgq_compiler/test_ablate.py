"""`dgq ablate`: the rows of the paper's Table 3, and the suite end to end on the tiny pipeline (one small table)."""
import json
import re

import pytest

from dgq_compiler.ablate import AblateOptions, ablations
from dgq_compiler.errors import DgqError


def test_the_default_suite_has_every_row_of_both_tables():
    rows = ablations(AblateOptions())
    grouping = [r for r in rows if r.table == "grouping"]
    attention = [r for r in rows if r.table == "attention"]
    assert len(grouping) == 2 * (1 + 4 * 3) and len(attention) == 2 * 6
    assert len({r.name for r in rows}) == len(rows)
    for r in grouping:
        c = r.config
        assert (c.method, c.weight_bits, c.act_bits, c.groups) == ("dgq", 8, r.factors["act_bits"], r.factors["groups"])
        assert c.dimension == ("auto" if c.groups == 1 else r.factors["dimension"])
        assert (c.attn_quantizer, c.exclude_bos, c.log_dynamic) == ("log2", True, True)
    assert {(r.config.groups, r.config.dimension) for r in grouping if r.config.act_bits == 6} == \
        {(1, "auto")} | {(g, d) for g in (2, 4, 8, 16) for d in ("channel", "pixel", "auto")}
    variants = {(r.config.act_bits, r.config.attn_quantizer, r.config.exclude_bos, r.config.log_dynamic)
                for r in attention}
    assert len(variants) == 12 and all(r.config.groups == 8 and r.config.dimension == "auto" for r in attention)
    # DGQ itself (G8, chosen dimension, log2 dynamic, <start> separated) is in both tables: built once
    shared = {r.config for r in grouping} & {r.config for r in attention}
    assert len(shared) == 2


def test_bad_suite_options_are_named():
    with pytest.raises(DgqError, match="--groups must be some of"):
        AblateOptions(groups=(3,))
    with pytest.raises(DgqError, match="--act-bits must be widths in 4..8"):
        AblateOptions(act_bits=(9,))
    with pytest.raises(DgqError, match="--tables must be some of grouping, attention"):
        AblateOptions(tables=("sizes",))


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_pipeline_dir):
    from dgq_compiler.cli.main import main

    out = tmp_path_factory.mktemp("ablate") / "suite"
    assert main(["ablate", "--model", str(tiny_pipeline_dir), "-o", str(out), "--act-bits", "8", "--groups", "1,2",
                 "--tables", "grouping", "--sets", "heldout", "--images", "3", "--num-prompts", "1",
                 "--steps", "2"]) == 0
    return out


def test_suite_writes_its_table_plot_and_time(suite):
    summary = json.loads((suite / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ["w8a8-g1", "w8a8-g2-channel", "w8a8-g2-pixel", "w8a8-g2-auto"]
    for row in summary["rows"]:
        assert (suite / "graphs" / row["name"] / "unet.onnx").is_file()
        assert not (suite / "graphs" / f"{row['name']}@onnxruntime-cpu").exists()  # images from the QDQ graph
        assert set(row["seconds"]) == {"quantize", "compile", "images"}
        scores = row["scores"]["heldout"]
        assert scores["images"] == 3 and "versus_fp" in scores
    report = (suite / "report.md").read_text()
    assert "## (b) Grouping" in report and "## (c)" not in report
    assert re.search(r"Table 3 on this model: \*\*\d+ s\*\* in all", report)
    assert "| bits W/A | G | grouping dimension | Fréchet ↓ (held-out)" in report
    assert "| 8/8 | 2 | pixel only |" in report and "| 8/8 | 1 | - (per tensor) |" in report
    linked = re.findall(r"\]\(figures/([^)]+)\)", report)
    assert linked == ["grouping_heldout.png"] and (suite / "figures" / linked[0]).stat().st_size > 10_000
    assert summary["seconds"]["total"] >= sum(v for k, v in summary["seconds"].items() if k != "total") * 0.99


def test_existing_output_is_refused(suite, capsys):
    from dgq_compiler.cli.main import main

    assert main(["ablate", "-o", str(suite)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_image_counts_must_match_the_sets_before_any_work(tmp_path, capsys):
    from dgq_compiler.cli.main import main

    out = tmp_path / "suite"
    assert main(["ablate", "-o", str(out), "--sets", "heldout", "--images", "32,64"]) == 2
    assert "one per prompt set (heldout), got 32,64" in capsys.readouterr().err and not out.exists()
