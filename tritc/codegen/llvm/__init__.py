"""The LLVM CPU backend: lower a Graph to one LLVM module with a single entry point, then to code."""
