"""LowerCtx: what every op's lowering shares: the stream builder, the on-chip buffers cut into banks and arenas,
where each value lives in DRAM, and one helper per instruction that also says which spans it touches.

Buffers: every buffer is cut into two halves. WGT's halves alternate per weight tile over the whole stream; ACT,
ACC, VEC and KV alternate per node (node i works in half i % 2), so the next node's loads never wait for this
node's stores to drain. Without double buffering only the first half of each is used, so that the comparison is
about overlap, not capacity. A lowering takes its working areas from its node's half with `ctx.arena(buf)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedError
from ...ir.graph import Graph, Node, Value
from ...ir.types import DType
from .config import FpgaConfig
from .isa import ELEM_BYTES, REDUCTIONS, Buf, Op, VFunc, f32_bits, wgt_span_words
from .lower_image import DramMap, WeightEntry, WeightImage
from .lower_stream import DRAM, Span, StreamBuilder, view_span

MAX_COUNT = (1 << 16) - 1        # rows, cols, depth, m, n fields
MAX_RS = (1 << 15) - 1           # a vector operand's row stride (16-bit signed)
MAX_CS = (1 << 11) - 1           # a vector operand's column stride (12-bit signed)
MAX_DRAM_CS = (1 << 15) - 1      # LOAD / STORE dram_cs (16-bit signed)


class LoweringError(UnsupportedError):
    """A node the lowering cannot make code for at these sizes (device_support should have said so)."""


@dataclass(frozen=True)
class View:
    """A vector operand: element (i, j) is buf[addr + i*rs + j*cs]."""

    buf: Buf
    addr: int
    rs: int = 0
    cs: int = 1

    def shift(self, i: int = 0, j: int = 0) -> View:
        return View(self.buf, self.addr + i * self.rs + j * self.cs, self.rs, self.cs)

    def with_strides(self, rs: int, cs: int) -> View:
        return View(self.buf, self.addr, rs, cs)


@dataclass(frozen=True)
class DTensor:
    """A tensor in DRAM: contiguous, row-major. `readonly`: the weight image or a preload (never written, so
    reading it needs no token)."""

    addr: int
    shape: tuple[int, ...]
    dtype: DType
    readonly: bool = False

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def strides(self) -> tuple[int, ...]:
        """Element strides."""
        out, acc = [], 1
        for d in reversed(self.shape):
            out.append(acc)
            acc *= d
        return tuple(reversed(out))


class Arena:
    """A bump allocator over [base, base + size) of one buffer, in the buffer's units."""

    def __init__(self, buf: Buf, base: int, size: int):
        self.buf, self.base, self.size, self.top = buf, base, size, base

    def alloc(self, n: int, what: str = "data") -> int:
        n = max(int(n), 0)
        if self.top + n > self.base + self.size:
            raise LoweringError(f"{what}: {n} more {Buf(self.buf).name} units do not fit the "
                                f"{self.size - (self.top - self.base)} left in this half of the buffer")
        addr, self.top = self.top, self.top + n
        return addr

    def view(self, n: int, rs: int = 0, cs: int = 1, what: str = "data") -> View:
        return View(self.buf, self.alloc(n, what), rs, cs)

    @property
    def free(self) -> int:
        return self.base + self.size - self.top


def buffer_units(config: FpgaConfig) -> dict[Buf, int]:
    return {Buf.WGT: config.weight_buffer_bytes, Buf.ACT: config.activation_buffer_bytes,
            Buf.ACC: config.accumulator_buffer_bytes // 4, Buf.VEC: config.vector_buffer_bytes // 4,
            Buf.KV: config.cache_buffer_bytes // 4}


def half_units(config: FpgaConfig, buf: Buf) -> int:
    return buffer_units(config)[buf] // 2


def wgt_half_bytes(config: FpgaConfig) -> int:
    """The largest weight tile: half of WGT in whole beats, so that both halves start beat-aligned (a GEMM's
    wgt_addr is a multiple of the beat, docs/ISA.md)."""
    beat = config.weight_beat_bytes
    return config.weight_buffer_bytes // 2 // beat * beat


class LowerCtx:
    def __init__(self, graph: Graph, config: FpgaConfig, dram: DramMap, weights: WeightImage, double_buffer: bool,
                 sizes: Mapping[str, int] | None = None):
        self.graph, self.config, self.dram, self.weights = graph, config, dram, weights
        self.sizes: Mapping[str, int] = sizes or {}            # the size binding being lowered (known_size)
        self.double_buffer = double_buffer
        self.s = StreamBuilder()
        self.units = buffer_units(config)
        self.half = {b: u // 2 for b, u in self.units.items()}
        self.nodes = 0
        self.wgt_turn = 0
        self._arenas: dict[Buf, Arena] = {}
        self.node: Node | None = None
        self.bank = 0
        self.epoch = [0, 0]                                    # per half: how many nodes have worked in it
        self.resident: dict[int, tuple[int, int, int, int]] = {}  # DRAM addr -> (VEC addr, bytes, half, epoch)
        self.readonly: set[str] = set()   # values in DRAM that nothing in the stream writes (no tokens to read)

    # ---- buffers ---------------------------------------------------------------------------------------
    def begin(self, node: Node) -> None:
        """A new node. Its half of ACT, ACC, VEC and KV (alternating with double buffering) is taken when it first
        asks for an arena: a node that emits nothing (an alias) takes none."""
        self.node = node
        self.s.mark(node.describe())
        self._arenas = {}

    def arena(self, buf: Buf) -> Arena:
        if not self._arenas:
            bank = self.nodes % 2 if self.double_buffer else 0
            self.nodes += 1
            self.bank = bank
            self.epoch[bank] += 1          # what earlier nodes left in this half is gone from now on
            self._arenas = {b: Arena(b, bank * self.half[b], self.half[b]) for b in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV)}
        return self._arenas[buf]

    # ---- values left in VEC by the previous node (on-chip forwarding) -------------------------------------
    def keep(self, t: DTensor, vec_addr: int) -> None:
        """The whole of `t` (fp32, row-major) is at VEC `vec_addr` in this node's half, after this node: the next
        node may read it there instead of from DRAM (the STORE to DRAM happens anyway)."""
        if t.dtype is DType.F32 and self._arenas:
            self.resident[t.addr] = (vec_addr, t.numel * 4, self.bank, self.epoch[self.bank])

    def resident_at(self, t: DTensor, offset: int = 0) -> int | None:
        """The VEC address of element offset `offset` (bytes) of `t` if all of `t` is still in VEC, else None."""
        r = self.resident.get(t.addr)
        if r is None or t.dtype is not DType.F32:
            return None
        self.arena(Buf.VEC)                # this node's half first: it may be the half the value is in
        addr, nbytes, bank, epoch = r
        if self.epoch[bank] != epoch or t.numel * 4 > nbytes or (self._arenas and bank == self.bank):
            return None
        return addr + offset // 4

    def slots(self) -> int:
        """How many tiles of a node are in flight at once: 2 with double buffering, else 1."""
        return 2 if self.double_buffer else 1

    def next_wgt_half(self, nbytes: int | None = None) -> int:
        """Where the next weight tile (of `nbytes`, at most wgt_half_bytes) goes: a multiple of the weight beat.
        With double buffering WGT is a ring: tiles follow each other (each from the next beat boundary) and wrap to 0
        when one would pass the end, so while the matrix unit multiplies one tile, the load engine may fill as many
        next ones as fit (halves alternate for tiles of a whole half). Without, every tile goes to 0."""
        if not self.double_buffer:
            return 0
        beat = self.config.weight_beat_bytes
        size = wgt_half_bytes(self.config) if nbytes is None else max(int(nbytes), 1)
        addr = -(-self.wgt_turn // beat) * beat
        if addr + size > self.units[Buf.WGT]:
            addr = 0
        self.wgt_turn = addr + size
        return addr

    # ---- values ----------------------------------------------------------------------------------------
    def scalar(self, v: Value | None) -> float | None:
        """The value of a one-element float constant (an immediate), else None."""
        if v is None or not v.type.dtype.is_float:
            return None
        data = self.graph.const_value(v)
        if data is None or isinstance(data, (str, bytes)) or not hasattr(data, "size"):
            return None
        a = np.asarray(data)
        return float(a.reshape(-1)[0].astype(np.float32)) if a.size == 1 else None

    def tensor(self, v: Value) -> DTensor:
        """Where `v` is in DRAM: an activation, an image entry, or a constant placed now as a preload."""
        if v.name in self.dram:
            p = self.dram[v.name]
            return DTensor(p.addr, p.shape, p.dtype, v.name in self.dram.preloads or v.name in self.readonly)
        if v.name in self.weights.entries:
            e = self.weights.entries[v.name]
            if e.kind == "dense":
                return DTensor(e.addr, e.shape, e.dtype, True)
        data = self.graph.const_value(v)
        if data is not None and isinstance(data, np.ndarray):
            p = self.dram.preload(v.name, data, v.type.dtype)
            return DTensor(p.addr, p.shape, p.dtype, True)
        raise LoweringError(f"value %{v.name} is not in DRAM (neither placed, in the weight image, nor a constant)")

    def output(self, v: Value) -> DTensor:
        p = self.dram.place(v.name, tuple(int(d) for d in v.type.shape), v.type.dtype)  # type: ignore[union-attr]
        return DTensor(p.addr, p.shape, p.dtype)

    # ---- transfers -------------------------------------------------------------------------------------
    def load(self, buf: Buf, sram: int, t: DTensor, offset: int, rows: int, cols: int, dram_rs: int,
             dram_cs: int | None = None, sram_rs: int | None = None) -> None:
        """rows x cols elements from DRAM t.addr + offset (bytes), element (r, c) at r*dram_rs + c*dram_cs."""
        self._transfer(Op.LOAD, buf, sram, t.addr + offset, rows, cols, dram_rs,
                       ELEM_BYTES[buf] if dram_cs is None else dram_cs, cols if sram_rs is None else sram_rs,
                       t.readonly)

    def store(self, buf: Buf, sram: int, t: DTensor, offset: int, rows: int, cols: int, dram_rs: int,
              dram_cs: int | None = None, sram_rs: int | None = None) -> None:
        self._transfer(Op.STORE, buf, sram, t.addr + offset, rows, cols, dram_rs,
                       ELEM_BYTES[buf] if dram_cs is None else dram_cs, cols if sram_rs is None else sram_rs, False)

    def _transfer(self, op: Op, buf: Buf, sram: int, dram: int, rows: int, cols: int, dram_rs: int, dram_cs: int,
                  sram_rs: int, readonly: bool) -> None:
        if rows <= 0 or cols <= 0:
            return
        e = ELEM_BYTES[buf]
        if dram_cs == e and sram_rs == cols and dram_rs == cols * e and rows > 1:
            # one contiguous run on both sides: as few, as long rows as the fields allow (one transfer if a row
            # count divides it evenly, else full rows and a remainder)
            total = rows * cols
            r = -(-total // MAX_COUNT)
            while total % r and r < 4 * -(-total // MAX_COUNT) + 64:
                r += 1
            if total % r == 0 and total // r <= MAX_COUNT:
                c = total // r
                self._transfer_raw(op, buf, sram, dram, r, c, c * e if r > 1 else 0, e, c if r > 1 else 0, readonly)
                return
            chunk = MAX_COUNT * e // self.config.dram_burst_bytes * self.config.dram_burst_bytes // e
            full, rest = divmod(total, chunk)
            self._transfer_raw(op, buf, sram, dram, full, chunk, chunk * e, e, chunk, readonly)
            self._transfer_raw(op, buf, sram + full * chunk, dram + full * chunk * e, 1, rest, 0, e, rest, readonly)
            return
        if abs(dram_cs) > MAX_DRAM_CS and cols > 1:
            for c in range(cols):   # a column stride the field cannot hold: one column at a time
                self._transfer(op, buf, sram + c, dram + c * dram_cs, rows, 1, dram_rs, e, sram_rs, readonly)
            return
        for c0 in range(0, cols, MAX_COUNT):
            cn = min(MAX_COUNT, cols - c0)
            for r0 in range(0, rows, MAX_COUNT):
                rn = min(MAX_COUNT, rows - r0)
                self._transfer_raw(op, buf, sram + r0 * sram_rs + c0, dram + r0 * dram_rs + c0 * dram_cs, rn, cn,
                                   dram_rs if rn > 1 else 0, dram_cs if cn > 1 else e, sram_rs if rn > 1 else 0,
                                   readonly)

    def _transfer_raw(self, op: Op, buf: Buf, sram: int, dram: int, rows: int, cols: int, dram_rs: int, dram_cs: int,
                      sram_rs: int, readonly: bool) -> None:
        e = ELEM_BYTES[buf]
        on_chip = view_span(int(buf), sram, rows, cols, sram_rs, 1)
        off_chip = view_span(DRAM, dram, rows, cols, dram_rs, dram_cs, e)
        dram_spans = [] if readonly else [off_chip]
        if op == Op.LOAD:
            reads, writes = dram_spans, [on_chip]
        else:
            reads, writes = [on_chip], dram_spans
        self.s.emit(op, reads, writes, buf=int(buf), sram_addr=sram, dram_addr=dram, rows=rows, cols=cols,
                    dram_rs=dram_rs, dram_cs=dram_cs, sram_rs=sram_rs)

    # ---- compute ---------------------------------------------------------------------------------------
    def gemm(self, acc: int, act: int, wgt: int, m: int, kw: int, n: int, act_rs: int, acc_rs: int,
             reset: bool) -> None:
        """A GEMM over the weights at WGT `wgt` (beat-aligned, ISA v3 layout): it reads their whole blocks."""
        c = self.config
        span = wgt_span_words(n, kw, c.matrix_rows, c.words_per_beat) * c.word_bytes
        reads = [view_span(int(Buf.ACT), act, m, 64 * kw, act_rs, 1), Span(int(Buf.WGT), wgt, wgt + span)]
        writes = [view_span(int(Buf.ACC), acc, m, n, acc_rs, 1)]
        self.s.emit(Op.GEMM, reads, writes, acc_addr=acc, act_addr=act, wgt_addr=wgt, m=m, kw=kw, n=n,
                    act_rs=act_rs, acc_rs=acc_rs, reset=int(reset))

    def vop(self, func: VFunc, rows: int, cols: int, dst: View, a: View | None = None,
            b: View | float | None = None, *, depth: int = 0, imm: float | None = None, imm_bits: int | None = None) -> None:
        """One vector instruction; an elementwise one too wide or with a row stride the fields cannot hold is split."""
        if rows <= 0 or cols <= 0:
            return
        if rows == 1:   # a row stride means nothing for one row (except MM's src2, whose rows are j): 0 fits its field
            dst, a = (v.with_strides(0, v.cs) if isinstance(v, View) else v for v in (dst, a))
            if func != VFunc.MM and isinstance(b, View):
                b = b.with_strides(0, b.cs)
        views = [v for v in (dst, a, b) if isinstance(v, View)]
        elementwise = func not in REDUCTIONS and func != VFunc.MM
        if elementwise and (cols > MAX_COUNT or (rows > 1 and any(abs(v.rs) > MAX_RS for v in views))):
            for r in range(rows):
                for c0 in range(0, cols, MAX_COUNT):
                    sh = [v.shift(r, c0).with_strides(0, v.cs) if isinstance(v, View) else v for v in (dst, a, b)]
                    self.vop(func, 1, min(MAX_COUNT, cols - c0), sh[0], sh[1], sh[2], imm=imm, imm_bits=imm_bits)
            return
        if rows > MAX_COUNT:
            for r0 in range(0, rows, MAX_COUNT):
                sh = [v.shift(r0) if isinstance(v, View) else v for v in (dst, a, b)]
                self.vop(func, min(MAX_COUNT, rows - r0), cols, sh[0], sh[1], sh[2], depth=depth, imm=imm,
                         imm_bits=imm_bits)
            return
        fields: dict[str, int] = {"func": int(func), "rows": rows, "cols": cols, "depth": depth}
        use_imm = isinstance(b, float) or isinstance(b, int) and not isinstance(b, bool)
        if use_imm:
            fields["imm"], fields["use_imm"] = f32_bits(float(b)), 1  # type: ignore[arg-type]
        elif imm is not None:
            fields["imm"] = f32_bits(imm)
        if imm_bits is not None:
            fields["imm"] = imm_bits
        reads: list[Span] = []
        for name, v in (("dst", dst), ("src1", a), ("src2", None if use_imm else b)):
            if not isinstance(v, View):
                continue
            fields.update({f"{name}_buf": int(v.buf), f"{name}_addr": v.addr, f"{name}_rs": v.rs, f"{name}_cs": v.cs})
            if name == "dst":
                continue
            if func == VFunc.MM:
                n = rows if name == "src1" else cols
                reads.append(view_span(int(v.buf), v.addr, n, depth, v.rs, v.cs))
            else:
                reads.append(view_span(int(v.buf), v.addr, rows, cols, v.rs, v.cs))
        out_cols = 1 if func in REDUCTIONS else cols
        writes = [view_span(int(dst.buf), dst.addr, rows, out_cols, dst.rs, dst.cs)]
        self.s.emit(Op.VOP, reads, writes, **fields)

    def nop(self) -> None:
        self.s.emit(Op.NOP)

    def image(self, e: WeightEntry) -> DTensor:
        """A weight image entry as a read-only DRAM tensor of bytes (offsets from its packed words)."""
        return DTensor(e.addr, (e.nbytes,), DType.U8, True)


def prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


# ---- the op table of the lowering ----------------------------------------------------------------------------

Lower = Callable[[LowerCtx, Node], None]
Support = Callable[[Node, Graph, FpgaConfig, Mapping[str, int]], "str | None"]   # the last: the size binding


@dataclass(frozen=True)
class Lowering:
    lower: Lower
    support: Support | None   # a reason the node cannot run on the device at its (concrete) sizes, or None


LOWERINGS: dict[str, Lowering] = {}


def lowering(*ops: str, support: Support | None = None) -> Callable[[Lower], Lower]:
    """Register the lowering of `ops` (and the check of what it can do)."""

    def deco(fn: Lower) -> Lower:
        for op in ops:
            LOWERINGS[op] = Lowering(fn, support)
        return fn

    return deco


def attrs_of(node: Node) -> dict:
    from ...ir.ops import OPS

    return OPS[node.op].with_defaults(node.attrs)


def known_size(graph: Graph, v: Value | None, sizes: Mapping[str, int]) -> int | None:
    """The value of a one-element integer operand known when lowering for `sizes`: a graph input that gives a size
    (Graph.value_symbols: the capacity form's `past_len` holds `past`) whose symbol is bound, or a constant."""
    if v is None or v.type.dtype not in (DType.I64, DType.I32) or v.type.numel() != 1:
        return None
    symbol = graph.value_symbols.get(v.name)
    if symbol is not None and v.producer is None and any(v is x for x in graph.inputs):
        return int(sizes[symbol]) if symbol in sizes else None
    data = graph.const_value(v)
    if isinstance(data, np.ndarray) and data.size == 1:
        return int(data.reshape(-1)[0])
    return None


def shape_of(v: Value) -> tuple[int, ...]:
    return tuple(int(d) for d in v.type.shape)  # type: ignore[union-attr]
