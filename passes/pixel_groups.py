"""Pixel groups at any resolution: a group map defined on the calibrated grid, resampled inside the graph.

A pixel/token group map holds one group per pixel of its UNet level at the calibrated latent size (h0 x w0
pixels, flattened row-major as the quantized tensor flattens them). At run time the level is h x w; every
pixel (i, j) takes the group of the calibrated pixel nearest below it:

    src(i, j) = (i * h0 // h) * w0 + (j * w0 // w)        (integer arithmetic: exact, the same everywhere)

which is the identity at the calibrated size (the graph's values there do not change) and nearest-neighbour
resampling otherwise (`Resize` mode nearest, asymmetric, floor, computed without float coordinates).

Where h, w come from:
- [B, C, H, W] (nchw) inputs: their own height and width;
- [B, N, C] token inputs (nlc): the `sample` input's H, W divided (rounding up, as a stride-2 conv does) by the
  level's downsampling factor, fixed at compile time from the map's length and the calibrated grid.
Token axes that are not pixels (text tokens of encoder_hidden_states, the k/v of a cross-attention) have a
fixed length: their maps are used as they are (`fixed_grid`).

For another pass that quantizes with pixel groups (e.g. integer lowering): `level_grid(...)` once at compile
time, then `group_index(graph, grid, x, prefix)` -> int64 [h*w] indices into the calibrated map row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import add_node, constant
from passes.contract import SAMPLE_INPUT
from passes.errors import PassError

MAX_LEVELS = 8  # downsampling factors tried: 1, 2, 4, ..., 2^7


@dataclass(frozen=True)
class LevelGrid:
    """A pixel map's calibrated grid (h0 x w0) and its level's downsampling factor from the `sample` input."""
    h0: int
    w0: int
    factor: int

    @property
    def pixels(self) -> int:
        return self.h0 * self.w0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_grid(pixels: int, calibrated: tuple[int, int]) -> LevelGrid | None:
    """The level whose grid at the calibrated latent size (H0, W0) has `pixels` pixels; None when no level has."""
    h, w = (int(v) for v in calibrated)
    for k in range(MAX_LEVELS):
        f = 1 << k
        grid = LevelGrid(_ceil_div(h, f), _ceil_div(w, f), f)
        if grid.pixels == pixels:
            return grid
        if grid.pixels < pixels:
            break
    return None


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _scalar(name: str, value: int) -> gs.Constant:
    """A 0-D int64 constant (passes.base.constant makes arrays at least 1-D; Range needs scalars)."""
    return gs.Constant(name, np.array(value, dtype=np.int64))


def _dim(graph: gs.Graph, shape: gs.Tensor, axis: int, name: str) -> gs.Variable:
    """Scalar int64 `shape[axis]`."""
    return add_node(graph, "Gather", name, [shape, _scalar(f"{name}/index", axis)], dtype=np.int64,
                    attrs={"axis": 0})


def _runtime_size(graph: gs.Graph, grid: LevelGrid, x: gs.Tensor, layout: str, prefix: str):
    """(h, w) int64 scalars of the level at run time."""
    if layout == "nchw":
        shape = add_node(graph, "Shape", f"{prefix}/Shape", [x], dtype=np.int64)
        return _dim(graph, shape, 2, f"{prefix}/height"), _dim(graph, shape, 3, f"{prefix}/width")
    sample = next((t for t in graph.inputs if t.name == SAMPLE_INPUT), None)
    if sample is None:
        raise PassError(f"pixel groups on tokens {x.name!r} need the graph input {SAMPLE_INPUT!r} for the level size")
    shape = add_node(graph, "Shape", f"{prefix}/Shape", [sample], dtype=np.int64)
    out = []
    for axis, what in ((2, "height"), (3, "width")):
        full = _dim(graph, shape, axis, f"{prefix}/sample_{what}")
        if grid.factor == 1:
            out.append(full)
            continue
        up = add_node(graph, "Add", f"{prefix}/{what}/Add", [full, _scalar(f"{prefix}/{what}/round_up",
                                                                             grid.factor - 1)], dtype=np.int64)
        out.append(add_node(graph, "Div", f"{prefix}/{what}/Div", [up, _scalar(f"{prefix}/{what}/factor",
                                                                                grid.factor)], dtype=np.int64))
    return out[0], out[1]


def _source_coordinates(graph: gs.Graph, size: gs.Tensor, calibrated: int, prefix: str) -> gs.Variable:
    """[size] int64: i * calibrated // size for i in 0..size-1 (floor: both are non-negative)."""
    i = add_node(graph, "Range", f"{prefix}/Range", [_scalar(f"{prefix}/start", 0), size,
                                                      _scalar(f"{prefix}/delta", 1)], dtype=np.int64)
    scaled = add_node(graph, "Mul", f"{prefix}/Mul", [i, _scalar(f"{prefix}/calibrated", calibrated)],
                      dtype=np.int64)
    return add_node(graph, "Div", f"{prefix}/Div", [scaled, size], dtype=np.int64)


def group_index(graph: gs.Graph, grid: LevelGrid, x: gs.Tensor, layout: str, prefix: str) -> gs.Variable:
    """int64 [h*w]: for each pixel of `x`'s level at run time, its source index in the calibrated map row.
    Nodes are named `{prefix}/resample/*`."""
    p = f"{prefix}/resample"
    h, w = _runtime_size(graph, grid, x, layout, p)
    rows = _source_coordinates(graph, h, grid.h0, f"{p}/rows")
    cols = _source_coordinates(graph, w, grid.w0, f"{p}/cols")
    row_start = add_node(graph, "Mul", f"{p}/row_start", [rows, _scalar(f"{p}/w0", grid.w0)], dtype=np.int64)
    column = add_node(graph, "Unsqueeze", f"{p}/Unsqueeze", [row_start, constant(f"{p}/axis1", _i64([1]))],
                      dtype=np.int64)
    flat2d = add_node(graph, "Add", f"{p}/Add", [column, cols], dtype=np.int64)  # [h, 1] + [w] -> [h, w]
    return add_node(graph, "Reshape", f"{p}/Reshape", [flat2d, constant(f"{p}/flat", _i64([-1]))], dtype=np.int64)


def resample_map_numpy(row: np.ndarray, grid: LevelGrid, h: int, w: int) -> np.ndarray:
    """The same resampling on a map row in numpy (references and tests)."""
    rows = np.arange(h, dtype=np.int64) * grid.h0 // h
    cols = np.arange(w, dtype=np.int64) * grid.w0 // w
    return np.asarray(row)[(rows[:, None] * grid.w0 + cols[None, :]).reshape(-1)]
