"""Hand-written accelerator streams for the Simulator tests: small helpers for single instructions, a
double-buffered GEMV tile loop and a decoder-step-shaped stream (2 layers, hidden 512) with its token protocol.

Token protocol of `StreamBuilder` (what a lowering does, in miniature): every LOAD pushes l2c and the compute
instruction that uses it pops it, in order. Loads into a double-buffered region (weight tiles, cache tiles) use
half k % 2 for the k-th such load and, from the third on, pop c2l: the token the compute engine pushed when it
finished using load k - 2 (every use pushes one; the last two pushes are dropped at the end). Compute pushes c2s
when a result is ready; the store pops it, writes DRAM and pushes s2c, which compute pops before FINISH.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tritc.codegen.fpga.config import PRESETS, FpgaConfig
from tritc.codegen.fpga.isa import DEP_FLAGS, Buf, Instr, Op, VFunc, f32_bits, pack_words


def config(name: str = "edge", **changes) -> FpgaConfig:
    return replace(PRESETS[name], name=f"test-{name}", **changes).validate()


def load(buf: Buf, sram_addr: int, dram_addr: int, rows: int, cols: int, *, dram_rs: int | None = None,
         dram_cs: int | None = None, sram_rs: int | None = None, **flags) -> Instr:
    item = 1 if buf in (Buf.WGT, Buf.ACT) else 4
    return Instr(Op.LOAD, buf=buf, sram_addr=sram_addr, dram_addr=dram_addr, rows=rows, cols=cols,
                 dram_rs=cols * item if dram_rs is None else dram_rs, dram_cs=item if dram_cs is None else dram_cs,
                 sram_rs=cols if sram_rs is None else sram_rs, **flags)


def store(buf: Buf, sram_addr: int, dram_addr: int, rows: int, cols: int, **kw) -> Instr:
    flags = {k: kw.pop(k) for k in list(kw) if k in DEP_FLAGS}
    return Instr(Op.STORE, **load(buf, sram_addr, dram_addr, rows, cols, **kw).fields, **flags)


def operand(prefix: str, view: tuple[Buf, int, int, int] | None) -> dict[str, int]:
    if view is None:
        return {}
    buf, addr, rs, cs = view
    return {f"{prefix}_buf": buf, f"{prefix}_addr": addr, f"{prefix}_rs": rs, f"{prefix}_cs": cs}


def vop(func: VFunc, rows: int, cols: int, dst, src1=None, src2=None, *, imm: float | int | None = None,
        depth: int = 0, **flags) -> Instr:
    """A VOP; views are (buf, addr, rs, cs); a float imm is stored as its fp32 bits (REQ: the int as is)."""
    fields = dict(func=func, rows=rows, cols=cols, depth=depth, **operand("dst", dst), **operand("src1", src1),
                  **operand("src2", src2))
    if imm is not None:
        fields["imm"] = imm if func == VFunc.REQ else f32_bits(imm)
        fields["use_imm"] = int(src2 is None and func not in (VFunc.WHERE, VFunc.FILL, VFunc.REQ))
    return Instr(Op.VOP, **fields, **flags)


def row(buf: Buf, addr: int, cs: int = 1) -> tuple[Buf, int, int, int]:
    return (buf, addr, 0, cs)


class StreamBuilder:
    """Builds streams with the token protocol of the module docstring."""

    def __init__(self, cfg: FpgaConfig):
        self.cfg = cfg
        self.instrs: list[Instr] = []
        self.double_loads = 0
        self.releases: list[int] = []     # compute instructions that push c2l (release a buffer half)
        self.stores = 0

    def emit(self, ins: Instr) -> int:
        self.instrs.append(ins)
        return len(self.instrs) - 1

    def load(self, ins: Instr) -> None:
        """A load the next compute instruction (marked with `use`) waits for."""
        self.emit(ins.replace(push_next=1))

    def load_double(self, make) -> int:
        """A load into half k % 2 of a double-buffered region: `make(half)` gives the LOAD."""
        half = self.double_loads % 2
        ins = make(half).replace(push_next=1, pop_next=int(self.double_loads >= 2))
        self.double_loads += 1
        self.emit(ins)
        return half

    def use(self, ins: Instr, *, release: bool = False) -> None:
        """The compute instruction that consumes the oldest load; `release`: it frees a double-buffered half."""
        i = self.emit(ins.replace(pop_prev=1, push_prev=int(release)))
        if release:
            self.releases.append(i)

    def compute(self, ins: Instr) -> None:
        self.emit(ins)

    def result(self, ins: Instr, st: Instr) -> None:
        """`ins` computes a result that the store `st` writes to DRAM."""
        self.emit(ins.replace(push_next=1))
        self.emit(st.replace(pop_prev=1, push_prev=1))
        self.stores += 1

    def finish(self) -> list[Instr]:
        for i in self.releases[-2:]:
            self.instrs[i] = self.instrs[i].replace(push_prev=0)
        for _ in range(self.stores):
            self.instrs.append(Instr(Op.NOP, pop_next=1))
        self.instrs.append(Instr(Op.FINISH))
        return self.instrs

    # -- a GEMV y[N] = x[K] @ W, weights tiled `tile` columns at a time through two WGT halves ---------------
    def gemv(self, act_addr: int, w_dram: int, K: int, N: int, acc_addr: int, tile: int) -> None:
        kw = -(-K // 64)
        wb = self.cfg.word_bytes
        half_bytes = self.cfg.weight_buffer_bytes // 2
        assert tile * kw * wb <= half_bytes
        for j0 in range(0, N, tile):
            n = min(tile, N - j0)
            half = self.load_double(lambda h, j0=j0, n=n: load(Buf.WGT, h * half_bytes, w_dram + j0 * kw * wb,
                                                               1, n * kw * wb))
            self.use(Instr(Op.GEMM, acc_addr=acc_addr + j0, act_addr=act_addr, wgt_addr=half * half_bytes, m=1,
                           kw=kw, n=n, reset=1), release=True)


def gemv_weights(rng: np.random.Generator, K: int, N: int, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """Random trits W[K, N] and their DRAM image: column n as ceil(K/64) words (K padded with zero trits)."""
    W = rng.integers(-1, 2, (K, N)).astype(np.int8)
    kw = -(-K // 64)
    cols = np.zeros((N, 64 * kw), np.int8)
    cols[:, :K] = W.T
    return W, pack_words(cols, packing).reshape(-1)
