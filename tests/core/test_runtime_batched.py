"""runtime.batched: consecutive ranges, and a CUDA out-of-memory batch halved and retried."""

import pytest
import torch

from linkstyle.core.errors import UserError
from linkstyle.core.runtime import batched


def test_ranges_cover_everything_in_order():
    assert batched(lambda a, b: (a, b), 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batched(lambda a, b: (a, b), 0, 4) == []


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size():
    calls = []

    def fn(a, b):
        calls.append(b - a)
        if b - a > 3:  # a card with room for 3 at a time
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return list(range(a, b))

    with pytest.warns(RuntimeWarning, match="out of GPU memory at batch size 16: continuing at 8"):
        out = batched(fn, 20, 16)
    assert [x for part in out for x in part] == list(range(20))
    assert calls[:3] == [16, 8, 4] and set(calls[3:]) <= {2}


def test_out_of_memory_at_batch_one_is_one_line():
    def fn(a, b):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.warns(RuntimeWarning), pytest.raises(UserError, match="out of memory even at batch size 1"):
        batched(fn, 3, 2)
