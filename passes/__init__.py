"""ONNX graph passes: module map, pattern matching, QDQ insertion, split cross-attention."""
