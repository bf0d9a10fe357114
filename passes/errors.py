"""The error type graph passes raise for graphs or recipes they cannot use."""


class PassError(Exception):
    """A graph, pattern or recipe a pass cannot use; the message names the node or tensor and why."""


class PatternMismatch(PassError):
    """A subgraph is not the pattern a pass expects; the message says which node and why not."""
