"""Co-simulation and the RTL device's plumbing: CosimDevice on streams built directly (both devices end with the same
DRAM; a corrupted byte is reported with its address and tensor), `tritc hw cosim` on a model (its GEMM / VOP streams
reported as not supported yet), `tritc.load(path, device="rtl")` and `tritc run --device rtl`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.cli import main
from tritc.codegen.fpga.isa import Buf, Instr, Op
from tritc.errors import OptionError
from tritc.runtime.cosim import CosimDevice, CosimMismatchError, format_reports
from tritc.runtime.fpga_model import make_device
from tritc.runtime.rtl import RtlDevice

from .conftest import SMALL

DIGITS = Path(__file__).resolve().parents[1] / "fixtures" / "digits"
DRAM = 4096


def copy_stream() -> list[Instr]:
    """DRAM [0x100, +96) through VEC to 0x800, and 40 bytes through ACT to 0x900, with the token relay between."""
    vec = dict(buf=Buf.VEC, sram_addr=8, rows=3, cols=8, dram_rs=32, dram_cs=4, sram_rs=8)
    act = dict(buf=Buf.ACT, sram_addr=3, rows=5, cols=8, dram_rs=8, dram_cs=1, sram_rs=9)
    return [Instr(Op.LOAD, dram_addr=0x100, **vec), Instr(Op.LOAD, dram_addr=0x200, **act, push_next=1),
            Instr(Op.NOP, pop_prev=1, push_next=1),
            Instr(Op.STORE, dram_addr=0x800, **vec, pop_prev=1), Instr(Op.STORE, dram_addr=0x900, **act),
            Instr(Op.FINISH)]


def test_cosim_device_compares_dram_at_finish(monkeypatch):
    dev = CosimDevice(SMALL, dram_bytes=DRAM, regions=[(0x800, 0x860, "tensor 'y'")])
    dev.write(0, np.random.default_rng(0).integers(0, 256, DRAM, dtype=np.uint8))
    dev.load_stream(copy_stream())
    stats = dev.run()
    (report,) = dev.reports
    assert report.mismatch is None and report.rtl["cycles"] > 0 and stats is report.sim
    assert np.array_equal(dev.read(0x800, 96), dev.read(0x100, 96))
    table = format_reports(dev.reports)
    assert f"{report.sim['cycles']:,}" in table and f"{report.rtl['cycles']:,}" in table and "identical" in table
    print("\n" + table)

    real_run = RtlDevice.run

    def faulty(self):   # a deliberate fault: the RTL's DRAM gets one wrong byte inside tensor 'y'
        out = real_run(self)
        self.dram[0x805] ^= 0x40
        return out

    monkeypatch.setattr(RtlDevice, "run", faulty)
    dev.load_stream(copy_stream())
    with pytest.raises(CosimMismatchError, match=r"DRAM byte 0x805 in tensor 'y' \(byte 5 of its 96\) differs: "
                                                 r"Simulator 0x.., RTL 0x.. \(1 byte differ\)"):
        dev.run()


def test_cosim_device_runs_a_gemm_stream_on_the_simulator_alone():
    dev = CosimDevice(SMALL, dram_bytes=DRAM)
    store = Instr(Op.STORE, buf=Buf.ACC, sram_addr=0, dram_addr=0x400, rows=1, cols=4, dram_rs=16, dram_cs=4,
                  sram_rs=4)
    dev.load_stream([Instr(Op.GEMM, m=1, n=4, kw=1, reset=1, push_next=1), store.replace(pop_prev=1),
                     Instr(Op.FINISH)])
    dev.run()
    assert dev.reports[0].rtl is None
    assert dev.reports[0].skipped == "not supported by the RTL core yet (instruction 0 is a GEMM)"
    assert np.array_equal(dev.rtl.dram, dev.sim.dram)     # the next stream starts from the same image


def test_device_names():
    assert isinstance(make_device("rtl", SMALL), RtlDevice)
    assert make_device(None, SMALL) is None
    with pytest.raises(OptionError, match="unknown device 'fpga'"):
        make_device("fpga", SMALL)


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtl") / "mlp.tritc"
    tritc.compile(str(DIGITS / "ternary_mlp.onnx"), target="fpga", shapes={"batch": 2}).save(path)
    return path


def test_load_and_run_on_the_rtl_device(mlp_artifact, tmp_path, capsys):
    model = tritc.load(mlp_artifact, device="rtl")
    assert isinstance(model.device, RtlDevice)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(tritc.errors.UnsupportedError, match="the RTL core does not run VOP/GEMM yet"):
        model.run(None, {"x": x})
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(mlp_artifact), "--input", f"x={tmp_path / 'x.npy'}", "--device", "rtl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tritc: error: the RTL core does not run VOP/GEMM yet" in err


def test_hw_cosim_command(capsys):
    assert main(["hw", "cosim", str(DIGITS / "ternary_mlp.onnx"), "--shape", "batch=2"]) == 0
    out = capsys.readouterr().out
    assert "Simulator cycles" in out and "RTL cycles" in out
    assert "not supported by the RTL core yet (instruction 1 is a VOP)" in out
    assert main(["hw"]) == 2
