"""The Verilog-level run (tritc/hw/cocotb_run.py): the core's Verilog in Icarus through cocotb runs the copy stream
through every buffer to the Simulator's DRAM, bit for bit, in as many cycles as the same core in Amaranth's
simulator; a stream missing a token ends in the core's deadlock, reported, not a hang. Skipped without iverilog or
cocotb (make hw-sim installs both); about 16 s."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tritc.codegen.fpga.isa import Instr, Op, encode_stream

from .conftest import SMALL

pytest.importorskip("cocotb", reason="cocotb is not installed (pip install -e .[hw], or make hw-sim)")
if shutil.which("iverilog") is None:
    pytest.skip("iverilog is not installed (apt-get install iverilog, or make hw-sim)", allow_module_level=True)

from tritc.hw import cocotb_run  # noqa: E402
from tritc.hw.cocotb_run import compare, copy_stream, main, run_verilog  # noqa: E402

DRAM = 4096


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cocotb")      # one folder: the core's Verilog is compiled once for the module


def test_copy_stream_in_verilog_matches_the_simulator_and_amaranth(workdir, capsys):
    assert cocotb_run.SMALL.validate() == SMALL                  # --fpga-config small is the tests' build
    image = np.random.default_rng(3).integers(0, 256, DRAM, dtype=np.uint8)
    r = compare(SMALL, copy_stream(), image, amaranth=True, workdir=workdir)
    v = r["verilog"]
    assert r["mismatch"] is None, r["mismatch"]
    assert v["outcome"] == "stopped" and v["finished"] == 1 and v["instructions"] == len(copy_stream())
    assert v["write_bytes"] == 4 * 24 + 40 + 4 * 16 + 4 * 16       # VEC, ACT, ACC and KV stored
    assert not np.array_equal(v["dram"], image)                  # the stores changed DRAM
    assert v["cycles"] == r["amaranth"]["cycles"] and r["amaranth"]["same_dram"]   # cycle for cycle
    print(f"\ncopy: Verilog {v['cycles']} cycles, Amaranth {r['amaranth']['cycles']}, model {r['model']['cycles']}; "
          f"{v['simulator']}; {v['wall_seconds']:.1f} s")


def test_missing_token_is_the_cores_deadlock_and_a_binary_stream_runs(workdir, tmp_path, capsys):
    load = copy_stream()[0]
    stream = [load.replace(push_next=1), Instr(Op.NOP, pop_prev=1), Instr(Op.NOP, pop_prev=1), Instr(Op.FINISH)]
    v = run_verilog(SMALL, stream, np.zeros(DRAM, np.uint8), workdir=workdir)
    assert v["outcome"] == "stopped" and v["deadlock"] == 1 and v["finished"] == 0
    assert v["compute_index"] == 2 and v["compute_state"] == 1                 # the second NOP waits (State.POP)
    # The command line on a binary stream and its image: a deliberate fault in the image the Simulator does not
    # see would be a mismatch; here both see the same bytes and agree, exit 0.
    path, dram = tmp_path / "copy.bin", tmp_path / "dram.bin"
    path.write_bytes(encode_stream(copy_stream(), SMALL))
    np.random.default_rng(4).integers(0, 256, DRAM, dtype=np.uint8).tofile(dram)
    assert main([str(path), "--dram", str(dram), "--workdir", str(workdir)]) == 0
    assert "DRAM: identical to the Simulator" in capsys.readouterr().out
    assert main(["--simulator", "ghdl"]) == 2
    assert "--simulator ghdl: not one of icarus, verilator" in capsys.readouterr().err


def test_a_wrong_byte_in_the_verilog_dram_is_reported(workdir, monkeypatch, capsys):
    real = cocotb_run.run_verilog

    def faulty(*args, **kwargs):     # a deliberate fault: the Verilog run's DRAM gets one wrong byte in VEC's copy
        out = real(*args, **kwargs)
        out["dram"][0x805] ^= 0x10
        return out

    monkeypatch.setattr(cocotb_run, "run_verilog", faulty)
    assert main(["--workdir", str(workdir)]) == 1
    assert "DRAM: DRAM byte 0x805 differs: Simulator 0x" in capsys.readouterr().out


def test_gemv_in_verilog_matches_the_simulator(workdir):
    """The lowering's (1, 31) x (31, 16) ternary GEMV (VOPs quantising x, a GEMM, VOPs scaling y): runs once the
    core has its GEMM and vector engines built in (integrate-rtl), skipped before."""
    from tritc.hw.params import hw_params
    from tritc.hw.top import core_units

    if core_units(hw_params(SMALL)) != {"gemm", "vop"}:
        pytest.skip("the core has no GEMM and vector engines built in yet (tritc.hw.top.core_units is empty)")
    stream, image, where = cocotb_run.gemv_stream(SMALL)
    r = compare(SMALL, stream, image, workdir=workdir)
    assert r["mismatch"] is None, r["mismatch"]
    assert r["verilog"]["finished"] == 1 and not np.array_equal(r["verilog"]["dram"][where["y"]:where["y"] + 64],
                                                                image[where["y"]:where["y"] + 64])
