"""Shipped target presets (JSON data files)."""
