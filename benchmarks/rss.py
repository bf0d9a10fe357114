"""Peak memory for the benchmarks, sampled from /proc.

`PeakRss` samples this process's VmRSS every 50 ms. `PeakTreePss` samples a process and all its
descendants every 200 ms and sums their proportional set sizes (Pss, /proc/PID/smaps_rollup): a page
shared by several processes of the tree (a forked child's copy-on-write pages, shared libraries) counts
once in the sum, so the figure is what the tree takes from the machine, where wait4's ru_maxrss only
reports the largest single descendant.
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


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])  # the name in parentheses may hold spaces
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def tree_pss(pid: int) -> int:
    """Sum of Pss (bytes) over `pid` and its descendants, now."""
    tree, todo, total = _children(), [pid], 0
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class PeakTreePss:
    """`with PeakTreePss(pid) as mem: ...` then mem.peak (bytes): the largest sum of Pss over the tree seen."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval, self.peak, self._stop = pid, interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
