"""The paper's Table 2 BOPs and model-size columns, reproduced by `dgq cost --convention paper`."""
import json

import pytest

from dgq_compiler.cli.main import main

# DGQ paper, Table 2 ("Model Size" and "BOPs" columns; identical for every method and group count at a
# given Bits(W/A)). SD v1.4 at 512 px, SDXL Turbo at 1024 px; one UNet forward at batch 2.
TABLE2 = {
    "sd-v1.4": {"W32A32": (823e12, 3438e6), "W8A8": (51.4e12, 871e6), "W8A6": (38.6e12, 871e6),
                "W4A8": (25.7e12, 436e6), "W4A6": (19.3e12, 436e6)},
    "sdxl-turbo": {"W32A32": (6927e12, 10269e6), "W8A8": (433e12, 2567e6), "W8A6": (325e12, 2567e6),
                   "W4A8": (216e12, 1284e6), "W4A6": (162e12, 1284e6)},
}
# The abstract: "saving 93.7% in bit operations (from 694 TBOPs to 43.4 TBOPs)" for SD v1.4 - a count
# of the conv and linear layers only (W32A32 -> W8A8), i.e. without the attention matmuls.
ABSTRACT_SD14 = (694e12, 43.4e12)


def _table(capsys, model: str) -> dict:
    assert main(["cost", "--model", model, "--convention", "paper", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("model", sorted(TABLE2))
def test_paper_convention_reproduces_table2(capsys, model):
    doc = _table(capsys, model)
    assert doc["batch"] == 2
    rows = doc["configurations"]
    assert [(r["bits"], r["groups"]) for r in rows] == [("W32A32", 1)] + [
        (b, g) for b in ("W8A8", "W8A6", "W4A8", "W4A6") for g in (8, 16)]
    for row in rows:
        paper_bops, paper_size = TABLE2[model][row["bits"]]
        assert abs(row["bops"] - paper_bops) / paper_bops <= 0.005, (row["bits"], row["tbops"])
        assert abs(row["model_size_bytes"] - paper_size) / paper_size <= 0.02, (row["bits"], row["model_size_bytes"])
        assert row["tbops"] == pytest.approx(row["bops"] / 1e12)


def test_sdxl_turbo_table2_is_at_1024_px_not_the_configs_512(capsys):
    doc = _table(capsys, "sdxl-turbo")
    assert doc["resolution"] == [1024, 1024]
    assert main(["cost", "--model", "sdxl-turbo", "--resolution", "512", "--bits", "W32A32", "--json"]) == 0
    at_512 = json.loads(capsys.readouterr().out)
    # attention grows with the square of the token count, the rest linearly: well off Table 2's 6,927 T
    assert at_512["bops"] < TABLE2["sdxl-turbo"]["W32A32"][0] / 4


def test_abstract_figures_are_conv_and_linear_only(capsys):
    doc = _table(capsys, "sd-v1.4")
    layers = doc["macs"]["conv"] + doc["macs"]["linear"]
    for bits, paper in zip((32 * 32, 8 * 8), ABSTRACT_SD14):
        assert abs(layers * bits - paper) / paper <= 0.005
    assert abs(doc["macs"]["total"] * 1024 - TABLE2["sd-v1.4"]["W32A32"][0]) / 823e12 <= 0.005
