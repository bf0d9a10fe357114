"""Bit-accurate integer simulator, hardware targets and the cost model."""
