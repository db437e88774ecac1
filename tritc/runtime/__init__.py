"""Runtimes: load compiled code and run it (cpu.py), drive an FPGA device (fpga.py), the artifact file (artifact.py)."""
