"""The one error type the model zoo raises for bad user input."""


class ModelError(Exception):
    """A model name, folder or config a user gave us cannot be used; the message says why."""
