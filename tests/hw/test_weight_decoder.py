"""The weight decoder against isa.decode_words: every one of the 256 byte values in every byte position of a word,
for both packings (exhaustive), through Amaranth's simulator."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.codegen.fpga.config import PACKINGS
from tritc.codegen.fpga.isa import decode_words
from tritc.hw.sim import run
from tritc.hw.weight_decoder import WordDecoder


def trits_of(word_value) -> list[int]:
    return [(-1 if t.neg else 1) if t.nz else 0 for t in word_value]


@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_every_byte_value_in_every_position(packing):
    nbytes = PACKINGS[packing]
    # Word k holds byte value (k + 37 b) mod 256 at position b: over 256 words, every value meets every position.
    words = (np.arange(256)[:, None] + 37 * np.arange(nbytes)[None, :]) % 256
    words = words.astype(np.uint8)
    want = decode_words(words, packing)
    dut = WordDecoder(packing)
    got = []

    async def bench(ctx):
        for w in words:
            ctx.set(dut.word, int.from_bytes(w.tobytes(), "little"))
            got.append(trits_of(ctx.get(dut.trits)))

    run(dut, bench)
    assert np.array_equal(np.array(got, np.int8), want)
