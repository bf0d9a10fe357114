"""DGQ and the baselines: calibration statistics + a QuantConfig -> a Recipe."""
from dgq_compiler.quantize.build import QuantizeSummary, quantize_stats

__all__ = ["QuantizeSummary", "quantize_stats"]
