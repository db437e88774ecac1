"""tritc: a compiler for ternary neural networks (ONNX in, native CPU code or FPGA streams out)."""

__version__ = "0.1.0"
