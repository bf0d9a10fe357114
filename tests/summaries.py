"""Helpers for tests that compare two `dgq run` summaries."""


def without_timings(summary):
    """A summary without its wall-clock times (every `seconds` entry, at any depth)."""
    if isinstance(summary, dict):
        return {k: without_timings(v) for k, v in summary.items() if k != "seconds"}
    if isinstance(summary, list):
        return [without_timings(v) for v in summary]
    return summary
