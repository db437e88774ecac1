"""The FPGA simulator's report as text (tritc bench --target fpga, tritc run on an FPGA artifact)."""

from __future__ import annotations

from typing import Any

from .output import human_bytes, human_seconds


def format_fpga_report(stats: dict[str, Any]) -> str:
    """One block of lines: modelled time and its parts, DRAM traffic, utilisation, per-engine time, energy."""
    lines = [f"fpga ({stats.get('config', '?')}): {stats['cycles']:,} cycles = {human_seconds(stats['seconds'])} on the "
             f"device; host {human_seconds(stats['host_seconds'])}, host<->device {human_bytes(stats['host_device_bytes'])}"
             f" ({human_seconds(stats['transfer_seconds'])}); total {human_seconds(stats['total_seconds'])}, host share "
             f"{100 * stats['host_share']:.1f}%",
             f"  DRAM read {human_bytes(stats['dram_read_bytes'])}, written {human_bytes(stats['dram_write_bytes'])}; "
             f"{stats['ternary_ops']:,} ternary ops, matrix unit utilisation {100 * stats['matrix_utilisation']:.1f}%; "
             f"{stats['instructions']:,} instructions in {stats['device_runs']} device run(s)"]
    engines = stats.get("engines") or {}
    if engines:
        lines.append("  engines: " + "; ".join(f"{name} busy {d.get('busy', 0):,} stall {d.get('stall', 0):,} cycles"
                                               for name, d in engines.items()))
    energy = stats.get("energy") or {}
    parts = ", ".join(f"{k} {v * 1e3:.3g} mJ" for k, v in energy.items() if v)
    lines.append(f"  energy {stats['energy_joules'] * 1e3:.3g} mJ" + (f" ({parts})" if parts else ""))
    for region in stats.get("regions") or []:
        lines.append(f"  {region}")
    return "\n".join(lines) + "\n"
