"""Hand-written kernels (ternary matmul, float matmul, thread pool) emitted as LLVM IR."""
