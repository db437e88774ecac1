"""Differential fuzzing of tritc (HARDENING.md J54): random valid ONNX graphs, compiled by tritc and run against
onnxruntime (and, for ternary graphs, the FPGA simulator against the interpreter).

    generate.py  seed -> a Case (an ONNX model over the supported ops, and feeds at several sizes of its dims)
    builder.py   the graph grown op by op from a pool of typed values (what keeps it valid and comparable)
    oracle.py    one case: compile, run, compare; the outcome (pass, unsupported, invalid, or a finding)
    campaign.py  many cases in a watched worker process (a hang or a crash is a finding), findings written out

`python -m tritc.fuzz --minutes N --seed S --out DIR` runs a campaign; docs/FUZZING.md describes it.
"""
