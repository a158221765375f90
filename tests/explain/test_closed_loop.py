"""The closed-loop solver on a tiny world where not every unit can be held: 8 units, 3 dims of w."""

import numpy as np
import pytest
import torch

from linkstyle.core.errors import UserError
from linkstyle.explain.closed_loop import ClosedLoop, ClosedLoopConfig, reencode
from tiny_world import SoftplusClf, TanhGen


@pytest.fixture(scope="module")
def narrow():
    # fewer w dims (3) than units (8): moving one unit moves others
    gen, clf = TanhGen(3, seed=4, scale=0.5, bias_scale=0.2).eval(), SoftplusClf(8, seed=5, arch="toy_wide").eval()
    w = torch.as_tensor(np.random.default_rng(6).normal(size=(4, 3)) * 0.6, dtype=torch.float32)
    with torch.no_grad():
        r = reencode(gen, clf, w)
    # every (seed, unit) row; the set values 0.1 below, at and 0.2 above the seed's value
    seed, unit = np.repeat(np.arange(4), 8), np.tile(np.arange(8), 4)
    values = r[seed, unit].double().numpy()[:, None] + np.array([-0.1, 0.0, 0.2])
    return gen, clf, w.numpy(), r, seed, unit, values


def _moves(narrow, cfg, batch_size=512):
    """w [n, 3, D], transfer and off-target [n] between the lowest and the highest set value."""
    gen, clf, w, r, seed, unit, values = narrow
    w_new = ClosedLoop(gen, clf, w, cfg, batch_size).solve(seed, unit, values)
    with torch.no_grad():
        r_new = reencode(gen, clf, w_new.reshape(-1, w.shape[1])).reshape(len(seed), 3, -1).double()
    d = r_new[:, 2] - r_new[:, 0]
    rows = torch.arange(len(seed))
    moved = d[rows, torch.as_tensor(unit)] / 0.3
    d[rows, torch.as_tensor(unit)] = 0.0
    return w_new, moved.numpy(), (d.norm(dim=1) / 0.3).numpy()


FULL = ClosedLoopConfig(walk_steps=20, polish_steps=5, tolerance=0.0, ridge=0.002, max_step=0.5)


def _counted(monkeypatch):
    """Count the legs' steps (one forward and backward pass per leg and step)."""
    calls = []
    evaluate = ClosedLoop._evaluate
    monkeypatch.setattr(ClosedLoop, "_evaluate", lambda self, w, *a: calls.append(len(w)) or evaluate(self, w, *a))
    return calls


def test_legs_reach_the_set_values_and_hold_the_others(narrow):
    _, moved, off = _moves(narrow, FULL)
    # 3 dims of w, 8 units: unit i moves only with others; the legs move it all the way ...
    assert np.median(moved) == pytest.approx(1.0, abs=0.02) and moved.min() > 0.85
    # ... and the others less per unit of transfer than a free move of unit i would
    soft = ClosedLoopConfig(walk_steps=20, polish_steps=5, tolerance=0.0, ridge=100.0, max_step=0.5)
    _, moved_soft, off_soft = _moves(narrow, soft)
    assert np.median(off / moved) < np.median(off_soft / moved_soft) - 0.05
    assert np.median(off / moved) < 1.5


def test_solve_is_deterministic_and_independent_of_the_batch_size(narrow):
    w1, moved1, off1 = _moves(narrow, FULL)
    w2, _, _ = _moves(narrow, FULL)
    w3, moved3, off3 = _moves(narrow, FULL, batch_size=3)
    assert torch.equal(w1, w2), "same params, same w"
    # Batched float rounding differs; the legs do not amplify it beyond a few renders.
    close = (w3 - w1).abs().amax((1, 2)) <= 1e-4
    assert close.sum() >= len(close) - 2
    np.testing.assert_allclose(moved3, moved1, rtol=0.02, atol=0.01)
    np.testing.assert_allclose(off3, off1, rtol=0.02, atol=0.01)


def test_a_set_value_at_the_seed_is_the_seed_and_costs_nothing(narrow, monkeypatch):
    gen, clf, w, r, *_ = narrow
    calls = _counted(monkeypatch)
    loop = ClosedLoop(gen, clf, w, FULL)
    same = loop.solve(np.array([1, 2]), np.array([0, 5]), r[[1, 2], [0, 5]].double().numpy()[:, None].repeat(3, 1))
    torch.testing.assert_close(same, torch.as_tensor(w[[1, 2]])[:, None].expand(-1, 3, -1))
    assert calls == [] and (loop.seed_gradient(np.array([1, 2]), np.array([0, 5])) > 0).all()


def test_a_unit_without_gradient_stays_at_the_seed(narrow, monkeypatch):
    gen, clf, w, r, seed, unit, values = narrow
    calls = _counted(monkeypatch)
    loop = ClosedLoop(gen, clf, w, FULL)
    loop.jac[0, 3] = 0.0  # as a ReLU unit that is off over the whole seed image
    out = loop.solve(np.array([0]), np.array([3]), values[3:4])
    assert loop.seed_gradient(np.array([0]), np.array([3]))[0] == 0.0
    torch.testing.assert_close(out[0], torch.as_tensor(w[0]).expand(3, -1))
    assert calls == []


def test_each_leg_walks_its_share_of_the_steps(narrow, monkeypatch):
    # values 0.1 below and 0.2 above the seed's value: the down leg walks 1/3 of the range
    # (ceil(9 / 3) = 3 steps), the up leg through no other stop 2/3 (6 steps); no polish
    # past the walk when the tolerance is the whole range.
    gen, clf, w, r, seed, unit, values = narrow
    calls = _counted(monkeypatch)
    ClosedLoop(gen, clf, w, ClosedLoopConfig(walk_steps=9, polish_steps=4, tolerance=0.99)).solve(seed[:1], unit[:1], values[:1])
    assert calls == [2, 2, 2, 1, 1, 1]
    calls.clear()
    ClosedLoop(gen, clf, w, ClosedLoopConfig(walk_steps=9, polish_steps=4, tolerance=0.0)).solve(seed[:1], unit[:1], values[:1])
    assert len(calls) == 6 + 4 and sum(calls) == 3 + 4 + 6 + 4


def test_polish_steps_catch_up_a_lagging_walk(narrow):
    # Steps cut to 0.02 make the walk lag; the same walk plus steps held at each set value
    # reaches more, without moving the others more per unit of transfer.
    walk = ClosedLoopConfig(walk_steps=10, polish_steps=0, tolerance=0.0, max_step=0.02, ridge=0.002)
    _, moved, off = _moves(narrow, walk)
    _, moved_p, off_p = _moves(narrow, ClosedLoopConfig(walk_steps=10, polish_steps=8, tolerance=0.0, max_step=0.02, ridge=0.002))
    assert np.median(moved) < 0.7, "the cut walk lags (else this test shows nothing)"
    assert np.median(moved_p) > np.median(moved) + 0.15
    assert np.median(off_p / moved_p) <= np.median(off / moved) + 0.02


@pytest.mark.parametrize("key, value, message", [
    ("walk_steps", 0, "walk_steps must be >= 1"),
    ("polish_steps", -1, "polish_steps must be >= 0"),
    ("tolerance", 1.0, r"tolerance must be in \[0, 1\)"),
    ("ridge", 0.0, "ridge must be > 0"),
])
def test_options_are_checked(key, value, message):
    with pytest.raises(UserError, match=message):
        ClosedLoopConfig(**{key: value})


class InPlaceTanhGen(TanhGen):
    """TanhGen whose synthesis assembles its input by item assignment, as StyleGAN3's Fourier input does."""

    def _synthesis(self, w, features):
        h = torch.zeros(len(w), self.w_dim + 1, device=w.device)
        h[:, 1:] = w  # a batched value written into an unbatched tensor: vmap refuses this
        h.mul_(1.0)
        return torch.tanh(self.lin(h[:, 1:])).view(-1, 3, 4, 4), []


def test_jacobians_fall_back_to_reverse_mode_on_in_place_code_and_agree_with_vmap(narrow):
    from torch.func import jacfwd, vmap

    from linkstyle.explain.closed_loop import reverse_jacobians, seed_jacobians

    gen, clf, w, *_ = narrow
    w = torch.as_tensor(w)
    vmapped = seed_jacobians(gen, clf, w, batch=3)
    torch.testing.assert_close(reverse_jacobians(gen, clf, w).double(), vmapped, rtol=1e-5, atol=1e-6)

    in_place = InPlaceTanhGen(3, seed=4, scale=0.5, bias_scale=0.2).eval()
    with pytest.raises(RuntimeError, match="vmap"):  # the case the fallback exists for
        vmap(jacfwd(lambda x: reencode(in_place, clf, x[None])[0]))(w)
    with pytest.warns(RuntimeWarning, match="reverse mode"):
        jac = seed_jacobians(in_place, clf, w, batch=3)
    torch.testing.assert_close(jac, vmapped, rtol=1e-5, atol=1e-6)
    with pytest.warns(RuntimeWarning, match="reverse mode"):
        loop = ClosedLoop(in_place, clf, w.numpy(), FULL)
    torch.testing.assert_close(loop.jac, vmapped, rtol=1e-5, atol=1e-6)


def test_reverse_jacobians_run_row_by_row_where_the_batched_backward_fails(narrow, monkeypatch):
    from linkstyle.explain.closed_loop import reverse_jacobians

    gen, clf, w, *_ = narrow
    w = torch.as_tensor(w)
    want = reverse_jacobians(gen, clf, w)
    grad = torch.autograd.grad

    def no_batched(*args, is_grads_batched=False, **kw):
        if is_grads_batched:
            raise RuntimeError("vmap: not supported by this backward")
        return grad(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", no_batched)
    torch.testing.assert_close(reverse_jacobians(gen, clf, w), want, rtol=1e-6, atol=1e-7)
