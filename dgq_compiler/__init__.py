"""dgq-compiler: ONNX export, DGQ calibration and compilation, and integer simulation of diffusion UNets."""
__version__ = "0.1.0"
