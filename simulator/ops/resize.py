"""Resize, mode "nearest" (all coordinate transformations and nearest modes); other modes are refused."""
import numpy as np

from simulator.errors import SimulatorError


def _source_index(out_size, in_size, scale, mode, nearest):
    x = np.arange(out_size, dtype=np.float64)
    if mode == "asymmetric":
        src = x / scale
    elif mode == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    elif mode == "align_corners":
        src = x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    elif mode == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    else:
        raise SimulatorError(f"Resize coordinate_transformation_mode {mode!r} is not supported")
    if nearest == "floor":
        idx = np.floor(src)
    elif nearest == "ceil":
        idx = np.ceil(src)
    elif nearest == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:  # round_prefer_floor (default)
        idx = np.ceil(src - 0.5)
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def run(ctx):
    x = ctx.value(0)
    if ctx.attr("mode", "nearest") != "nearest":
        raise SimulatorError(f"node {ctx.node.name!r}: Resize mode {ctx.attr('mode')!r} is not supported (nearest only)")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise SimulatorError(f"node {ctx.node.name!r}: Resize keep_aspect_ratio_policy is not supported")
    axes = ctx.attr("axes")
    axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in axes]
    scales = ctx.value(2) if ctx.has(2) else None
    sizes = ctx.value(3) if ctx.has(3) else None
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in sizes]
        scales = [s / x.shape[a] for s, a in zip(sizes, axes)]
    elif scales is not None and np.size(scales):
        scales = [float(s) for s in scales]
        sizes = [int(np.floor(x.shape[a] * s)) for s, a in zip(scales, axes)]
    else:
        raise SimulatorError(f"node {ctx.node.name!r}: Resize needs scales or sizes")
    mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    out = x
    for a, size, scale in zip(axes, sizes, scales):
        if size == x.shape[a] and scale == 1.0:
            continue
        out = np.take(out, _source_index(size, x.shape[a], scale, mode, nearest), axis=a)
    return [out]
