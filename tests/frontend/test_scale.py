"""Big models: a 100 000-node chain and a 10 000-wide fan-out import without recursion, and weights are not copied needlessly.

Each check runs in a fresh subprocess: the chain with a recursion limit far below its length (so any
recursion over the graph fails), the memory checks so that the peak RSS belongs to the import alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, cwd: Path, timeout: float = 600) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_100k_node_chain(tmp_path):
    out = run_python("""
        import json, sys, time
        import numpy as np
        from onnx import helper, TensorProto
        from tritc.frontend.onnx import import_model
        from tritc.ir.dot import to_dot
        from tritc.ir.interpreter import Interpreter
        from tritc.ir.text import print_graph

        n = 100_000
        nodes = [helper.make_node("Abs" if i % 2 else "Neg", [f"v{i}"], [f"v{i + 1}"], name=f"n{i}") for i in range(n)]
        g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("v0", TensorProto.FLOAT, ["b", 3])],
                              [helper.make_tensor_value_info(f"v{n}", TensorProto.FLOAT, ["b", 3])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        sys.setrecursionlimit(400)  # far below the chain's length: recursion over the graph would fail
        t = time.perf_counter()
        graph = import_model(m)
        t_import = time.perf_counter() - t
        text = print_graph(graph)
        dot = to_dot(graph)
        y = Interpreter(graph).run({"v0": np.array([[1, -2, 3]], np.float32)})[f"v{n}"]
        print(json.dumps({"nodes": len(graph), "lines": text.count("\\n"), "edges": dot.count(" -> "), "y": y.tolist(),
                          "shape": graph.outputs[0].type.shape, "seconds": t_import}))
    """, tmp_path)
    r = json.loads(out)
    assert r["nodes"] == 100_000 and r["lines"] == 100_003 and r["edges"] == 100_001
    assert r["y"] == [[1.0, 2.0, 3.0]] and r["shape"] == ["b", 3]  # abs(neg(x)), 50 000 times
    assert r["seconds"] < 300, f"import took {r['seconds']:.0f} s"


@pytest.mark.slow
def test_10k_wide_fan_out(tmp_path):
    out = run_python("""
        import time
        from onnx import helper, TensorProto
        from tritc.frontend.onnx import import_model

        n = 10_000
        nodes = [helper.make_node("Relu", ["x"], [f"y{i}"]) for i in range(n)]
        g = helper.make_graph(nodes, "fan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2, 3]) for i in range(n)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        t = time.perf_counter()
        graph = import_model(m)
        print(len(graph.inputs[0].uses), len(graph.outputs), f"{time.perf_counter() - t:.1f}")
    """, tmp_path)
    uses, outputs, seconds = out.split()
    assert int(uses) == 10_000 and int(outputs) == 10_000
    assert float(seconds) < 60, f"import took {seconds} s"


_MEMORY = """
    import gc, sys
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from tritc.frontend.onnx import load_model

    MB = 2**20
    n, size = 4, 16 * MB

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    nodes, inits, prev = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array(np.full((size // 4096, 1024), i, np.float32), f"w{i}"))
        nodes.append(helper.make_node("Add", [prev, f"w{i}"], [f"a{i}"]))
        prev = f"a{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [size // 4096, 1024])],
                          [helper.make_tensor_value_info(prev, 1, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if EXTERNAL:
        onnx.save(m, "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="m.data")
    else:
        onnx.save(m, "m.onnx")
    del m, g, inits
    gc.collect()
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    graph = load_model("m.onnx")
    assert sorted(float(w[0, 0]) for w in graph.weights.values()) == [0.0, 1.0, 2.0, 3.0]
    print((status("VmHWM") - base) / (n * size))
"""


@pytest.mark.slow
@pytest.mark.parametrize("external, bound", [(False, 3.0), (True, 1.4)], ids=["inline", "external"])
def test_weights_are_not_copied_needlessly(tmp_path, external, bound):
    """Peak memory of loading 64 MiB of weights, in multiples of 64 MiB.

    Inline: the file's bytes and the parsed protobuf exist together while parsing (2x), then the
    protobuf and the arrays (2x); a copy of the model for shape inference or a second copy of each
    array would push it past 3x. External: the arrays are read straight from the file (1x)."""
    ratio = float(run_python(f"EXTERNAL = {external}\n" + textwrap.dedent(_MEMORY), tmp_path))
    assert ratio < bound, f"peak memory {ratio:.2f}x the weights"
