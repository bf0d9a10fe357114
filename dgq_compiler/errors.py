"""User-input errors: the CLI turns every one of them into a one-line message and exit code 2."""
from models.errors import ModelError


class DgqError(Exception):
    """Bad input to the pipeline (a file, flag or combination we cannot use); the message says why."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every package's user-input error type, for the CLI to catch (imported lazily: passes/simulator are optional here)."""
    kinds: list[type[Exception]] = [DgqError, ModelError]
    try:
        from passes.errors import PassError
        kinds.append(PassError)
    except ImportError:
        pass
    try:
        from simulator.errors import SimulatorError
        kinds.append(SimulatorError)
    except ImportError:
        pass
    return tuple(kinds)
