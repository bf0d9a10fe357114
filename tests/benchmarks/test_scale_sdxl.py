"""benchmarks/scale_sdxl.py's closing summary reads the export reports `dgq export` writes today."""
from __future__ import annotations

import shutil

from benchmarks.scale_sdxl import summary


def test_summary_reads_a_real_export_report(tmp_path, tiny_export_dir):
    shutil.copy(tiny_export_dir / "export.json", (tmp_path / "sdxl").mkdir() or tmp_path / "sdxl" / "export.json")
    rows = [{"stage": "export sdxl-base", "exit": 0, "seconds": 12.5, "peak_rss_gb": 10.75, "budget_gb": 12,
             "within": True},
            {"stage": "verify", "exit": 1, "seconds": 3.0, "peak_rss_gb": 1.2, "budget_gb": 20, "within": False}]
    text = summary(rows, tmp_path)
    assert "export sdxl-base            0     12.5    10.75     12 ok" in text
    assert "verify                      1      3.0     1.20     20 OVER/FAILED" in text
    assert "export sdxl-base: max abs error" in text and "sd-v1.4" not in text
