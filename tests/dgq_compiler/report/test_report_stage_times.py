"""The reports' stage-time table: wall and CPU seconds side by side, with the machine's load."""
from __future__ import annotations

from dgq_compiler.report.markdown import stage_times


def test_stage_table_has_wall_cpu_and_load():
    lines = stage_times({"seconds": {"export": 12.5, "total": 40.0}, "cpu_seconds": {"export": 20.1, "total": 71.3},
                         "load": {"start": 0.4, "end": 2.26}})
    text = "\n".join(lines)
    assert "0.4 at the start, 2.3 at the end" in text
    assert "| stage | wall s | CPU s |" in text
    assert "| export | 12.5 | 20.1 |" in text and "| total | 40 | 71.3 |" in text


def test_summaries_from_before_cpu_timing_still_render():
    text = "\n".join(stage_times({"seconds": {"export": 1.0}}))
    assert "| export | 1 | - |" in text and "load" not in text
