"""Code generators: LLVM for CPUs (codegen/llvm) and instruction streams for the FPGA (codegen/fpga)."""
