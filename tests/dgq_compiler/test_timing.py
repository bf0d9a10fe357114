"""The stage timer: announces, numbers and times stages, and records a stage that failed too."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dgq_compiler.timing import JobClock, StageTimer, cpu_time


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


def test_cpu_seconds_count_work_not_waiting():
    timer = StageTimer(digits=3)
    with timer.stage("wait"):
        time.sleep(0.3)
    with timer.stage("work"):
        start = cpu_time()
        while cpu_time() - start < 0.1:  # burn 0.1 CPU-s however busy the machine is
            sum(range(1000))
    assert timer.cpu_seconds["wait"] < 0.1 <= timer.seconds["wait"] + 0.01
    assert timer.cpu_seconds["work"] >= 0.1


def test_cpu_seconds_include_waited_children():
    timer = StageTimer(digits=3)
    with timer.stage("child"):
        subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                        "while time.process_time() - t < 0.3: pass"], check=True)
    assert timer.cpu_seconds["child"] >= 0.3


def test_job_clock_stamps_totals_and_load():
    clock = JobClock()
    summary = {"seconds": {"stage": 0.0}}
    clock.stamp(summary)
    assert set(summary["seconds"]) == {"stage", "total"} and summary["seconds"]["total"] >= 0
    assert summary["cpu_seconds"]["total"] >= 0
    assert set(summary["load"]) == {"start", "end"} and summary["load"]["start"] >= 0
