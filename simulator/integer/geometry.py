"""Convolution geometry: the output size (derived here once), the input window of each kernel offset, im2col."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from simulator.errors import SimulatorError


class ConvGeometry(NamedTuple):
    """Output height and width of a 2-D convolution; pads = (top, left, bottom, right)."""
    ho: int
    wo: int


def conv_geometry(h: int, w: int, kernel, strides, pads, dilations) -> ConvGeometry:
    kh, kw = kernel
    top, left, bottom, right = pads
    ho = (h + top + bottom - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + left + right - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if ho <= 0 or wo <= 0:
        raise SimulatorError(f"convolution output would be empty (input {h}x{w}, kernel {kh}x{kw})")
    return ConvGeometry(ho, wo)


def pad_spatial(x: np.ndarray, pads) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(pads) else x


def conv_windows(x: np.ndarray, kernel: tuple[int, int], strides, pads, dilations):
    """Yield ((i, j), window) for each kernel offset: window = padded x sampled at the output grid,
    shape [N, C, Ho, Wo] (a strided view)."""
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilations
    ho, wo = conv_geometry(x.shape[2], x.shape[3], kernel, strides, pads, dilations)
    xp = pad_spatial(x, pads)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            yield (i, j), xp[:, :, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw]


class Columns(NamedTuple):
    """im2col patches [N * Ho * Wo, C * kh * kw] and the output grid they came from."""
    cols: np.ndarray
    n: int
    ho: int
    wo: int


def im2col(x: np.ndarray, kernel, strides, pads, dilations) -> Columns:
    """[N, C, H, W] -> patches (zero padding), in x's dtype."""
    kh, kw = kernel
    ho, wo = conv_geometry(x.shape[2], x.shape[3], kernel, strides, pads, dilations)
    xp = pad_spatial(x, pads)
    n, c = xp.shape[:2]
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, ho, wo, c, kh, kw),
        (s[0], s[2] * strides[0], s[3] * strides[1], s[1], s[2] * dilations[0], s[3] * dilations[1]), writeable=False)
    return Columns(np.ascontiguousarray(view).reshape(n * ho * wo, c * kh * kw), n, ho, wo)
