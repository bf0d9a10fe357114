"""The stage timer: announces, numbers and times stages, and records a stage that failed too."""
from __future__ import annotations

import time

import pytest

from dgq_compiler.timing import StageTimer


def test_stages_are_announced_numbered_and_timed():
    said = []
    timer = StageTimer(said.append, digits=2, numbered=True)
    with timer.stage("export", "export the UNet ..."):
        time.sleep(0.02)
    with timer.stage("quiet"):  # no message: nothing said
        pass
    with timer.stage("calibrate", "calibrate ..."):
        pass
    assert said == ["[1] export the UNet ...", "[3] calibrate ..."]
    assert list(timer.seconds) == ["export", "quiet", "calibrate"]
    assert 0.02 <= timer.seconds["export"] < 5 and timer.seconds["quiet"] == round(timer.seconds["quiet"], 2)


def test_a_failing_stage_still_records_its_time_and_the_error_passes_through():
    timer = StageTimer()
    with pytest.raises(ValueError, match="boom"):
        with timer.stage("compile", "compiling ..."):
            raise ValueError("boom")
    assert "compile" in timer.seconds
