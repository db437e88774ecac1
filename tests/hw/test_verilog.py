"""`tritc hw verilog`: a component of the small build as Verilog, the errors (one line, nothing written); and, where
Yosys is installed (`make hw`), the synthesis check that the matrix unit maps to no DSP block."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tritc.cli import main
from tritc.hw import top
from tritc.hw.synth import parse_stat, summarise, synthesise_verilog, yosys_version

from .conftest import SMALL


def write_config(tmp_path, config, name="small.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config.to_json()))
    return str(path)


# One tree of 16 lanes (the small build's others are copies of it): the Verilog both tests below read.
ONE_TREE = dataclasses.replace(SMALL, name="one-tree", matrix_rows=1).validate()


@pytest.fixture(scope="module")
def one_tree_verilog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verilog")
    out = folder / "mu.v"
    assert main(["hw", "verilog", "--fpga-config", write_config(folder, ONE_TREE), "-o", str(out)]) == 0
    return folder, out.read_text()


def test_matrix_unit_verilog(one_tree_verilog, capsys):
    folder, text = one_tree_verilog
    assert capsys.readouterr().err == ""
    # The default top; its ports are the stream signature's, the beat as one vector of 13 bytes, 16 bytes, part, last.
    header = re.search(r"^module matrix_unit\((.*)\);$", text, re.M)
    assert header, text[:300]
    assert set(header.group(1).split(", ")) == {"clk", "rst", "inp__valid", "inp__ready", "inp__payload",
                                                "out__valid", "out__ready", "out__payload"}
    assert re.search(r"input \[\d+:0\] inp__payload;", text)
    assert "input [" + str(13 * 8 + 16 * 8 + 2 + 1 - 1) + ":0] inp__payload;" in text
    assert "output [31:0] out__payload;" in text             # one int32 sum
    assert text.count("\nendmodule") == 1 + 1                # the top and the tree's word decoder
    assert "src =" not in text and str(folder) not in text    # the text depends on the config only
    assert text.endswith("endmodule\n")


def test_other_top(tmp_path):
    out = tmp_path / "lane.v"
    assert main(["hw", "verilog", "--top", "fp_add", "-o", str(out)]) == 0   # the edge preset by default
    assert re.search(r"^module fp_add\(", out.read_text(), re.M)


def test_registry_names():
    assert set(top.NAMES) == set(top.describe())
    assert top.DEFAULT_TOP in top.NAMES and not set(top.NOT_BUILT) & set(top.NAMES)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tritc: error: "), err
    return err


@pytest.mark.parametrize("argv, words", [
    (["--top", "gemm_feeder"], ["--top gemm_feeder", "no such component", "fp_sqrt"]),
    (["--fpga-config", "nonesuch"], ["unknown FPGA preset 'nonesuch'"]),
    # 3 masters' 2 KiB requests and the bus's responses: more input bits than Amaranth's back end numbers at a top.
    (["--fpga-config", "datacenter", "--top", "mem_arbiter"], ["--top mem_arbiter", "71,779 input bits", "65,536"]),
])
def test_errors_write_nothing(tmp_path, capsys, argv, words):
    out = tmp_path / "core.v"
    out.write_text("old")
    assert main(["hw", "verilog", *argv, "-o", str(out)]) == 2
    err = one_error(capsys)
    assert all(w in err for w in words), err
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["core.v"]


def test_config_the_rtl_cannot_build(tmp_path, capsys):
    # 192 lanes are a valid ISA config (a multiple of 64) and not an RTL one (the trees are balanced).
    bad = dataclasses.replace(SMALL, name="wide", matrix_lanes=192, activation_buffer_bytes=192 * 4).validate()
    out = tmp_path / "core.v"
    assert main(["hw", "verilog", "--fpga-config", write_config(tmp_path, bad), "-o", str(out)]) == 2
    err = one_error(capsys)
    assert "matrix_lanes" in err and "power of two" in err and "192" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["small.json"]


def test_missing_folder_refused_before_work(tmp_path, capsys):
    assert main(["hw", "verilog", "-o", str(tmp_path / "no" / "core.v")]) == 2
    assert "does not exist" in one_error(capsys)


def test_parse_stat():
    report = """
   Number of wires:                 12
   Number of cells:                 12
     CARRY4                          3
     FDRE                            2
     LUT2                            1
     LUT6                            2
     RAMB36E2                        1
     DSP48E2                         1
     RAM64M8                         2

"""
    assert summarise(parse_stat(report)) == {"luts": 3 + 16, "lutram_luts": 16, "ffs": 2, "carry4": 3, "carry8": 2,
                                             "bram36": 1, "bram18": 0, "uram": 0, "dsp": 1, "muxf": 0, "unknown_cells": 0}


needs_yosys = pytest.mark.skipif(yosys_version() is None, reason="yosys is not installed (make hw installs it); "
                                                                 "the synthesis check needs it")


class Multiply(wiring.Component):
    """What a DSP block is for: the check below must see one here, or it proves nothing about the matrix unit."""

    def __init__(self):
        super().__init__({"a": In(18), "b": In(18), "y": Out(36)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(self.a * self.b)
        return m


@needs_yosys
def test_matrix_unit_synthesises_to_no_dsp(one_tree_verilog):
    from amaranth.back import verilog

    # One tree (a few seconds of synth_xilinx): the trees are copies of each other; its word decoder (the base3
    # chain of shift-adds), products, adder levels and accumulator are all there.
    mu = synthesise_verilog("matrix_unit", one_tree_verilog[1], timeout=300)
    assert mu["dsp"] == 0 and mu["luts"] > 100 and mu["carry4"] > 0 and mu["ffs"] > 16 * 9
    mul = synthesise_verilog("mul", verilog.convert(Multiply(), name="mul"), timeout=300)
    assert mul["dsp"] >= 1
