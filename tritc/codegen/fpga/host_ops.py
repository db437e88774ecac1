"""The ops the accelerator does not run, each with the reason its nodes run on the host (through the LLVM backend).

DESIGN.md: an op is added in four places, its OpDef, its interpreter semantics, its LLVM lowering, and its FPGA
lowering or an explicit host fallback. This table is the explicit fallback; tests/codegen/test_op_coverage.py
checks that every op of the table is in exactly one of the FPGA lowerings (lower_ctx.LOWERINGS), the host ops of
lower.py (HOST_OPS: shape and index arithmetic) and this table. Reasons are what `tritc dump --pipeline fpga`
and `tritc compile --target fpga` print for the node.
"""

from __future__ import annotations

_BOOL = "boolean / comparison logic: mask preparation runs on the host (the vector unit computes fp32)"
_INT = "integer and bitwise arithmetic: the vector unit computes fp32"
_RARE = "no FPGA lowering yet (an activation decoders do not use)"
_TRIG = "no FPGA lowering yet (the vector unit has exp, sin, cos, tanh and erf, not this function)"
_QUANT = "ONNX integer quantisation ops: the FPGA pipeline uses ternary_matmul's int8 path instead"
_CNN = "convolution-network op: no FPGA lowering yet (ternary_conv runs on the matrix unit as im2col GEMMs)"
_INDEX = "data-dependent indexing: runs on the host"
_FOLDED = "rewritten away by the fpga pipeline (canonicalize, fold-ternary, fuse-attention) before lowering"

HOST_FALLBACK: dict[str, str] = {
    **dict.fromkeys(("and", "or", "xor", "not", "equal", "greater", "greater_or_equal", "less", "less_or_equal",
                     "is_inf", "is_nan"), _BOOL),
    **dict.fromkeys(("bit_shift", "bitwise_and", "bitwise_not", "bitwise_or", "bitwise_xor", "mod", "sign", "floor",
                     "ceil"), _INT),
    **dict.fromkeys(("acos", "acosh", "asin", "asinh", "atan", "atanh", "cosh", "sinh", "tan", "log", "softplus",
                     "softsign", "mish", "reduce_log_sum", "reduce_log_sum_exp", "log_softmax"), _TRIG),
    **dict.fromkeys(("celu", "elu", "selu", "leaky_relu", "prelu", "hard_sigmoid", "hard_swish", "shrink",
                     "thresholded_relu", "swiglu", "hardmax"), _RARE),
    **dict.fromkeys(("bipolar_quant", "quant", "quantize_linear", "dequantize_linear", "dynamic_quantize_linear",
                     "matmul_integer", "qlinear_matmul", "conv_integer", "qlinear_conv"), _QUANT),
    **dict.fromkeys(("conv", "conv_transpose", "average_pool", "global_average_pool", "global_lp_pool",
                     "global_max_pool", "lp_pool", "max_pool", "lrn", "batch_normalization", "instance_normalization",
                     "group_normalization", "lp_normalization", "mean_variance_normalization", "resize",
                     "depth_to_space", "space_to_depth", "pad", "center_crop_pad"), _CNN),
    **dict.fromkeys(("arg_max", "arg_min", "top_k", "one_hot", "gather_elements", "scatter_elements", "scatter_nd",
                     "reverse_sequence", "trilu", "eye_like", "constant_of_shape", "tile", "size", "cum_sum",
                     "cum_prod", "reduce_prod", "reduce_l1", "reduce_l2", "reduce_sum_square"),
                    "no FPGA lowering yet: index, scan or rare reduction ops run on the host"),
    **dict.fromkeys(("gemm", "einsum", "attention", "linear_attention", "dropout", "cast_like", "fused_elementwise"),
                    _FOLDED),
}
