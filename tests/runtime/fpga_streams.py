"""Hand-written accelerator streams for the Simulator tests: small helpers for single instructions, a
double-buffered GEMV tile loop and a decoder-step-shaped stream (2 layers of hidden 512, or BitNet-2B-shaped) with
its token protocol.

Token protocol of `StreamBuilder` (what a lowering does, in miniature): every LOAD pushes l2c and the compute
instruction that uses it pops it, in order. Loads into a double-buffered region (weight tiles, cache tiles) use
half k % 2 for the k-th such load and, from the third on, pop c2l: the token the compute engine pushed when it
finished using load k - 2 (every use pushes one; the last two pushes are dropped at the end). Compute pushes c2s
when a result is ready; the store pops it, writes DRAM and pushes s2c, which compute pops before FINISH.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tritc.codegen.fpga.config import PRESETS, FpgaConfig
from tritc.codegen.fpga.isa import DEP_FLAGS, Buf, Instr, Op, VFunc, f32_bits, interleave_words, pack_words, padded_kw, wgt_span_words


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
        half_bytes = wgt_half(self.cfg)
        assert wgt_span_words(tile, kw, self.cfg.matrix_rows, self.cfg.words_per_beat) * self.cfg.word_bytes \
            <= half_bytes
        for j0 in range(0, N, tile):
            n = min(tile, N - j0)
            half = self.load_double(lambda h, j0=j0, n=n: tile_load(self.cfg, h * half_bytes, w_dram, K, N, j0, n))
            self.use(Instr(Op.GEMM, acc_addr=acc_addr + j0, act_addr=act_addr, wgt_addr=half * half_bytes, m=1,
                           kw=kw, n=n, reset=1), release=True)


def wgt_half(cfg: FpgaConfig) -> int:
    """Half of WGT in whole weight beats: both halves start where a GEMM may read (a multiple of the beat)."""
    return cfg.weight_buffer_bytes // 2 // cfg.weight_beat_bytes * cfg.weight_beat_bytes


def tile_load(cfg: FpgaConfig, sram_addr: int, w_dram: int, K: int, N: int, j0: int, n: int, **flags) -> Instr:
    """The LOAD of columns j0..j0+n of a gemv_weights image (ISA v3 layout) to WGT sram_addr, as a GEMM of n columns
    reads them: whole blocks of matrix_rows columns in one run (the image pads the last block), or a part of one
    block as one row of n * P words per beat into the first slots of each beat."""
    rows, per_beat, wb = cfg.matrix_rows, cfg.words_per_beat, cfg.word_bytes
    block = padded_kw(-(-K // 64), per_beat) * rows * wb
    at = w_dram + j0 // rows * block
    if j0 % rows == 0 and (n % rows == 0 or j0 + n == N):
        return load(Buf.WGT, sram_addr, at, 1, -(-n // rows) * block, **flags)
    assert j0 // rows == (j0 + n - 1) // rows, "a tile of part of a block stays inside it"
    beat = cfg.weight_beat_bytes
    return load(Buf.WGT, sram_addr, at + j0 % rows * per_beat * wb, block // beat, n * per_beat * wb, dram_rs=beat,
                sram_rs=beat, **flags)


def weight_image_bytes(cfg: FpgaConfig, K: int, N: int) -> int:
    """The bytes of a gemv_weights image: N padded to whole blocks, each column's words to whole beats."""
    return wgt_span_words(N, -(-K // 64), cfg.matrix_rows, cfg.words_per_beat) * cfg.word_bytes


def gemv_weights(rng: np.random.Generator, K: int, N: int, cfg: FpgaConfig) -> tuple[np.ndarray, np.ndarray]:
    """Random trits W[K, N] and their DRAM image for `cfg`: column n as ceil(K/64) words (K padded with zero trits),
    interleaved in blocks of matrix_rows columns by beats (ISA v3, isa.interleave_words)."""
    W = rng.integers(-1, 2, (K, N)).astype(np.int8)
    kw = -(-K // 64)
    cols = np.zeros((N, 64 * kw), np.int8)
    cols[:, :K] = W.T
    image = interleave_words(pack_words(cols, cfg.weight_packing), cfg.matrix_rows, cfg.words_per_beat, cfg.word_bytes)
    return W, np.frombuffer(image, np.uint8)


# -- a decode step of a decoder: 2 layers of hidden 512 by default, or BitNet-2B-shaped -------------------------

@dataclass(frozen=True)
class DecoderShape:
    hidden: int = 512
    heads: int = 8
    kv_heads: int = 8          # grouped-query attention: heads // kv_heads query heads share a key / value head
    head_dim: int = 64
    ffn: int = 1536
    layers: int = 2
    ctx: int = 128             # past positions attended to; this step's key and value are appended at `ctx`
    vocab: int = 0             # an LM head of `vocab` columns after the last layer (0: none)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


SMALL = DecoderShape()
BITNET_2B = DecoderShape(hidden=2560, heads=20, kv_heads=5, head_dim=128, ffn=6912, layers=30, ctx=128,
                         vocab=128256)
LOGITS_CHUNK = 4096   # LM head columns per pass through ACC (vocab is larger than the accumulators)
ACT_X = 0             # ACT byte address of the quantised activations


class VecLayout:
    """VEC word addresses of a decode step's working rows, one region after another."""

    def __init__(self, sh: DecoderShape):
        group = sh.heads // sh.kv_heads
        sizes = dict(X=sh.hidden, XN=sh.hidden, T0=max(2 * sh.q_dim, 2 * sh.hidden, sh.ffn + sh.hidden),
                     SC=8 + 2 * group, Q=sh.q_dim, ATT=sh.q_dim, S=group * sh.ctx, G=sh.ffn, U=sh.ffn,
                     GAMMA=2 * sh.hidden, COS=sh.q_dim // 2, SIN=sh.q_dim // 2,
                     LOGITS=min(sh.vocab, LOGITS_CHUNK), KNEW=2 * sh.kv_dim * sh.layers)
        addr = 0
        for name, n in sizes.items():
            setattr(self, name, addr)
            addr += -(-n // 64) * 64
        self.end = addr
        self.SCM, self.SCS = self.SC + 8, self.SC + 8 + group     # per query head of a group: max, then sum


def _rmsnorm(b: StreamBuilder, v: VecLayout, src: int, gamma: int, n: int) -> None:
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, v.T0), row(Buf.VEC, src), row(Buf.VEC, src)))
    b.compute(vop(VFunc.RSUM, 1, n, row(Buf.VEC, v.SC), row(Buf.VEC, v.T0)))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, v.SC), row(Buf.VEC, v.SC), imm=1.0 / n))
    b.compute(vop(VFunc.ADD, 1, 1, row(Buf.VEC, v.SC), row(Buf.VEC, v.SC), imm=1e-5))
    b.compute(vop(VFunc.SQRT, 1, 1, row(Buf.VEC, v.SC), row(Buf.VEC, v.SC)))
    b.compute(vop(VFunc.RECIP, 1, 1, row(Buf.VEC, v.SC), row(Buf.VEC, v.SC)))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, v.XN), row(Buf.VEC, src), (Buf.VEC, v.SC, 0, 0)))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, v.XN), row(Buf.VEC, v.XN), row(Buf.VEC, gamma)))


def _quantise(b: StreamBuilder, v: VecLayout, src: int, n: int) -> None:
    """ACT <- sat8(rne(x * 127 / max|x|)); SC+1 keeps max|x| / 127 for the dequantisation."""
    b.compute(vop(VFunc.ABS, 1, n, row(Buf.VEC, v.T0), row(Buf.VEC, src)))
    b.compute(vop(VFunc.RMAX, 1, n, row(Buf.VEC, v.SC + 1), row(Buf.VEC, v.T0)))
    b.compute(vop(VFunc.RECIP, 1, 1, row(Buf.VEC, v.SC + 2), row(Buf.VEC, v.SC + 1)))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, v.SC + 2), row(Buf.VEC, v.SC + 2), imm=127.0))
    b.compute(vop(VFunc.MUL, 1, 1, row(Buf.VEC, v.SC + 1), row(Buf.VEC, v.SC + 1), imm=1.0 / 127))
    b.compute(vop(VFunc.MUL, 1, n, row(Buf.ACT, ACT_X), row(Buf.VEC, src), (Buf.VEC, v.SC + 2, 0, 0)))


def _linear(b: StreamBuilder, v: VecLayout, w_dram: int, K: int, N: int, dst: int, tile: int) -> None:
    b.gemv(ACT_X, w_dram, K, N, 0, tile)
    b.compute(vop(VFunc.MUL, 1, N, row(Buf.VEC, dst), row(Buf.ACC, 0), (Buf.VEC, v.SC + 1, 0, 0)))


def _rotary(b: StreamBuilder, v: VecLayout, x: int, n: int) -> None:
    half, t0 = n // 2, v.T0
    even, odd = (Buf.VEC, x, 0, 2), (Buf.VEC, x + 1, 0, 2)
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, t0), even, row(Buf.VEC, v.COS)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, t0 + half), odd, row(Buf.VEC, v.SIN)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, t0 + n), odd, row(Buf.VEC, v.COS)))
    b.compute(vop(VFunc.MUL, 1, half, row(Buf.VEC, t0 + n + half), even, row(Buf.VEC, v.SIN)))
    b.compute(vop(VFunc.SUB, 1, half, even, row(Buf.VEC, t0), row(Buf.VEC, t0 + half)))
    b.compute(vop(VFunc.ADD, 1, half, odd, row(Buf.VEC, t0 + n), row(Buf.VEC, t0 + n + half)))


def _attention(b: StreamBuilder, v: VecLayout, sh: DecoderShape, kc: int, vc: int) -> None:
    """Per key / value head: its cache tiles through the two KV halves, the scores and softmax of its group of
    query heads as `group` rows, then their outputs."""
    ctx, hd, group = sh.ctx, sh.head_dim, sh.heads // sh.kv_heads
    kv_half = b.cfg.cache_buffer_bytes // 8
    rowmax, rowsum = (Buf.VEC, v.SCM, 1, 0), (Buf.VEC, v.SCS, 1, 0)     # one scalar per row, broadcast along it
    scores = (Buf.VEC, v.S, ctx, 1)
    for kvh in range(sh.kv_heads):
        h0 = kvh * group
        tile = kvh * (ctx + 1) * hd * 4
        half = b.load_double(lambda hf, a=kc + tile: load(Buf.KV, hf * kv_half, a, ctx, hd))
        b.use(vop(VFunc.MM, group, ctx, scores, (Buf.VEC, v.Q + hd * h0, hd, 1), (Buf.KV, half * kv_half, hd, 1),
                  depth=hd), release=True)
        b.compute(vop(VFunc.MUL, group, ctx, scores, scores, imm=float(hd) ** -0.5))
        b.compute(vop(VFunc.RMAX, group, ctx, (Buf.VEC, v.SCM, 1, 1), scores))
        b.compute(vop(VFunc.SUB, group, ctx, scores, scores, rowmax))
        b.compute(vop(VFunc.EXP, group, ctx, scores, scores))
        b.compute(vop(VFunc.RSUM, group, ctx, (Buf.VEC, v.SCS, 1, 1), scores))
        b.compute(vop(VFunc.RECIP, group, 1, (Buf.VEC, v.SCS, 1, 1), (Buf.VEC, v.SCS, 1, 1)))
        b.compute(vop(VFunc.MUL, group, ctx, scores, scores, rowsum))
        half = b.load_double(lambda hf, a=vc + tile: load(Buf.KV, hf * kv_half, a, ctx, hd))
        b.use(vop(VFunc.MM, group, hd, (Buf.VEC, v.ATT + hd * h0, hd, 1), scores, (Buf.KV, half * kv_half, 1, hd),
                  depth=ctx), release=True)


def decoder_step(cfg: FpgaConfig, rng: np.random.Generator | None, sh: DecoderShape = SMALL, tile: int = 16):
    """(instrs, dram image {addr: array}, probe): one decode step's stream. `probe` names where the first layer's
    quantised activations (ACT bytes) and its q projection's raw accumulators land in DRAM, and its weights
    (`wq`), and where the final hidden row and the logits (with an LM head) go. With `rng` None no data is made
    (the image is empty, `wq` None): the stream alone, for timing-only runs of shapes too large to fill."""
    b = StreamBuilder(cfg)
    v = VecLayout(sh)
    assert v.end * 4 <= cfg.vector_buffer_bytes, "the decode step's rows do not fit VEC"
    image: dict[int, np.ndarray] = {}
    addr = 0x100000

    def put(nbytes: int, make) -> int:
        nonlocal addr
        a = addr
        if rng is not None:
            image[a] = make()
        addr += -(-nbytes // 4096) * 4096
        return a

    def weights(K: int, N: int) -> tuple[int, np.ndarray | None]:
        made = gemv_weights(rng, K, N, cfg) if rng is not None else (None, None)
        return put(weight_image_bytes(cfg, K, N), lambda: made[1]), made[0]

    def normal(*shape: int) -> int:
        return put(4 * int(np.prod(shape)), lambda: rng.standard_normal(shape).astype(np.float32))

    x_in = normal(sh.hidden)
    tables = put(4 * (2 * sh.hidden + sh.q_dim), lambda: np.concatenate(
        [np.ones(2 * sh.hidden, np.float32), np.cos(np.arange(sh.q_dim // 2) * 0.01).astype(np.float32),
         np.sin(np.arange(sh.q_dim // 2) * 0.01).astype(np.float32)]))
    for dst, src, n in ((v.X, x_in, sh.hidden), (v.GAMMA, tables, 2 * sh.hidden + sh.q_dim)):
        b.load(load(Buf.VEC, dst, src, 1, n))
        b.use(Instr(Op.NOP))
    probe: dict = {}
    H, F = sh.hidden, sh.ffn
    for layer in range(sh.layers):
        w = {name: weights(k, n) for name, k, n in (("q", H, sh.q_dim), ("k", H, sh.kv_dim), ("v", H, sh.kv_dim),
                                                      ("o", sh.q_dim, H), ("gate", H, F), ("up", H, F),
                                                      ("down", F, H))}
        wa = {name: a for name, (a, _) in w.items()}
        kc = normal(sh.kv_heads, sh.ctx + 1, sh.head_dim)
        vc = normal(sh.kv_heads, sh.ctx + 1, sh.head_dim)
        kn = v.KNEW + 2 * sh.kv_dim * layer
        vn = kn + sh.kv_dim

        _rmsnorm(b, v, v.X, v.GAMMA, H)
        _quantise(b, v, v.XN, H)
        if layer == 0:
            probe["act"], probe["acc"], probe["wq"] = addr, addr + -(-H // 4096) * 4096, w["q"][1]
            addr = probe["acc"] + -(-4 * sh.q_dim // 4096) * 4096
            b.gemv(ACT_X, wa["q"], H, sh.q_dim, 0, tile)
            b.result(Instr(Op.NOP), store(Buf.ACT, ACT_X, probe["act"], 1, H))
            b.result(Instr(Op.NOP), store(Buf.ACC, 0, probe["acc"], 1, sh.q_dim))
            b.wait_stores()
            b.compute(vop(VFunc.MUL, 1, sh.q_dim, row(Buf.VEC, v.Q), row(Buf.ACC, 0), (Buf.VEC, v.SC + 1, 0, 0)))
        else:
            _linear(b, v, wa["q"], H, sh.q_dim, v.Q, tile)
        _linear(b, v, wa["k"], H, sh.kv_dim, kn, tile)
        _linear(b, v, wa["v"], H, sh.kv_dim, vn, tile)
        _rotary(b, v, v.Q, sh.q_dim)
        _rotary(b, v, kn, sh.kv_dim)
        _attention(b, v, sh, kc, vc)
        # The cache append: this step's keys and values go to position ctx of each head.
        cache_row = dict(dram_rs=(sh.ctx + 1) * sh.head_dim * 4, sram_rs=sh.head_dim)
        b.result(Instr(Op.NOP), store(Buf.VEC, kn, kc + sh.ctx * sh.head_dim * 4, sh.kv_heads, sh.head_dim,
                                      **cache_row))
        b.result(Instr(Op.NOP), store(Buf.VEC, vn, vc + sh.ctx * sh.head_dim * 4, sh.kv_heads, sh.head_dim,
                                      **cache_row))
        _quantise(b, v, v.ATT, sh.q_dim)
        _linear(b, v, wa["o"], sh.q_dim, H, v.T0 + H, tile)
        b.compute(vop(VFunc.ADD, 1, H, row(Buf.VEC, v.X), row(Buf.VEC, v.X), row(Buf.VEC, v.T0 + H)))
        _rmsnorm(b, v, v.X, v.GAMMA + H, H)
        _quantise(b, v, v.XN, H)
        _linear(b, v, wa["gate"], H, F, v.G, tile)
        _linear(b, v, wa["up"], H, F, v.U, tile)
        for ins in (vop(VFunc.NEG, 1, F, row(Buf.VEC, v.T0), row(Buf.VEC, v.G)),
                    vop(VFunc.EXP, 1, F, row(Buf.VEC, v.T0), row(Buf.VEC, v.T0)),
                    vop(VFunc.ADD, 1, F, row(Buf.VEC, v.T0), row(Buf.VEC, v.T0), imm=1.0),
                    vop(VFunc.DIV, 1, F, row(Buf.VEC, v.G), row(Buf.VEC, v.G), row(Buf.VEC, v.T0)),
                    vop(VFunc.MUL, 1, F, row(Buf.VEC, v.G), row(Buf.VEC, v.G), row(Buf.VEC, v.U))):
            b.compute(ins)
        _quantise(b, v, v.G, F)
        _linear(b, v, wa["down"], F, H, v.T0 + F, tile)
        b.compute(vop(VFunc.ADD, 1, H, row(Buf.VEC, v.X), row(Buf.VEC, v.X), row(Buf.VEC, v.T0 + F)))
    probe["out"] = addr
    addr += -(-4 * H // 4096) * 4096
    b.result(Instr(Op.NOP), store(Buf.VEC, v.X, probe["out"], 1, H))
    if sh.vocab:
        # The LM head, LOGITS_CHUNK columns at a time through ACC; each chunk's store overlaps the next chunk's
        # GEMMs, and the compute engine waits for it only before it overwrites the logits row.
        head, _ = weights(H, sh.vocab)
        probe["logits"] = addr
        _rmsnorm(b, v, v.X, v.GAMMA, H)
        _quantise(b, v, v.XN, H)
        for c0 in range(0, sh.vocab, LOGITS_CHUNK):
            n = min(LOGITS_CHUNK, sh.vocab - c0)
            assert c0 % cfg.matrix_rows == 0
            b.gemv(ACT_X, head + weight_image_bytes(cfg, H, c0), H, n, 0, tile)   # the chunk's first block
            b.wait_stores()
            b.compute(vop(VFunc.MUL, 1, n, row(Buf.VEC, v.LOGITS), row(Buf.ACC, 0), (Buf.VEC, v.SC + 1, 0, 0)))
            b.result(Instr(Op.NOP), store(Buf.VEC, v.LOGITS, probe["logits"] + 4 * c0, 1, n))
    return b.finish(), image, probe
