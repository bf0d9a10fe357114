"""Model zoo: architecture configs, loaders, the embedded tiny pipeline and the prompt sets."""
from models.errors import ModelError

__all__ = ["ModelError"]
