"""Static checks of an instruction stream (docs/ISA.md): what can be known before it runs.

`check_stream(instrs, config)` runs when the lowering emits a stream: every instruction's memory views inside
DRAM and their buffers, writes that name an element once, operands that alias only as ISA.md allows, legal
dependency flags, FINISH last, pushes equal to pops on every queue, no VOP marked overlap touching what the GEMM
in flight beside it touches, and no deadlock of the token protocol.
`check_instr` is the per-instruction part; the Simulator runs it on every instruction it loads. `check_dma` holds
every transfer to the DRAM the program allocated (the weight image, read only, and the activations), at emit time and
when an artifact's stream is loaded. `views` gives the 2-D memory views an instruction reads and writes; the
Simulator executes through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .asm import format_instr
from .config import FpgaConfig
from .isa import BINARY, ELEM_BYTES, REDUCTIONS, Buf, Engine, Instr, Op, StreamError, VFunc, wgt_span_words

QUEUES = ("l2c", "c2l", "c2s", "s2c")
# (engine, flag) -> queue: the load engine's "next" is compute, the store engine's "prev" is compute.
POP_QUEUE = {(Engine.LOAD, "pop_next"): "c2l", (Engine.COMPUTE, "pop_prev"): "l2c",
             (Engine.COMPUTE, "pop_next"): "s2c", (Engine.STORE, "pop_prev"): "c2s"}
PUSH_QUEUE = {(Engine.LOAD, "push_next"): "l2c", (Engine.COMPUTE, "push_prev"): "c2l",
              (Engine.COMPUTE, "push_next"): "c2s", (Engine.STORE, "push_prev"): "s2c"}
VOP_BUFFERS = (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV)


class DeadlockError(StreamError):
    """Every unfinished engine waits on a token that can never come, or for room in a full queue."""


def pops(ins: Instr) -> tuple[str, ...]:
    return tuple(POP_QUEUE[(ins.engine, f)] for f in ("pop_prev", "pop_next") if getattr(ins, f))


def pushes(ins: Instr) -> tuple[str, ...]:
    return tuple(PUSH_QUEUE[(ins.engine, f)] for f in ("push_prev", "push_next") if getattr(ins, f))


def where(index: int, ins: Instr) -> str:
    return f"instruction {index} ({format_instr(ins)})"


def buffer_elems(config: FpgaConfig) -> dict[Buf, int]:
    """Each buffer's size in its addressing unit (bytes for WGT and ACT, 4-byte words for the others)."""
    return {Buf.WGT: config.weight_buffer_bytes, Buf.ACT: config.activation_buffer_bytes,
            Buf.ACC: config.accumulator_buffer_bytes // 4, Buf.VEC: config.vector_buffer_bytes // 4,
            Buf.KV: config.cache_buffer_bytes // 4}


@dataclass(frozen=True)
class View:
    """A 2-D view of one memory: element (i, j) at base + i*strides[0] + j*strides[1] (buffer units, or DRAM
    bytes with `item` bytes per element). `tag` says which (i, j) positions of the instruction an element
    belongs to, for the aliasing rule: 'elem' (i, j), 'row' (i only: a reduction's row), 'all' (every output)."""
    operand: str
    mem: Buf | None          # None: DRAM
    base: int
    shape: tuple[int, int]
    strides: tuple[int, int]
    write: bool
    item: int = 1
    tag: str = "elem"

    lo: int = field(init=False, repr=False, compare=False)   # the first unit (element or byte) the view touches
    hi: int = field(init=False, repr=False, compare=False)   # the last unit

    def __post_init__(self) -> None:
        # Computed once: every instruction loaded reads them (bounds, aliasing, then the hazard ranges).
        (n0, n1), (s0, s1) = self.shape, self.strides
        object.__setattr__(self, "lo", self.base + min(0, (n0 - 1) * s0) + min(0, (n1 - 1) * s1))
        object.__setattr__(self, "hi", self.base + max(0, (n0 - 1) * s0) + max(0, (n1 - 1) * s1) + self.item - 1)

    @property
    def empty(self) -> bool:
        return self.shape[0] == 0 or self.shape[1] == 0

    def offsets(self) -> np.ndarray:
        i = np.arange(self.shape[0], dtype=np.int64)[:, None] * self.strides[0]
        j = np.arange(self.shape[1], dtype=np.int64)[None, :] * self.strides[1]
        return self.base + i + j

    def injective(self) -> bool:
        """No two positions share a unit (an element, or a byte of an element in DRAM)."""
        dims = sorted((abs(s), n) for n, s in zip(self.shape, self.strides) if n > 1)
        if not dims:
            return True
        if dims[0][0] < self.item:
            return False
        if len(dims) == 1 or (dims[0][0] * (dims[0][1] - 1) + self.item <= dims[1][0]):
            return True
        # Positions i*a + j*b (a <= b) collide when some (di, dj) != 0 with |di| < na, |dj| < nb has
        # |dj*b - di*a| < item; for each dj the closest di is next to dj*b/a. O(nb), without the list of positions,
        # which a loaded stream could make 2^32 long (65535 x 65535).
        (a, na), (b, nb) = dims
        t = np.arange(1, nb, dtype=np.int64) * b
        near = np.minimum(t // a, na - 1)
        gap = np.minimum(np.abs(t - near * a), np.abs(t - np.minimum(near + 1, na - 1) * a))
        return bool(np.all(gap >= self.item))


def _vop_views(ins: Instr) -> list[View]:
    f = ins.fields
    func = VFunc(f["func"])
    rows, cols, depth = f["rows"], f["cols"], f["depth"]

    def op(name: str, shape: tuple[int, int], write: bool, tag: str) -> View:
        return View(name, Buf(f[name + "_buf"]), f[name + "_addr"], shape, (f[name + "_rs"], f[name + "_cs"]),
                    write, tag=tag)

    if func in REDUCTIONS:
        return [op("dst", (rows, 1), True, "row"), op("src1", (rows, cols), False, "row")]
    if func is VFunc.MM:
        out = [op("dst", (rows, cols), True, "all"), op("src1", (rows, depth), False, "all")]
        if not f["use_imm"]:
            out.append(op("src2", (cols, depth), False, "all"))
        return out
    out = [op("dst", (rows, cols), True, "elem")]
    if func is not VFunc.FILL:
        out.append(op("src1", (rows, cols), False, "elem"))
    if func is VFunc.WHERE or (func in BINARY and not f["use_imm"]):
        out.append(op("src2", (rows, cols), False, "elem"))
    return out


def _transfer_views(ins: Instr) -> list[View]:
    """A LOAD's or STORE's buffer and DRAM views (the one it writes first)."""
    f = ins.fields
    buf = Buf(f["buf"])
    shape = (f["rows"], f["cols"])
    item = ELEM_BYTES[buf]
    dram = View("dram", None, f["dram_addr"], shape, (f["dram_rs"], f["dram_cs"]), ins.op is Op.STORE, item)
    sram = View("sram", buf, f["sram_addr"], shape, (f["sram_rs"], 1), ins.op is Op.LOAD)
    return [sram, dram] if ins.op is Op.LOAD else [dram, sram]


def views(ins: Instr, config: FpgaConfig) -> list[View]:
    """The memory views `ins` reads and writes (writes first). A GEMM's weights are the whole blocks it reads
    (isa.wgt_span_words: columns padded to matrix_rows, words to whole beats)."""
    f = ins.fields
    if ins.op in (Op.LOAD, Op.STORE):
        return _transfer_views(ins)
    if ins.op is Op.GEMM:
        m, n, kw = f["m"], f["n"], f["kw"]
        span = wgt_span_words(n, kw, config.matrix_rows, config.words_per_beat) * config.word_bytes
        return [View("acc", Buf.ACC, f["acc_addr"], (m, n), (f["acc_rs"], 1), True),
                View("act", Buf.ACT, f["act_addr"], (m, 64 * kw), (f["act_rs"], 1), False),
                View("wgt", Buf.WGT, f["wgt_addr"], (1 if span else 0, span), (0, 1), False)]
    if ins.op is Op.VOP:
        return _vop_views(ins)
    return []


def _footprint(v: View, lo: int, size: int) -> np.ndarray:
    """The units `v` touches as a mask of [lo, lo + size), which holds them: one row, then its copies shifted by the
    row stride, doubling. O(size * log rows), where the list of positions would be rows * cols long: a loaded
    stream's 65535 x 65535 view reading a few units over and over costs no more than its buffer."""
    row = np.zeros(size, bool)
    row[v.base - lo + np.arange(v.shape[1], dtype=np.int64) * v.strides[1]] = True

    def shifted(m: np.ndarray, k: int) -> np.ndarray:
        out = np.zeros_like(m)
        if k >= 0:
            out[k:] = m[:size - k]
        else:
            out[:k] = m[-k:]
        return out

    def rows(m: np.ndarray, n: int) -> np.ndarray:  # m | m >> s | ... | m >> (n-1)*s, every copy inside the view
        if n <= 1 or v.strides[0] == 0:
            return m
        half = rows(m, n // 2)
        out = half | shifted(half, n // 2 * v.strides[0])
        return out | shifted(m, (n - 1) * v.strides[0]) if n % 2 else out

    return rows(row, v.shape[0])


def _alias_ok(dst: View, src: View) -> bool:
    """A destination element may be a source element only at the same position (docs/ISA.md, "VOP")."""
    if dst.mem != src.mem or dst.empty or src.empty or dst.hi < src.lo or src.hi < dst.lo:
        return True
    lo, hi = min(dst.lo, src.lo), max(dst.hi, src.hi)
    if src.shape[0] * src.shape[1] > hi - lo + 1:
        # A source with more positions than its range has units reads units over and over (a loaded stream's
        # 65535 x 65535 of a few words): held to MM's rule below, any shared element is a hazard, on footprints.
        return not (_footprint(src, lo, hi - lo + 1) & _footprint(dst, lo, hi - lo + 1)).any()
    if dst.tag == "all":
        # MM: every output reads whole rows of both sources; any shared element is a hazard.
        return not np.isin(src.offsets(), dst.offsets()).any()
    if dst.base == src.base and all(a == b or n <= 1 for a, b, n in zip(dst.strides, src.strides, dst.shape)) \
            and (dst.tag == "elem" or dst.shape[0] <= 1 or dst.strides[0] == src.strides[0]):
        return True   # the same view (a reduction's dst: the same rows): each element read before written
    d = dst.offsets()
    s = src.offsets()
    if dst.tag == "row":
        dpos = np.arange(dst.shape[0])[:, None].repeat(dst.shape[1], 1)
        spos = np.arange(src.shape[0])[:, None].repeat(src.shape[1], 1)
    else:
        dpos = np.arange(d.size).reshape(d.shape)
        spos = np.arange(s.size).reshape(s.shape)
    order = np.argsort(d, axis=None)
    dsorted, dpos_sorted = d.ravel()[order], dpos.ravel()[order]
    k = np.searchsorted(dsorted, s.ravel())
    k = np.minimum(k, dsorted.size - 1)
    hit = dsorted[k] == s.ravel()
    return bool(np.all(dpos_sorted[k][hit] == spos.ravel()[hit]))


def check_instr(ins: Instr, index: int, config: FpgaConfig, dram_bytes: int | None = None) -> list[View]:
    """StreamError if `ins` cannot run as ISA.md says (flags, buffers, bounds, overlaps); else its views."""
    dram_bytes = config.dram_bytes if dram_bytes is None else dram_bytes

    def bad(msg: str) -> StreamError:
        return StreamError(f"{where(index, ins)}: {msg}")

    eng = ins.engine
    if eng is Engine.LOAD and (ins.pop_prev or ins.push_prev):
        raise bad("the load engine has no previous engine (pop_prev / push_prev set)")
    if eng is Engine.STORE and (ins.pop_next or ins.push_next):
        raise bad("the store engine has no next engine (pop_next / push_next set)")
    f = ins.fields
    if ins.op is Op.STORE and f["buf"] == Buf.WGT:
        raise bad("WGT is read only by GEMM: it cannot be stored")
    if ins.op is Op.GEMM and f["wgt_addr"] % config.weight_beat_bytes:
        raise bad(f"wgt_addr {f['wgt_addr']} is not a multiple of the {config.weight_beat_bytes}-byte weight beat "
                  f"(matrix_rows x words per beat x word bytes, docs/ISA.md GEMM)")
    vs = views(ins, config)
    if ins.op is Op.VOP:
        for v in vs:
            if v.mem not in VOP_BUFFERS:
                raise bad(f"{v.operand} is {v.mem.name}: vector operands are ACT, ACC, VEC or KV")
        if f["func"] == VFunc.REQ:
            if f["src1_buf"] not in (Buf.ACC, Buf.ACT):
                raise bad(f"REQ reads raw integers: src1 must be ACC or ACT, not {Buf(f['src1_buf']).name}")
            if f["depth"] > 31:
                raise bad(f"REQ shift (depth) is {f['depth']}, at most 31")
    sizes = buffer_elems(config)
    for v in vs:
        if v.empty:
            continue
        limit, unit = (dram_bytes, "bytes") if v.mem is None else (sizes[v.mem], "bytes" if ELEM_BYTES[v.mem] == 1
                                                                   else "words")
        name = "DRAM" if v.mem is None else v.mem.name
        if v.lo < 0 or v.hi >= limit:
            raise bad(f"{v.operand} reaches {name} [{v.lo}, {v.hi}], outside the {limit} {unit} of {name}")
        if v.write and not v.injective():
            raise bad(f"{v.operand} writes some {name} element twice (strides {v.strides[0]}, {v.strides[1]} over "
                      f"{v.shape[0]} x {v.shape[1]})")
    if ins.op is Op.VOP:
        dst = vs[0]
        for src in vs[1:]:
            if not _alias_ok(dst, src):
                raise bad(f"dst overlaps {src.operand} other than element for element (docs/ISA.md, VOP)")
    return vs


def check_stream(instrs: Sequence[Instr], config: FpgaConfig) -> None:
    """StreamError on the first problem of an emitted stream (see the module docstring)."""
    if not instrs or instrs[-1].op is not Op.FINISH:
        raise StreamError("the stream does not end with FINISH")
    counts = dict.fromkeys(QUEUES, 0)
    in_flight: tuple[int, list[View]] | None = None   # the GEMM an overlapping VOP runs beside (ISA.md)
    for i, ins in enumerate(instrs):
        if ins.op is Op.FINISH and i != len(instrs) - 1:
            raise StreamError(f"{where(i, ins)}: FINISH before the end of the stream ({len(instrs)} instructions)")
        vs = check_instr(ins, i, config)
        if ins.op is Op.GEMM:
            in_flight = (i, vs)
        elif ins.op is Op.VOP and ins.overlap and in_flight is not None:
            _check_overlap(i, ins, vs, *in_flight, instrs)
        elif ins.op in (Op.VOP, Op.NOP):
            in_flight = None     # it waited for the matrix unit
        for q in pushes(ins):
            counts[q] += 1
        for q in pops(ins):
            counts[q] -= 1
    unbalanced = [f"{q}: {n:+d} ({'more pushes than pops' if n > 0 else 'more pops than pushes'})"
                  for q, n in counts.items() if n]
    if unbalanced:
        raise StreamError(f"token queues do not balance: {'; '.join(unbalanced)}")
    token_order(instrs, config.queue_depth)


def _check_overlap(i: int, ins: Instr, vs: list[View], g: int, gvs: list[View], instrs: Sequence[Instr]) -> None:
    """StreamError if a VOP marked overlap touches memory the GEMM in flight beside it writes (or reads, when the
    VOP writes): the compute engine went on past that GEMM, so only the last one can still be running."""
    for v in vs:
        for o in gvs:
            if not v.empty and not o.empty and v.mem == o.mem and (v.write or o.write) and v.lo <= o.hi and o.lo <= v.hi:
                raise StreamError(f"{where(i, ins)}: overlap is set, but its {v.operand} touches {v.mem.name} "
                                  f"[{v.lo}, {v.hi}] that {where(g, instrs[g])} in flight beside it "
                                  f"{'writes' if o.write else 'reads'} [{o.lo}, {o.hi}]")


def check_dma(instrs: Sequence[Instr], readable: Sequence[tuple[int, int, str]],
              writable: Sequence[tuple[int, int, str]]) -> None:
    """StreamError unless every LOAD reads DRAM inside one of the `readable` [start, end) ranges and every STORE
    writes inside one of the `writable` ones (named, for the message): a transfer stays in the buffers the program
    allocated, whatever else the device's DRAM holds."""
    for i, ins in enumerate(instrs):
        if ins.op not in (Op.LOAD, Op.STORE):
            continue
        dram = next(v for v in _transfer_views(ins) if v.mem is None)
        if dram.empty:
            continue
        allowed = writable if ins.op is Op.STORE else readable
        if not any(lo <= dram.lo and dram.hi < hi for lo, hi, _ in allowed):
            names = ", ".join(f"{name} [{lo}, {hi})" for lo, hi, name in allowed) or "nothing"
            raise StreamError(f"{where(i, ins)}: {'writes' if ins.op is Op.STORE else 'reads'} DRAM [{dram.lo}, "
                              f"{dram.hi}], outside the buffers allocated to it ({names})")


def token_order(instrs: Sequence[Instr], depth: int) -> None:
    """Run the token protocol alone (no time): DeadlockError if the engines can get stuck. An instruction takes
    its tokens, runs, then pushes, waiting while a queue it pushes holds `depth` tokens."""
    progs = {e: [i for i, ins in enumerate(instrs) if ins.engine is e] for e in Engine}
    pos = dict.fromkeys(Engine, 0)
    pending: dict[Engine, list[str]] = {e: [] for e in Engine}
    held = dict.fromkeys(QUEUES, 0)
    progress = True
    while progress:
        progress = False
        for e in Engine:
            while True:
                if pending[e]:
                    q = pending[e][0]
                    if held[q] >= depth:
                        break
                    held[q] += 1
                    pending[e].pop(0)
                    progress = True
                    continue
                if pos[e] == len(progs[e]):
                    break
                ins = instrs[progs[e][pos[e]]]
                if ins.op is Op.FINISH and any(pos[o] < len(progs[o]) or pending[o] for o in Engine if o is not e):
                    break
                need = pops(ins)
                if any(held[q] == 0 for q in need):
                    break
                for q in need:
                    held[q] -= 1
                pending[e] = list(pushes(ins))
                pos[e] += 1
                progress = True
    if any(pos[e] < len(progs[e]) or pending[e] for e in Engine):
        blocked = {}
        for e in Engine:
            if pending[e]:
                i = progs[e][pos[e] - 1]
                blocked[e] = (i, f"waits for room in {pending[e][0]} (full: {depth} tokens)")
            elif pos[e] < len(progs[e]):
                i = progs[e][pos[e]]
                need = [q for q in pops(instrs[i]) if held[q] == 0]
                blocked[e] = (i, f"waits for a token in {', '.join(need)}" if need
                              else "FINISH waits for the other engines to drain")
        raise deadlock_error(instrs, blocked)


def deadlock_error(instrs: Sequence[Instr], blocked: dict[Engine, tuple[int, str]], when: str = "") -> DeadlockError:
    parts = [f"{e.name.lower()} engine at {where(i, instrs[i])} {why}" for e, (i, why) in blocked.items()]
    return DeadlockError(f"deadlock{when}: {'; '.join(parts)}")
