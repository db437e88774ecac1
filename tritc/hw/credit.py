"""The rate at which a simulated DRAM takes requests (plain Python: the cocotb bench imports it without Amaranth)."""

from __future__ import annotations


class DramCredit:
    """The rate a simulated DRAM takes requests at: a credit of `rate` bytes a cycle, a request of a `beat` taken
    when a beat has built up. An idle port banks at most a beat (or a cycle's bytes); a waiting request keeps the
    fraction that does not make a whole beat, so that the rate is `rate` exactly (76.8 bytes a cycle is 3 beats of
    128 in 5 cycles, not one every other cycle). DramModel and the cocotb bench's DRAM share it."""

    def __init__(self, rate: float, beat: int):
        self.rate, self.beat, self.cap, self.credit = rate, beat, max(rate, beat), 0.0

    def offer(self) -> bool:
        """A new cycle: whether a request is taken in it."""
        self.credit += self.rate
        return self.credit >= self.beat

    def settle(self, accepted: bool, requested: bool) -> None:
        """The cycle's end: a request taken spends a beat; a cycle with none caps what the port banks."""
        if accepted and requested:
            self.credit -= self.beat
        elif not requested:
            self.credit = min(self.credit, self.cap)
