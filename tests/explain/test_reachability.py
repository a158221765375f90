"""Units a sweep cannot move: the verdict by hand, and what tune_units writes of it."""

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from linkstyle.core.errors import UserError
from linkstyle.explain.faithfulness import (
    UNREACHABLE_REASONS,
    faithfulness_arrays,
    reachability,
    reachability_counts,
    read_reachability,
)
from linkstyle.explain.tuning import TuningConfig, _write_tuning


def _arrays(moved: np.ndarray, set_change: np.ndarray) -> dict:
    """faithfulness_arrays of units whose r~_i moved by `moved` [U, S] over two steps."""
    values = np.stack([np.zeros_like(set_change), set_change], 1).astype(np.float32)  # [U, 2]
    unit_t = np.stack([np.zeros_like(moved), moved], 2).astype(np.float32)  # [U, S, 2]
    return faithfulness_arrays(unit_t, np.zeros_like(unit_t), values)


# Five units, three seeds, set change 2 except unit 1 (constant over the seeds: dead).
MOVED = np.array([
    [1.0, 1.2, 0.8],    # 0: transfer 0.5, 0.6, 0.4 -> median 0.5: reachable
    [0.0, 0.0, 0.0],    # 1: dead
    [0.1, 0.15, 1.9],   # 2: transfer 0.05, 0.075, 0.95 -> median 0.075 < 0.1: below the floor
    [0.4, 0.0, 0.0],    # 3: median 0.0, and no gradient at any seed (closed loop): "no gradient" first
    [-1.0, -1.0, 2.0],  # 4: moved the wrong way at two seeds -> median -0.5: below the floor
])
SET = np.array([2.0, 0.0, 2.0, 2.0, 2.0])


def test_reasons_by_hand_in_their_order():
    a = _arrays(MOVED, SET)
    grad = np.ones((5, 3), np.float32)
    grad[3] = 0.0  # unit 3 has no gradient anywhere
    grad[1] = 0.0  # unit 1 neither, but it is dead first
    grad[0, 1] = 0.0  # one seed without gradient does not make a unit unreachable
    r = reachability(a, grad, min_transfer=0.1)
    assert r["reachable"].tolist() == [True, False, False, False, False]
    assert r["unreachable_reason"].tolist() == ["", "dead", "transfer below floor", "no gradient", "transfer below floor"]
    assert reachability_counts(r) == {"unreachable_units": 4,
                                      "unreachable_by_reason": {"dead": 1, "no gradient": 1, "transfer below floor": 2}}
    assert set(r["unreachable_reason"]) - {""} <= set(UNREACHABLE_REASONS)


def test_open_loop_has_no_gradient_reason_and_the_floor_is_a_parameter():
    a = _arrays(MOVED, SET)
    r = reachability(a)  # open loop: no seed gradient, default floor 0.1
    assert r["unreachable_reason"].tolist() == ["", "dead", "transfer below floor", "transfer below floor",
                                                "transfer below floor"]
    assert reachability(a, min_transfer=0.05)["reachable"].tolist() == [True, False, True, False, False]
    assert reachability(a, min_transfer=0.0)["reachable"].tolist() == [True, False, True, True, False]
    assert reachability(a, min_transfer=0.51)["reachable"].tolist() == [False] * 5
    with pytest.raises(ValueError, match="seed_gradient must be"):
        reachability(a, np.ones((4, 3)))


def test_min_transfer_is_checked():
    assert TuningConfig().min_transfer == 0.1 and TuningConfig().mode == "closed_loop"
    with pytest.raises(UserError, match="min_transfer must be in \\[0, 1\\]"):
        TuningConfig(min_transfer=1.5)
    with pytest.raises(UserError, match="min_transfer"):
        TuningConfig(min_transfer=-0.1)


def _gen():
    """What _write_tuning reads of a generator."""
    return SimpleNamespace(resolution=4, w_dim=3, class_names=("a", "b"), part_names=None)


def _blocks(moved: np.ndarray, with_gradient: bool, grad: np.ndarray | None = None, per: int = 2):
    """tune_units' blocks of `per` units, each render moved as `moved` says (two steps)."""
    U, S = moved.shape
    for a in range(0, U, per):
        b = min(U, a + per)
        n = b - a
        out = {
            "renders": np.zeros((n, S, 2, 4, 4, 3), np.uint8),
            "w": np.zeros((n, S, 2, 3), np.float32),
            "r_tilde_unit": np.stack([np.zeros((n, S)), moved[a:b]], 2).astype(np.float32),
            "r_tilde_corr": np.ones((n, S, 2), np.float32),
            "r_tilde": np.zeros((n, S, 2, 6), np.float16),
            "r_tilde_off": np.zeros((n, S, 2), np.float32),
        }
        if with_gradient:
            out["seed_gradient"] = grad[a:b]
        yield out


def _write(path, with_gradient: bool, grad=None, mode="closed_loop", min_transfer=0.1):
    U, S = MOVED.shape
    lo, hi = np.zeros(U, np.float32), SET.astype(np.float32)
    values = np.stack([lo, hi], 1)
    cfg = TuningConfig(n_seeds=S, n_steps=2, device="cpu", mode=mode, min_transfer=min_transfer)
    return _write_tuning(path, _gen(), np.arange(U) + 10, np.arange(S), np.zeros(S, np.int64), lo, hi, values,
                         np.zeros((S, 6), np.float32), cfg, {}, _blocks(MOVED, with_gradient, grad))


def test_the_tuning_file_and_metrics_carry_the_verdict(tmp_path):
    grad = np.ones((5, 3), np.float32)
    grad[3] = 0.0
    m = _write(tmp_path / "c.h5", True, grad)
    assert m["unreachable_units"] == 4 and m["min_transfer"] == 0.1
    assert m["unreachable_by_reason"] == {"dead": 1, "no gradient": 1, "transfer below floor": 2}
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["reachable"][:].tolist() == [True, False, False, False, False]
        assert f["reachable"].dtype == bool and f["seed_gradient"].dtype == np.float32
        np.testing.assert_array_equal(f["seed_gradient"][:], grad)
        t = read_reachability(f)
    assert t["unit"].tolist() == [10, 11, 12, 13, 14]
    assert t["unreachable_reason"].tolist() == ["", "dead", "transfer below floor", "no gradient", "transfer below floor"]


def test_open_loop_files_have_no_seed_gradient(tmp_path):
    m = _write(tmp_path / "o.h5", False, mode="open_loop", min_transfer=0.05)
    assert m["unreachable_by_reason"] == {"dead": 1, "no gradient": 0, "transfer below floor": 2}
    with h5py.File(tmp_path / "o.h5") as f:
        assert "seed_gradient" not in f
        assert read_reachability(f)["reachable"].tolist() == [True, False, True, False, False]


def test_files_from_before_the_verdict_count_every_unit_reachable(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["units"] = np.array([3, 4])
        t = read_reachability(f)
    assert t["reachable"].tolist() == [True, True] and t["unreachable_reason"].tolist() == ["", ""]
    t = read_reachability({"units": np.array([1]), "reachable": np.array([False]),
                           "unreachable_reason": np.array([b"dead"], dtype=object)})
    assert t["unreachable_reason"].tolist() == ["dead"]
