"""The input checks of a run (runtime/feeds.py): FeedChecker, the fast form every run uses, gives check_feed's answer
for every feed and check_feed's error for every bad one; data_pointer is `ctypes.data`."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.errors import InputShapeError
from tritc.ir.types import DType, TensorType
from tritc.runtime.feeds import FeedChecker, check_feed, data_pointer
from tritc.runtime.model import IOSpec

SPECS = [IOSpec("ids", TensorType(DType.I64, ("batch", "seq"))),
         IOSpec("mask", TensorType(DType.I64, ("batch", "total"))),
         IOSpec("cache", TensorType(DType.F32, ("batch", 2, "capacity", 4))),
         IOSpec("pair", TensorType(DType.F32, ("batch", "2*seq"))),
         IOSpec("past_len", TensorType(DType.I64, (1,)))]
VALUES = {"past_len": "past"}


def feed(batch=1, seq=3, total=5, capacity=8, past=2, **changes):
    f = {"ids": np.zeros((batch, seq), np.int64), "mask": np.ones((batch, total), np.int64),
         "cache": np.zeros((batch, 2, capacity, 4), np.float32), "pair": np.zeros((batch, 2 * seq), np.float32),
         "past_len": np.array([past], np.int64)}
    f.update(changes)
    return f


def same(a, b):
    arrays_a, bindings_a, values_a, by_a = a
    arrays_b, bindings_b, values_b, by_b = b
    assert bindings_a == bindings_b and values_a == values_b and by_a == by_b
    assert arrays_a.keys() == arrays_b.keys()
    for n in arrays_a:
        assert arrays_a[n] is arrays_b[n] or np.array_equal(arrays_a[n], arrays_b[n])


@pytest.mark.parametrize("sizes", [{}, {"batch": 2, "seq": 1, "total": 9, "past": 8, "capacity": 16}, {"seq": 7, "past": 0}])
def test_ready_feeds_get_check_feeds_answer_at_any_shape(sizes):
    checker = FeedChecker(SPECS, VALUES)
    f = feed(**sizes)
    got = checker.check(f)
    assert checker._ready(f) is not None  # the fast form answered
    same(got, check_feed(SPECS, f, VALUES))
    assert all(got[0][n] is f[n] for n in f)  # ready arrays are passed as they are, as check_feed passes them


BAD = [
    ({"extra": np.zeros(1)}, ValueError, "unknown input name"),
    ({"ids": np.zeros((1, 3), np.int32)}, TypeError, "input 'ids' has dtype int32, expected int64"),
    ({"ids": np.zeros((1, 3, 1), np.int64)}, ValueError, "input 'ids' has rank 3"),
    ({"cache": np.zeros((1, 3, 8, 4), np.float32)}, ValueError, "input 'cache' has size 3 in dim 1, expected 2"),
    ({"mask": np.ones((2, 5), np.int64)}, InputShapeError, "input 'mask' dim 0 ('batch') is 2, but 'batch' is 1"),
    ({"pair": np.zeros((1, 5), np.float32)}, InputShapeError, "input 'pair' dim 1 is 5, but '2*seq' = 6"),
    ({"past_len": np.array([-1], np.int64)}, InputShapeError, "holds the size 'past': one integer >= 0"),
    ({"past_len": np.array([1, 2], np.int64)}, ValueError, "input 'past_len' has size 2 in dim 0"),
]


@pytest.mark.parametrize("change, error, message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_feeds_get_check_feeds_error_after_good_ones(change, error, message):
    checker = FeedChecker(SPECS, VALUES)
    checker.check(feed())  # a good call first: nothing it learnt lets a bad one through
    bad = feed(**change) if "extra" not in change else {**feed(), **change}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        check_feed(SPECS, bad, VALUES)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        checker.check(bad)


def test_missing_input_and_non_dict_feed_are_refused():
    checker = FeedChecker(SPECS, VALUES)
    f = feed()
    del f["mask"]
    with pytest.raises(ValueError, match="missing input"):
        checker.check(f)
    with pytest.raises(TypeError, match="input_feed must be a dict"):
        checker.check([1, 2])


@pytest.mark.parametrize("change", [
    {"cache": np.zeros((1, 2, 4, 8), np.float32).transpose(0, 1, 3, 2)},  # not C-contiguous: copied
    {"ids": np.zeros((1, 3), np.int64).astype(">i8")},                    # byte-swapped: converted
    {"ids": [[0, 0, 0]]},                                                 # a list
    {"mask": np.ones((1, 5), np.int64)[:, :5]},                           # a view (still contiguous)
])
def test_feeds_that_need_converting_take_the_full_checks(change):
    checker = FeedChecker(SPECS, VALUES)
    f = feed(**change)
    same(checker.check(f), check_feed(SPECS, f, VALUES))
    got = checker.check(f)[0]
    for a in got.values():
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype.isnative


def test_read_only_arrays_are_copied_as_check_feed_copies_them():
    checker = FeedChecker(SPECS, VALUES)
    f = feed()
    f["cache"].flags.writeable = False
    assert checker._ready(f) is None
    got = checker.check(f)[0]["cache"]
    assert got.flags.writeable and got is not f["cache"]


def test_data_pointer_is_the_arrays_address():
    a = np.zeros((3, 5), np.float32)
    assert data_pointer(a) == a.ctypes.data
    assert data_pointer(a[1:]) == a[1:].ctypes.data
    ro = a.copy()
    ro.flags.writeable = False
    assert data_pointer(ro) == ro.ctypes.data
    empty = np.zeros((0, 4), np.float32)
    assert data_pointer(empty) == empty.ctypes.data
