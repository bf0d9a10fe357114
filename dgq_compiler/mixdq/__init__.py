"""MixDQ (Zhao et al., 2024): metric-decoupled layer sensitivity and bit allocation by integer programming.

sensitivity.py  quantize one layer at a time at each candidate width and measure content / text alignment
allocate.py     per-layer weight and activation widths minimising total sensitivity under size / BOPs budgets
compose.py      a config (+ an allocation) -> a recipe: the stage `dgq run` and `dgq quantize` call
(The BOS-aware text-embedding quantizer lives with the other quantizers: quantize/activations.py and
passes/quantize_text_embedding.py.)
"""
