"""The op dispatch table: ONNX op type (or `domain.op` for custom domains) -> run(ctx) -> outputs.

One op per module; `run` receives a NodeContext (inputs as float values or integer QTensors,
attributes, the target) and returns the list of outputs.
"""
from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG
from simulator.ops import (abs, add, arg_min, cast, clip, concat, constant, constant_of_shape, conv,
                           conv_integer, cos, dequantize_linear, dequantize_log, div, equal, erf, exp, expand,
                           flatten, floor, gather, gelu, gemm, greater, greater_or_equal, identity,
                           instance_normalization, layer_normalization, less, less_or_equal, log, matmul,
                           matmul_integer, max, min, mul, neg, not_, pow, qlinear_conv, qlinear_matmul,
                           quantize_dequantize_log, quantize_linear, quantize_log, range, reciprocal,
                           reduce_max, reduce_mean, relu, reshape, resize, round, shape, sigmoid, sin, slice,
                           softmax, split, sqrt, squeeze, sub, tanh, transpose, unsqueeze, where)

REGISTRY = {
    # arithmetic and elementwise (float32 / the input dtype)
    "Add": add.run, "Sub": sub.run, "Mul": mul.run, "Div": div.run, "Pow": pow.run,
    "Abs": abs.run, "Neg": neg.run, "Exp": exp.run, "Log": log.run, "Sqrt": sqrt.run,
    "Reciprocal": reciprocal.run, "Floor": floor.run, "Round": round.run, "Sin": sin.run, "Cos": cos.run,
    "Tanh": tanh.run, "Erf": erf.run, "Relu": relu.run, "Sigmoid": sigmoid.run, "Gelu": gelu.run,
    "Max": max.run, "Min": min.run, "Clip": clip.run, "Where": where.run,
    "Equal": equal.run, "Less": less.run, "Greater": greater.run, "Not": not_.run,
    "LessOrEqual": less_or_equal.run, "GreaterOrEqual": greater_or_equal.run,
    # reductions and normalisations
    "ArgMin": arg_min.run, "ReduceMax": reduce_max.run, "ReduceMean": reduce_mean.run,
    "Softmax": softmax.run, "InstanceNormalization": instance_normalization.run,
    "LayerNormalization": layer_normalization.run,
    # shapes and layout (layout-only ops carry integer codes along)
    "Constant": constant.run, "ConstantOfShape": constant_of_shape.run, "Shape": shape.run,
    "Gather": gather.run, "Reshape": reshape.run, "Transpose": transpose.run, "Unsqueeze": unsqueeze.run,
    "Squeeze": squeeze.run, "Flatten": flatten.run, "Concat": concat.run, "Slice": slice.run,
    "Split": split.run, "Expand": expand.run, "Cast": cast.run, "Identity": identity.run,
    "Resize": resize.run, "Range": range.run,
    # matrix products (integer when both operands are dequantized codes)
    "MatMul": matmul.run, "Gemm": gemm.run, "Conv": conv.run,
    # quantization and the ONNX integer ops
    "QuantizeLinear": quantize_linear.run, "DequantizeLinear": dequantize_linear.run,
    "MatMulInteger": matmul_integer.run, "ConvInteger": conv_integer.run,
    "QLinearMatMul": qlinear_matmul.run, "QLinearConv": qlinear_conv.run,
    # the DGQ log quantizer (model-local functions recognised by name, run as hardware would)
    f"{LOG_DOMAIN}.{QUANTIZE_LOG}": quantize_log.run, f"{LOG_DOMAIN}.{DEQUANTIZE_LOG}": dequantize_log.run,
    f"{LOG_DOMAIN}.{QUANTIZE_DEQUANTIZE_LOG}": quantize_dequantize_log.run,
}
