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

    def wait_stores(self) -> None:
        """Compute waits until every store so far has written DRAM (before it overwrites what they read)."""
        for _ in range(self.stores):
            self.emit(Instr(Op.NOP, pop_next=1))
        self.stores = 0

    def finish(self) -> list[Instr]:
        for i in self.releases[-2:]:
            self.instrs[i] = self.instrs[i].replace(push_prev=0)
        self.wait_stores()
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
            # n columns of kw words, back to back in DRAM: one run however many rows.
            half = self.load_double(lambda h, j0=j0, n=n: load(Buf.WGT, h * half_bytes, w_dram + j0 * kw * wb,
                                                               n, kw * wb))
            self.use(Instr(Op.GEMM, acc_addr=acc_addr + j0, act_addr=act_addr, wgt_addr=half * half_bytes, m=1,
                           kw=kw, n=n, reset=1), release=True)


def gemv_weights(rng: np.random.Generator, K: int, N: int, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """Random trits W[K, N] and their DRAM image: column n as ceil(K/64) words (K padded with zero trits)."""
    W = rng.integers(-1, 2, (K, N)).astype(np.int8)
    kw = -(-K // 64)
    cols = np.zeros((N, 64 * kw), np.int8)
    cols[:, :K] = W.T
    return W, pack_words(cols, packing).reshape(-1)


# -- a decode step of a 2-layer, hidden-512 decoder (8 heads of 64, FFN 1536, a past of `ctx` positions) --------

HIDDEN, HEADS, HEAD_DIM, FFN = 512, 8, 64, 1536
# VEC word addresses
X, XN, T0, SC, Q, ATT, S, G, U, GAMMA, COS, SIN, KNEW = (0, 512, 1024, 3072, 4096, 4608, 5120, 8192, 9728, 11264,
                                                          12288, 12544, 16384)
ACT_X = 0


def _rmsnorm(b: StreamBuilder, src: int, gamma: int, n: int) -> None:
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, T0), row(Buf.VEC, src), row(Buf.VEC, src)))
    b.compute(vop(VFunc.RSUM, 1, n, row(Buf.VEC, SC), row(Buf.VEC, T0)))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, SC), row(Buf.VEC, SC), imm=1.0 / n))
    b.compute(vop(VFunc.ADD, 1, 1, row(Buf.VEC, SC), row(Buf.VEC, SC), imm=1e-5))
    b.compute(vop(VFunc.SQRT, 1, 1, row(Buf.VEC, SC), row(Buf.VEC, SC)))
    b.compute(vop(VFunc.RECIP, 1, 1, row(Buf.VEC, SC), row(Buf.VEC, SC)))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, XN), row(Buf.VEC, src), (Buf.VEC, SC, 0, 0)))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, XN), row(Buf.VEC, XN), row(Buf.VEC, gamma)))


def _quantise(b: StreamBuilder, src: int, n: int) -> None:
    """ACT <- sat8(rne(x * 127 / max|x|)); SC+1 keeps max|x| / 127 for the dequantisation."""
    b.compute(vop(VFunc.ABS, 1, n, row(Buf.VEC, T0), row(Buf.VEC, src)))
    b.compute(vop(VFunc.RMAX, 1, n, row(Buf.VEC, SC + 1), row(Buf.VEC, T0)))
    b.compute(vop(VFunc.RECIP, 1, 1, row(Buf.VEC, SC + 2), row(Buf.VEC, SC + 1)))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, SC + 2), row(Buf.VEC, SC + 2), imm=127.0))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, SC + 1), row(Buf.VEC, SC + 1), imm=1.0 / 127))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.ACT, ACT_X), row(Buf.VEC, src), (Buf.VEC, SC + 2, 0, 0)))


def _linear(b: StreamBuilder, w_dram: int, K: int, N: int, dst: int, tile: int) -> None:
    b.gemv(ACT_X, w_dram, K, N, 0, tile)
    b.compute(vop(VFunc.MUL, 1, N, row(Buf.VEC, dst), row(Buf.ACC, 0), (Buf.VEC, SC + 1, 0, 0)))


def _rotary(b: StreamBuilder, v: int, n: int) -> None:
    half = n // 2
    even, odd = (Buf.VEC, v, 0, 2), (Buf.VEC, v + 1, 0, 2)
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, T0), even, row(Buf.VEC, COS)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, T0 + half), odd, row(Buf.VEC, SIN)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, T0 + n), odd, row(Buf.VEC, COS)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, T0 + n + half), even, row(Buf.VEC, SIN)))
    b.compute(vop(VFunc.SUB, 1, half, even, row(Buf.VEC, T0), row(Buf.VEC, T0 + half)))
    b.compute(vop(VFunc.ADD, 1, half, odd, row(Buf.VEC, T0 + n), row(Buf.VEC, T0 + n + half)))


def decoder_step(cfg: FpgaConfig, rng: np.random.Generator, ctx: int = 128, layers: int = 2, tile: int = 16):
    """(instrs, dram image {addr: bytes}, probe): one decode step's stream. `probe` names where the first layer's
    quantised activations (ACT bytes) and its q projection's raw accumulators land in DRAM, and its weights."""
    b = StreamBuilder(cfg)
    image: dict[int, np.ndarray] = {}
    addr = 0x100000

    def put(arr: np.ndarray) -> int:
        nonlocal addr
        a = addr
        image[a] = arr
        addr += -(-arr.nbytes // 4096) * 4096
        return a

    x_in = put(rng.standard_normal(HIDDEN).astype(np.float32))
    tables = put(np.concatenate([np.ones(HIDDEN, np.float32), np.ones(HIDDEN, np.float32),
                                 np.cos(np.arange(256) * 0.01).astype(np.float32),
                                 np.sin(np.arange(256) * 0.01).astype(np.float32)]))
    for dst, src, n in ((X, x_in, HIDDEN), (GAMMA, tables, 2 * HIDDEN + 512)):
        b.load(load(Buf.VEC, dst, src, 1, n))
        b.use(Instr(Op.NOP))
    probe = {}
    for layer in range(layers):
        w = {name: gemv_weights(rng, k, n, cfg.weight_packing)
             for name, k, n in (("q", HIDDEN, HIDDEN), ("k", HIDDEN, HIDDEN), ("v", HIDDEN, HIDDEN),
                                ("o", HIDDEN, HIDDEN), ("gate", HIDDEN, FFN), ("up", HIDDEN, FFN),
                                ("down", FFN, HIDDEN))}
        wa = {name: put(img) for name, (_, img) in w.items()}
        kc = put(rng.standard_normal((HEADS, ctx + 1, HEAD_DIM)).astype(np.float32))
        vc = put(rng.standard_normal((HEADS, ctx + 1, HEAD_DIM)).astype(np.float32))
        kn, vn = KNEW + 2048 * layer, KNEW + 2048 * layer + HIDDEN

        _rmsnorm(b, X, GAMMA, HIDDEN)
        _quantise(b, XN, HIDDEN)
        if layer == 0:
            probe["act"], probe["acc"], probe["wq"] = addr, addr + 4096, w["q"][0]
            addr += 8192
            b.gemv(ACT_X, wa["q"], HIDDEN, HIDDEN, 0, tile)
            b.result(Instr(Op.NOP), store(Buf.ACT, ACT_X, probe["act"], 1, HIDDEN))
            b.result(Instr(Op.NOP), store(Buf.ACC, 0, probe["acc"], 1, HIDDEN))
            b.wait_stores()
            b.compute(vop(VFunc.MUL, 1, HIDDEN, row(Buf.VEC, Q), row(Buf.ACC, 0), (Buf.VEC, SC + 1, 0, 0)))
        else:
            _linear(b, wa["q"], HIDDEN, HIDDEN, Q, tile)
        _linear(b, wa["k"], HIDDEN, HIDDEN, kn, tile)
        _linear(b, wa["v"], HIDDEN, HIDDEN, vn, tile)
        _rotary(b, Q, HIDDEN)
        _rotary(b, kn, HIDDEN)
        kv_half = cfg.cache_buffer_bytes // 8
        for h in range(HEADS):
            qh = Q + HEAD_DIM * h
            half = b.load_double(lambda hf, a=kc + h * (ctx + 1) * HEAD_DIM * 4, kh=kv_half:
                                 load(Buf.KV, hf * kh, a, ctx, HEAD_DIM))
            b.use(vop(VFunc.MM, 1, ctx, row(Buf.VEC, S), row(Buf.VEC, qh), (Buf.KV, half * kv_half, HEAD_DIM, 1),
                      depth=HEAD_DIM), release=True)
            b.compute(vop(VFunc.MUL, 1, ctx, row(Buf.VEC, S), row(Buf.VEC, S), imm=0.125))
            b.compute(vop(VFunc.RMAX, 1, ctx, row(Buf.VEC, SC + 3), row(Buf.VEC, S)))
            b.compute(vop(VFunc.SUB, 1, ctx, row(Buf.VEC, S), row(Buf.VEC, S), (Buf.VEC, SC + 3, 0, 0)))
            b.compute(vop(VFunc.EXP, 1, ctx, row(Buf.VEC, S), row(Buf.VEC, S)))
            b.compute(vop(VFunc.RSUM, 1, ctx, row(Buf.VEC, SC + 4), row(Buf.VEC, S)))
            b.compute(vop(VFunc.RECIP, 1, 1, row(Buf.VEC, SC + 4), row(Buf.VEC, SC + 4)))
            b.compute(vop(VFunc.MUL, 1, ctx, row(Buf.VEC, S), row(Buf.VEC, S), (Buf.VEC, SC + 4, 0, 0)))
            half = b.load_double(lambda hf, a=vc + h * (ctx + 1) * HEAD_DIM * 4, kh=kv_half:
                                 load(Buf.KV, hf * kh, a, ctx, HEAD_DIM))
            b.use(vop(VFunc.MM, 1, HEAD_DIM, row(Buf.VEC, ATT + HEAD_DIM * h), row(Buf.VEC, S),
                      (Buf.KV, half * kv_half, 1, HEAD_DIM), depth=ctx), release=True)
        # The cache append: this step's keys and values go to position ctx of each head.
        b.result(Instr(Op.NOP), store(Buf.VEC, kn, kc + ctx * HEAD_DIM * 4, HEADS, HEAD_DIM,
                                      dram_rs=(ctx + 1) * HEAD_DIM * 4, sram_rs=HEAD_DIM))
        b.result(Instr(Op.NOP), store(Buf.VEC, vn, vc + ctx * HEAD_DIM * 4, HEADS, HEAD_DIM,
                                      dram_rs=(ctx + 1) * HEAD_DIM * 4, sram_rs=HEAD_DIM))
        _quantise(b, ATT, HIDDEN)
        _linear(b, wa["o"], HIDDEN, HIDDEN, T0 + HIDDEN, tile)
        b.compute(vop(VFunc.ADD, 1, HIDDEN, row(Buf.VEC, X), row(Buf.VEC, X), row(Buf.VEC, T0 + HIDDEN)))
        _rmsnorm(b, X, GAMMA + HIDDEN, HIDDEN)
        _quantise(b, XN, HIDDEN)
        _linear(b, wa["gate"], HIDDEN, FFN, G, tile)
        _linear(b, wa["up"], HIDDEN, FFN, U, tile)
        for ins in (vop(VFunc.NEG, 1, FFN, row(Buf.VEC, T0), row(Buf.VEC, G)),
                    vop(VFunc.EXP, 1, FFN, row(Buf.VEC, T0), row(Buf.VEC, T0)),
                    vop(VFunc.ADD, 1, FFN, row(Buf.VEC, T0), row(Buf.VEC, T0), imm=1.0),
                    vop(VFunc.DIV, 1, FFN, row(Buf.VEC, G), row(Buf.VEC, G), row(Buf.VEC, T0)),
                    vop(VFunc.MUL, 1, FFN, row(Buf.VEC, G), row(Buf.VEC, G), row(Buf.VEC, U))):
            b.compute(ins)
        _quantise(b, G, FFN)
        _linear(b, wa["down"], FFN, HIDDEN, T0 + FFN, tile)
        b.compute(vop(VFunc.ADD, 1, HIDDEN, row(Buf.VEC, X), row(Buf.VEC, X), row(Buf.VEC, T0 + FFN)))
    probe["out"] = addr
    b.result(Instr(Op.NOP), store(Buf.VEC, X, addr, 1, HIDDEN))
    return b.finish(), image, probe
