"""Peak memory for the benchmarks, sampled from /proc.

`PeakRss` samples this process's VmRSS every 50 ms. `PeakTreePss` samples a process and all its
descendants every 200 ms and sums their proportional set sizes (Pss, /proc/PID/smaps_rollup): a page
shared by several processes of the tree (a forked child's copy-on-write pages, shared libraries) counts
once in the sum, so the figure is what the tree takes from the machine, where wait4's ru_maxrss only
reports the largest single descendant.

Cheap enough not to perturb what it measures: smaps_rollup walks every page of a process (for a 10 GB
export, a sampler reading it five times a second took a third of the CPU the export got on a loaded
machine), so each sample first sums VmRSS (O(1) per process, read from /proc/PID/status) and reads Pss only
when that sum exceeds the peak so far (Pss <= Rss, so no other sample can raise the peak) and grew by
RSS_STEP since the last reading or PSS_EVERY seconds passed. The tree is found from
/proc/PID/task/TID/children, not by reading every process's stat.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path


class PeakRss:
    """`with PeakRss() as mem: ...` then mem.peak (bytes)."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, now (processes that end meanwhile are left out)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:  # the process ended while we looked
            continue
        for task in tasks:
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss() -> int:
    """This process image's peak resident set (VmHWM), bytes. Not ru_maxrss: in a child started by fork + exec
    that one keeps the parent's peak."""
    return _status_kb("self", "VmHWM:") * 1024


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """Sum of VmRSS (bytes) over `pid` and its descendants, now: an upper bound of `tree_pss`, cheap to read."""
    return sum(_status_kb(p, "VmRSS:") for p in descendants(pid)) * 1024


def tree_pss(pid: int) -> int:
    """Sum of Pss (bytes) over `pid` and its descendants, now."""
    return sum(_pss_kb(p) for p in descendants(pid)) * 1024


PSS_EVERY = 5.0  # seconds between Pss readings of a tree whose Rss stays put
RSS_STEP = 32 * 2**20  # Rss growth that triggers a reading sooner (a resolution far below the GB budgets)


class PeakTreePss:
    """`with PeakTreePss(pid) as mem: ...` then mem.peak (bytes): the largest sum of Pss over the tree seen."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval, self.peak, self._stop = pid, interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        read_at, read_rss = 0.0, 0  # when Pss was last read, and the tree's Rss then
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            # Pss <= Rss: below the peak nothing can be new. Above it (Rss counts whole shared pages, so a steady
            # tree sits a little above its Pss peak), read again only when Rss grew by RSS_STEP since the last
            # reading, or every PSS_EVERY seconds (a sharer outside the tree may have ended)
            if rss > self.peak and (rss > read_rss + RSS_STEP or time.monotonic() - read_at >= PSS_EVERY):
                self.peak = max(self.peak, tree_pss(self.pid))
                read_at, read_rss = time.monotonic(), rss
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
