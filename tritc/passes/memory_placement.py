"""schedule-memory's placement: which arena slot sits above which, so that one placement serves every size.

    slots = place(buffers, bindings)    # {root: Placement(size, below)}; bindings[0] is the reference binding

A slot's offset is the highest end among the slots it sits above (ir/memory.py), so any placement in which every two
buffers live at the same time are ordered is valid at every binding. Which order is good depends on the sizes: greedy
by size at one binding is close to the lower bound there and can be 20% off where other dims dominate. So several
greedy placements compete (docs/MEMORY.md, "The placement") and the one closest to the lower bound at all of
`bindings` (the worst ratio, then the mean) wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..ir.memory import Buffer, Placement

Bindings = Sequence[Mapping[str, int]]


def place(bufs: Sequence[Buffer], bindings: Bindings) -> dict[str, Placement]:
    """The best of: greedy placements made at bindings[0] that look at every binding (largest first, or long-lived
    first), and plain greedy by size at each binding where every symbol has one size (`uniform_sizes`)."""
    sized = [b for b in bufs if b.size is not None]
    if not sized:
        return {}
    problem = _Problem(sized, bindings)
    candidates = [problem.greedy(range(len(bindings)), rank) for rank in ("size", "lifetime")]
    candidates += [problem.greedy([k], "size") for k in uniform_indices(bindings)]
    scores = [problem.score(c) for c in candidates]
    best = candidates[min(range(len(candidates)), key=lambda i: (scores[i], i))]
    return {b.root: Placement(b.size, _tops(best, i, sized)) for i, b in enumerate(sized)}  # type: ignore[arg-type]


def uniform_indices(bindings: Bindings) -> list[int]:
    """The bindings in which every symbol has the same size (or that have no symbol)."""
    return [k for k, b in enumerate(bindings) if len(set(b.values())) <= 1]


class _Problem:
    """The buffers with their slot sizes at every binding (a matrix), who overlaps whom, and the lower bounds."""

    def __init__(self, bufs: Sequence[Buffer], bindings: Bindings):
        self.bufs = list(bufs)
        # Floats: the heuristic needs no exactness, and a size of high degree at the ladder's top overflows int64.
        # A binding can make a size negative (seq-2 at seq=1): no model runs there, so count it as empty.
        slots = [[float(b.size.aligned().evaluate(r)) for r in bindings] for b in bufs]  # type: ignore[union-attr]
        self.slot = np.maximum(np.array(slots, dtype=np.float64), 0.0)
        steps = max(b.end for b in bufs) + 2
        live = np.zeros((steps, len(bindings)))
        for i, b in enumerate(bufs):
            live[b.start] += self.slot[i]
            live[b.end + 1] -= self.slot[i]
        self.bound = np.maximum(np.cumsum(live, axis=0).max(axis=0), 1.0)
        self.overlaps = _overlaps(bufs)

    def greedy(self, ks: Sequence[int], rank: str) -> list[list[int]]:
        """For each buffer, the buffers it sits above. Largest first at ks[0] ("lifetime": those live for a quarter of
        the graph or more before the others), each into the gap, among the buffers placed and live at the same time,
        that holds it at ks[0] and raises the others and the top least at every binding of ks."""
        slot, weight = self.slot[:, ks], 1.0 / self.bound[ks]
        steps = max(b.end for b in self.bufs) + 1
        life = [(b.end - b.start + 1) * 4 < steps if rank == "lifetime" else False for b in self.bufs]
        todo = sorted(range(len(self.bufs)), key=lambda i: (life[i], -float(slot[i, 0]), self.bufs[i].start, i))
        lo = np.zeros_like(slot)
        hi = np.zeros_like(slot)
        top = np.zeros(len(ks))
        placed = np.zeros(len(self.bufs), bool)
        below: list[list[int]] = [[] for _ in self.bufs]
        above: list[list[int]] = [[] for _ in self.bufs]
        for i in todo:
            live = [j for j in self.overlaps[i] if placed[j]]
            under, over = _gap(slot[i], lo[live], hi[live], top, weight) if live else ([], [])
            below[i] = [live[k] for k in under]
            for k in over:
                below[live[k]].append(i)
            for k in under:
                above[live[k]].append(i)
            lo[i] = hi[below[i]].max(axis=0) if below[i] else 0
            hi[i] = lo[i] + slot[i]
            placed[i] = True
            top = np.maximum(top, np.maximum(hi[i], _push([live[k] for k in over], hi[i], lo, hi, above)))
        return below

    def score(self, below: Sequence[Sequence[int]]) -> tuple[float, float]:
        """The worst and the mean ratio of arena to lower bound over all bindings."""
        hi = np.zeros_like(self.slot)
        done = np.zeros(len(self.bufs), bool)
        for i in _topological(below, done):
            hi[i] = (hi[list(below[i])].max(axis=0) if below[i] else 0) + self.slot[i]
        ratio = hi.max(axis=0) / self.bound
        return float(ratio.max()), float(ratio.mean())


def _gap(n: np.ndarray, lo: np.ndarray, hi: np.ndarray, top: np.ndarray, weight: np.ndarray) -> tuple[list[int], list[int]]:
    """Which live slots go under a new one of `n` bytes (one count per binding) and which over it. It starts at 0 or at
    a live slot's end, with every live slot wholly under or wholly over it at the first binding; of those starts, the
    one that least raises the slots over it plus the top of the arena, summed over the bindings relative to each
    one's lower bound, then the lowest. No start fits: all under."""
    best: tuple[float, float] | None = None
    choice: tuple[list[int], list[int]] = (list(range(len(lo))), [])
    for start in (0, *hi[:, 0]):
        under = hi[:, 0] <= start
        over = ~under & (lo[:, 0] >= start + n[0])  # an empty slot at `start` is under, not both (a cycle)
        if not (under | over).all():
            continue
        base = hi[under].max(axis=0) if under.any() else np.zeros_like(n)
        push = np.maximum(base + n - lo[over].min(axis=0), 0) if over.any() else 0
        key = (float(((push + np.maximum(base + n - top, 0)) * weight).sum()), float(base[0]))
        if best is None or key < best:
            best, choice = key, (list(np.flatnonzero(under)), list(np.flatnonzero(over)))
    return choice


def _push(start: list[int], floor: np.ndarray, lo: np.ndarray, hi: np.ndarray, above: Sequence[list[int]]) -> np.ndarray:
    """Raise the slots in `start` to begin at `floor` or higher, and the slots over them in turn; the highest end
    that moved (0 if none did)."""
    work = [(j, floor) for j in start]
    highest = np.zeros_like(floor)
    while work:
        j, f = work.pop()
        if (f <= lo[j]).all():
            continue
        size = hi[j] - lo[j]
        lo[j] = np.maximum(lo[j], f)
        hi[j] = lo[j] + size
        highest = np.maximum(highest, hi[j])
        work.extend((w, hi[j]) for w in above[j])
    return highest


def _overlaps(bufs: Sequence[Buffer]) -> list[list[int]]:
    """For each buffer, the others live at a common step (a sweep over the steps)."""
    order = sorted(range(len(bufs)), key=lambda i: bufs[i].start)
    out: list[list[int]] = [[] for _ in bufs]
    active: list[int] = []
    for i in order:
        active = [j for j in active if bufs[j].end >= bufs[i].start]
        for j in active:
            out[i].append(j)
            out[j].append(i)
        active.append(i)
    return out


def _topological(below: Sequence[Sequence[int]], done: np.ndarray) -> list[int]:
    """The buffers, each after every buffer it sits above."""
    order: list[int] = []
    for root in range(len(below)):
        stack = [root]
        while stack:
            i = stack[-1]
            if done[i]:
                stack.pop()
                continue
            pending = [j for j in below[i] if not done[j]]
            if pending:
                stack.extend(pending)
            else:
                done[i] = True
                order.append(stack.pop())
    return order


def _tops(below: Sequence[Sequence[int]], i: int, bufs: Sequence[Buffer]) -> tuple[str, ...]:
    """The slots buffer i sits directly above, less those under another of them (their ends are lower)."""
    covered = {w for u in below[i] for w in below[u]}
    return tuple(bufs[u].root for u in sorted(below[i]) if u not in covered)
