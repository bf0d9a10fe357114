"""Helpers for tests that compare two `dgq run` summaries."""


TIMINGS = ("seconds", "cpu_seconds", "load")


def without_timings(summary):
    """A summary without its timings (every `seconds` and `cpu_seconds` entry at any depth, and the load)."""
    if isinstance(summary, dict):
        return {k: without_timings(v) for k, v in summary.items() if k not in TIMINGS}
    if isinstance(summary, list):
        return [without_timings(v) for v in summary]
    return summary
