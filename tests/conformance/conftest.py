"""The compiled node tests' summary line: how many passing cases ran compiled code (test_onnx_node_compiled.py)."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter) -> None:
    # user_properties travel from xdist workers with the reports, so this counts every worker's cases.
    cases = [(r.nodeid, dict(r.user_properties)) for r in terminalreporter.stats.get("passed", [])
             if r.when == "call" and any(k == "nodes_lowered" for k, _ in r.user_properties)]
    if not cases:
        return
    direct = [n for n, p in cases if p["nodes_lowered"]]
    unfolded = [n for n, p in cases if not p["nodes_lowered"] and p["nodes_lowered_unfolded"]]
    none = [n.rsplit("[", 1)[-1].rstrip("]") for n, p in cases if not p["nodes_lowered"] and not p["nodes_lowered_unfolded"]]
    terminalreporter.write_line(f"{len(direct) + len(unfolded)} of {len(cases)} passing compiled node tests ran compiled "
                                f"code ({len(unfolded)} of them only with specialisations that fold nothing)")
    if none:
        terminalreporter.write_line(f"ran no compiled code: {', '.join(none)}")
