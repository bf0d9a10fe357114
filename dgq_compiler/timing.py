"""The one stage timer of the pipeline's orchestration (compile, run): a context manager per stage that
announces it, times it and records the seconds under its name."""
from __future__ import annotations

import contextlib
import time
from typing import Callable


class StageTimer:
    """`with timer.stage("save"): ...` records timer.seconds["save"], rounded to `digits`; with a message, the
    message goes to `progress` first (numbered "[N] ..." when `numbered`)."""

    def __init__(self, progress: Callable[[str], None] | None = None, digits: int = 3, numbered: bool = False):
        self.progress = progress or (lambda _message: None)
        self.digits, self.numbered = digits, numbered
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, message: str | None = None):
        if message is not None:
            self.progress(f"[{len(self.seconds) + 1}] {message}" if self.numbered else message)
        start = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds[name] = round(time.perf_counter() - start, self.digits)
