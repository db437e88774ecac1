"""Co-simulation and the RTL device's plumbing: CosimDevice on streams built directly (both devices end with the same
DRAM; a corrupted byte is reported with its address and tensor; a GEMM stream compared, a stream the core stops at
(EXP) run on the Simulator alone and reported), `tritc hw cosim` on the digits classifier (its device stream of
GEMMs and VOPs identical), `tritc.load(path, device="rtl")`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.cli import main
from tritc.codegen.fpga.isa import Buf, Instr, Op, VFunc
from tritc.errors import AcceleratorTimeoutError, OptionError
from tritc.runtime.cosim import CosimDevice, CosimMismatchError, format_reports
from tritc.runtime.fpga_model import make_device
from tritc.runtime.rtl import RtlDevice

from .conftest import DIGITS as DIGITS_CONFIG
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


def test_cosim_device_compares_a_gemm_stream_and_reports_a_refused_vop():
    from tritc.hw.vector_units import DivSqrtLanes

    dev = CosimDevice(SMALL, dram_bytes=DRAM, vector_units=(DivSqrtLanes,))     # a core without the transcendentals
    store = Instr(Op.STORE, buf=Buf.ACC, sram_addr=0, dram_addr=0x400, rows=1, cols=4, dram_rs=16, dram_cs=4,
                  sram_rs=4)
    dev.load_stream([Instr(Op.GEMM, m=1, n=4, kw=1, reset=1, push_next=1), store.replace(pop_prev=1),
                     Instr(Op.FINISH)])
    dev.run()
    assert dev.reports[0].rtl is not None and dev.reports[0].mismatch is None
    exp = Instr(Op.VOP, func=VFunc.EXP, rows=1, cols=4, dst_buf=Buf.ACC, src1_buf=Buf.VEC, src1_cs=1, dst_cs=1,
                push_next=1)
    dev.load_stream([exp, store.replace(pop_prev=1), Instr(Op.FINISH)])
    dev.run()
    assert dev.reports[1].rtl is None
    assert dev.reports[1].skipped.startswith("not supported by the RTL core yet: the RTL core does not run EXP yet: "
                                             "it stopped at instruction 0 (VOP.EXP")
    assert np.array_equal(dev.rtl.dram, dev.sim.dram)     # the next stream starts from the same image


def test_device_names():
    assert isinstance(make_device("rtl", SMALL), RtlDevice)
    assert make_device(None, SMALL) is None
    with pytest.raises(OptionError, match="unknown device 'fpga'"):
        make_device("fpga", SMALL)


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtl") / "mlp.tritc"
    tritc.compile(str(DIGITS / "ternary_mlp.onnx"), target="fpga", fpga_config=DIGITS_CONFIG,
                  shapes={"batch": 1}).save(path)
    return path


def test_load_and_run_on_the_rtl_device(mlp_artifact):
    """tritc.load(device="rtl") runs the model's stream on the RTL core (its cycle budget says so: the compare of
    the same stream with the Simulator is the cosim command's test below)."""
    model = tritc.load(mlp_artifact, device="rtl")
    assert isinstance(model.device, RtlDevice)
    model.device.max_cycles = 300
    with pytest.raises(AcceleratorTimeoutError, match="accelerator timeout after 300 cycles"):
        model.run(None, {"x": np.zeros((1, 64), np.float32)})


def test_hw_cosim_command(capsys, tmp_path):
    """`tritc hw cosim` on the digits classifier: its one device stream (the three layers: 10 GEMMs, 51 VOPs)
    identical at FINISH."""
    config = tmp_path / "digits.json"
    config.write_text(json.dumps(DIGITS_CONFIG.to_json()))
    assert main(["hw", "cosim", str(DIGITS / "ternary_mlp.onnx"), "--shape", "batch=1", "--fpga-config",
                 str(config)]) == 0
    out = capsys.readouterr().out
    print("\n" + out)
    assert "Simulator cycles" in out and "RTL cycles" in out and "identical" in out
    assert "1 stream run(s) compared: DRAM identical at each FINISH" in out
    assert main(["hw"]) == 2
