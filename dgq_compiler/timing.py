"""The one stage timer of the pipeline's orchestration (compile, run): a context manager per stage that
announces it, times it and records the seconds under its name: wall clock, and CPU seconds of this process
and its waited-for children (what a stage costs, nearly independent of what else the machine runs)."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable


class StageTimer:
    """`with timer.stage("save"): ...` records timer.seconds["save"], rounded to `digits`; with a message, the
    message goes to `progress` first (numbered "[N] ..." when `numbered`)."""

    def __init__(self, progress: Callable[[str], None] | None = None, digits: int = 3, numbered: bool = False):
        self.progress = progress or (lambda _message: None)
        self.digits, self.numbered = digits, numbered
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, message: str | None = None):
        if message is not None:
            self.progress(f"[{len(self.seconds) + 1}] {message}" if self.numbered else message)
        start, cpu = time.perf_counter(), cpu_time()
        try:
            yield self
        finally:
            self.seconds[name] = round(time.perf_counter() - start, self.digits)
            self.cpu_seconds[name] = round(cpu_time() - cpu, self.digits)


def cpu_time() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class JobClock:
    """A whole job's totals, started on creation; `stamp(summary)` writes summary["seconds"]["total"],
    summary["cpu_seconds"]["total"] and summary["load"] (the 1-minute load average at the start and the end:
    wall times mean little without it)."""

    def __init__(self):
        self.wall, self.cpu, self.load = time.perf_counter(), cpu_time(), os.getloadavg()[0]

    def stamp(self, summary: dict) -> None:
        summary["seconds"]["total"] = round(time.perf_counter() - self.wall, 1)
        summary.setdefault("cpu_seconds", {})["total"] = round(cpu_time() - self.cpu, 1)
        summary["load"] = {"start": round(self.load, 2), "end": round(os.getloadavg()[0], 2)}
