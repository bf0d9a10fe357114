"""Calibration: the observed FP sampling loop and its streaming per-timestep statistics."""
