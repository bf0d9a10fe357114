"""Third-party library settings shared by the model loaders (a leaf module: it imports no other project module)."""
from __future__ import annotations


def quiet_libraries() -> None:
    """diffusers/transformers log optional-dependency notices on import; our users need none of them."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
