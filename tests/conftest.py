"""Shared fixtures: the embedded tiny pipeline saved as a diffusers folder, and its UNet exported to ONNX.

Both are built once per test session from seed 0 and loaded back through the same loaders real models use.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A diffusers folder of the random-weight tiny pipeline (model_index.json, unet/, vae/, ...)."""
    from models.tiny_pipeline import save_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny") / "pipeline"
    save_tiny_pipeline(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory, tiny_pipeline_dir):
    """The tiny pipeline's UNet exported by `export_unet`: unet.onnx, module_map.json, export.json."""
    from dgq_compiler.export import export_unet
    from models.loader import load_unet

    path = tmp_path_factory.mktemp("export") / "tiny"
    export_unet(load_unet(tiny_pipeline_dir), path, model_name="tiny", progress=lambda _msg: None)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: torch's intra-op threads only add hand-off cost (and stall on a busy machine). A module
    opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
