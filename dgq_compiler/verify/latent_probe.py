"""Does a graph run at a given latent size? One forward pass in a default onnxruntime session says so.

Static shape inference cannot tell: a per-axis scale vector of the wrong length, or a skip connection that no
longer lines up, is only found when the graph runs. `dgq check --latent-size N` asks this before it answers.
"""
from __future__ import annotations

from pathlib import Path

from dgq_compiler import runtime


def probe_latent_size(graph: Path, latent: int, batch: int = 1) -> str | None:
    """None when `graph` runs at latent `latent` x `latent` (batch `batch`, example inputs) and gives finite
    output; else one line saying what went wrong."""
    import numpy as np
    import onnx

    try:
        header = onnx.load(str(graph), load_external_data=False)
        feed = runtime.example_feeds(header, latent, batch=batch)
        outputs = runtime.session(graph, "default", log_severity=4).run(None, feed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime and numpy raise many types; the message is the answer
        return f"does not run at latent {latent}x{latent}: {' '.join(str(exc).split())[:300]}"
    bad = [o.name for o, v in zip(header.graph.output, outputs) if np.issubdtype(v.dtype, np.floating)
           and not np.all(np.isfinite(v))]
    return f"non-finite output {', '.join(bad)} at latent {latent}x{latent}" if bad else None
