"""The FPGA backend: the accelerator's configuration (config.py), its instruction set and binary encoding
(isa.py), the text listing (asm.py), the static checks of a stream (verify.py), the vector unit's arithmetic
(vector_unit.py) and the lowering of the scheduled IR to instruction streams (lower.py). docs/ISA.md is the
specification these implement."""
