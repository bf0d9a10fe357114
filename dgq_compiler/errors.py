"""User-input errors: the CLI turns every one of them into a one-line message and exit code 2."""
from models.errors import ModelError


class DgqError(Exception):
    """Bad input to the pipeline (a file, flag or combination we cannot use); the message says why."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every package's user-input error type, for the CLI to catch."""
    from passes.errors import PassError
    from simulator.errors import SimulatorError

    return (DgqError, ModelError, PassError, SimulatorError)
