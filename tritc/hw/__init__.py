"""The accelerator of docs/ISA.md in RTL (Amaranth 0.5): small components with typed stream interfaces, each
checked against the Simulator's Python reference in its own testbench (tests/hw). docs/HW.md has the structure,
the decisions and what is built so far."""
