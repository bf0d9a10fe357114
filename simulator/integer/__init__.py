"""Exact integer accumulation (matmul, conv) and accumulator-width handling, one concern per module.

Operands are integers (codes minus zero points). Three engines, each used only where it is exact:
- float BLAS (torch): every partial sum of K products with |a| <= a_max, |b| <= b_max is an integer
  of magnitude <= K * a_max * b_max; float32 / float64 represent every integer below 2^24 / 2^53, so
  if the bound (from the storage bit widths, checked in bounds.accumulate_dtype) is below that, the
  product is exact whatever order BLAS sums in (reduced-precision bf16/tf32 modes and Winograd/FFT
  convolutions are refused or switched off, see matmul.exact_matmul / conv.exact_conv2d); else int64;
- int8 dot products (torch._int_mm on VNNI/AMX, int8.py): operands split exactly into int8 parts,
  int32 accumulators that cannot overflow (K <= INT8_MAX_K), parts combined in int32/int64 by a bound;
  used only if int8.int8_engine() (CPU check + worst-case self-test) holds;
- int64 numpy arithmetic as the last resort.
Integers are integers: whichever engine runs, the accumulators are the same numbers.

    bounds.py       exactness bounds, the accumulation type, the accumulator width (wrap / saturate)
    threads.py      torch thread counts for small products, the block thread pool
    int8.py         the int8 dot-product engine: CPU check, self-test, int8 parts, products
    matmul.py       exact integer matmul
    geometry.py     convolution output size (derived once), windows per kernel offset, im2col
    conv.py         float and exact integer 2-D convolution
    conv_groups.py  split-K convolutions: one accumulator per input-channel or input-pixel group
"""
from simulator.integer.bounds import (FLOAT32_EXACT, FLOAT64_EXACT, INT64_EXACT, AccumulatorResult,
                                      accumulate_dtype, accumulation_bound, apply_accumulator_width)
from simulator.integer.conv import conv2d, exact_conv2d, int8_conv2d, int_conv2d
from simulator.integer.conv_groups import (ChannelLayout, channel_group_layout, int_conv2d_channel_groups,
                                           int_conv2d_pixel_groups)
from simulator.integer.geometry import ConvGeometry, conv_geometry, conv_windows, im2col
from simulator.integer.int8 import INT8_MAX_K, int8_engine, int8_matmul, int8_parts
from simulator.integer.matmul import exact_matmul, int_matmul
from simulator.integer.threads import SMALL_WORK, run_blocks, serialised, threads_for

__all__ = ["FLOAT32_EXACT", "FLOAT64_EXACT", "INT64_EXACT", "AccumulatorResult", "accumulate_dtype",
           "accumulation_bound", "apply_accumulator_width", "conv2d", "exact_conv2d", "int8_conv2d", "int_conv2d",
           "ChannelLayout", "channel_group_layout", "int_conv2d_channel_groups", "int_conv2d_pixel_groups",
           "ConvGeometry", "conv_geometry", "conv_windows", "im2col", "INT8_MAX_K", "int8_engine", "int8_matmul",
           "int8_parts", "exact_matmul", "int_matmul", "SMALL_WORK", "run_blocks", "serialised", "threads_for"]
