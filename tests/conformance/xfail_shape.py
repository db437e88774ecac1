"""Expected failures of the shape family's node tests (Reshape, Slice, Gather, Pad, ...): none.

Every in-scope node test of a shape op passes; an entry here needs a real reason.
"""

XFAIL: dict[str, str] = {}
