"""The trained weights shipped inside the package: the shapes text-to-image pipeline and its evaluator.

Both are trained by scripts in this repo (`models.train_shapes`, `models.train_evaluator`) on the
procedural shapes dataset, and load offline through the same `from_pretrained` path as real models.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from models.errors import ModelError

PIPELINE_NAME = "shapes-sd"
# The shipped pipeline's classifier-free guidance scale, as SD's is 7.5: chosen on the training combinations
# (benchmarks/shapes_quality.py --sets validation --guidance 2,3,4.5,7.5, on a pilot of this recipe: alignment 0.964,
# 0.974, 0.940 and 0.807, colour 0.91, 0.95, 0.86 and 0.42: above ~4 the guided step overshoots the object's colour
# into another one).
SHAPES_GUIDANCE = 3.0


def _shipped(name: str) -> Path:
    path = Path(str(resources.files("models").joinpath("trained", name)))
    if not path.is_dir():
        raise ModelError(f"the shipped {name!r} weights are missing from {str(path)!r} (a broken install?)")
    return path


def trained_pipeline_dir() -> Path:
    """The diffusers folder of the embedded trained pipeline (model_index.json, unet/, vae/, ...)."""
    return _shipped(PIPELINE_NAME)


def trained_evaluator_dir() -> Path:
    """The folder of the shipped attribute evaluator (config.json + model.safetensors)."""
    return _shipped("evaluator")


def shapes_prompts_file(name: str = "shapes_heldout.txt") -> Path:
    """A shipped shapes prompt set: shapes_heldout.txt (unseen combinations) or shapes_calibration.txt."""
    return Path(str(resources.files("models.prompts").joinpath(name)))
