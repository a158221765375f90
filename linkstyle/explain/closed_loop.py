"""Closed-loop tuning (docs/method.md section 9): find w whose render re-encodes to the set r.

The open-loop link maps the edited r to w and trusts that the render shows the edit; it
mostly does not (a few percent of the set change survives, see faithfulness.py). Closed
loop asks the classifier instead. For tuned unit i and seed s, the set values v_0 < ... <
v_T-1 of unit i are reached from the seed's own w_s, with r~(w) = f_R(G(w)) and the other
units held at r~(w_s); J_s = d r~ / d w at w_s (forward mode, one JVP per w dimension,
once per seed, batched over seeds, shared by every unit and step at that seed).

The T renders of one (unit, seed) are solved as at most two legs that start at w_s, one
up through the set values above a = r~_i(w_s) and one down through those below it, each
value a stop on its leg (a value at a is the seed itself). Unit i's goal walks from stop
to stop in steps spread over the whole set range, `walk_steps` for v_0 .. v_T-1, so a
short leg takes few steps; at each stop up to `polish_steps` more steps hold the goal at
the set value and end early once r~_i is within `tolerance` of the set range of it; then
that stop's w is kept and the leg walks on from there. Every step solves the problem
linearised at the iterate,

    min_dw ||e_-i - J_-i dw||^2 + lambda ||dw||^2   subject to   j_i dw = c,

e = r* - r~ (the other units' drift, exact), c = goal - r~_i, j_i = d r~_i / d w (exact,
one backward pass with two cotangents per leg and step), J_-i the other units' rows of a
Jacobian that starts at J_s and follows the leg by a secant (Broyden) update from the exact
change of all of r~ over each step. KKT in closed form: dw = A^-1 g + nu A^-1 j_i,
A = J_-i^T J_-i + lambda I, g = J_-i^T e, nu = (c - j_i^T A^-1 g) / (j_i^T A^-1 j_i).
lambda = `ridge` times the mean diagonal of J_s^T J_s; the step is cut to `max_step` and
always taken. Units with no gradient at the seed (a ReLU unit that is zero over the whole
image) cannot be moved locally: their renders stay the seed's, at no cost, and
`seed_gradient` reports them. Legs are solved in chunks of SOLVE_CHUNK (unit, seed) rows,
each leg on its own, so results do not depend on the batch size beyond float rounding.
The solver and its cost against the open loop: docs/method.md D39,
benchmarks/closed_loop_frontier.py.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core.config import check

SOLVE_CHUNK = 64  # (unit, seed) rows solved together (memory and CPU cache); results do not depend on it
SECANT_MIN_STEP = 1e-3  # steps shorter than this times max_step leave J as it is (float32 noise)
REACH_EPS = 1e-6  # a set value within this fraction of the set range of the seed's value is the seed


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Options of tune_units.closed_loop."""

    walk_steps: int = 8  # steps of the goal over the whole set range [v_0, v_T-1]; a leg walks its share
    polish_steps: int = 4  # at most this many steps at each set value, after the walk reaches it
    tolerance: float = 0.05  # a set value counts as reached within this fraction of the set range
    ridge: float = 0.01  # damping, relative to the mean diagonal of J_s^T J_s
    max_step: float = 3.0  # largest w step of one iteration
    jacobian_batch: int = 4  # seeds per batched Jacobian (memory: one tangent per w dimension and seed)
    units_every: int = 1  # tune every k-th of the selected units only (1: all)

    def __post_init__(self):
        check(self.walk_steps >= 1, "walk_steps", "must be >= 1")
        check(self.polish_steps >= 0, "polish_steps", "must be >= 0")
        check(0.0 <= self.tolerance < 1.0, "tolerance", "must be in [0, 1)")
        check(self.ridge > 0.0, "ridge", "must be > 0")
        check(self.max_step > 0.0, "max_step", "must be > 0")
        check(self.jacobian_batch >= 1, "jacobian_batch", "must be >= 1")
        check(self.units_every >= 1, "units_every", "must be >= 1 (1: every selected unit)")


@contextlib.contextmanager
def _eval_mode(*modules):
    """Eval mode (batch-independent BatchNorm) for the block, then back as they were."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, t in zip(modules, was):
            m.train(t)


def reencode(gen, clf, w: torch.Tensor) -> torch.Tensor:
    """r~ = f_R(G(w)), differentiable (Generator.synthesize and Classifier.represent are not)."""
    return clf.features(clf.preprocess(gen._synthesis(w, False)[0]))


def seed_jacobians(gen, clf, w: torch.Tensor, batch: int = 4, progress: bool = False) -> torch.Tensor:
    """[S, R, D] float64: d r~ / d w at each row of w [S, D], `batch` seeds at a time.

    Forward mode under vmap first. Models that write into tensors in place (StyleGAN3's
    Fourier input builds its transforms by item assignment) cannot run under vmap: for
    them, and from the first batch that fails on, reverse mode without vmap over the model.
    """
    from torch.func import jacfwd, vmap

    def one(x):
        return reencode(gen, clf, x[None])[0]

    out, vmapped = [], True
    with _eval_mode(gen, clf):
        for a in tqdm(range(0, len(w), batch), desc="tune_units/jacobians", unit="batch", disable=not progress):
            x = w[a : a + batch].float().clone()
            if vmapped:
                try:
                    out.append(vmap(jacfwd(one))(x).detach().double())
                    continue
                except RuntimeError as e:
                    if isinstance(e, _OOM):
                        raise
                    vmapped = False
                    warnings.warn(f"Jacobians: vmap failed ({str(e).strip().splitlines()[0][:160]}); "
                                  "using reverse mode, one backward pass per unit", RuntimeWarning, stacklevel=2)
            out.append(reverse_jacobians(gen, clf, x).double())
    return torch.cat(out) if out else torch.zeros(0, clf.n_units, gen.w_dim, dtype=torch.float64)


_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def reverse_jacobians(gen, clf, w: torch.Tensor) -> torch.Tensor:
    """[B, R, D] float32: d r~ / d w by reverse mode, for models that vmap cannot run.

    One forward pass; the backward pass is batched over the R output rows
    (`is_grads_batched`, which vmaps the backward graph only) and, where even that
    fails, run once per row. Summing over the batch is exact: in eval mode each render
    depends on its own w only.
    """
    x = w.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        r = reencode(gen, clf, x)  # [B, R]
        eye = torch.eye(r.shape[1], dtype=r.dtype, device=r.device)
        cot = eye[:, None, :].expand(-1, r.shape[0], -1)  # [R, B, R]: row k of every render
        try:
            (jac,) = torch.autograd.grad(r, x, cot, retain_graph=True, is_grads_batched=True)
        except RuntimeError as e:
            if isinstance(e, _OOM):
                raise
            jac = torch.stack([torch.autograd.grad(r, x, cot[k], retain_graph=True)[0] for k in range(len(eye))])
    return jac.transpose(0, 1).detach()  # [B, R, D]


class ClosedLoop:
    """Per-seed geometry (Jacobians, r~ at the seed) once; then `solve` for any batch of
    (seed, unit, set values)."""

    def __init__(self, gen, clf, w_seed: np.ndarray, cfg: ClosedLoopConfig, batch_size: int = 512,
                 progress: bool = False):
        self.gen, self.clf, self.cfg, self.batch_size = gen, clf, cfg, batch_size
        dev = gen.device
        self.w_seed = torch.as_tensor(np.asarray(w_seed), dtype=torch.float32, device=dev)
        self.jac = seed_jacobians(gen, clf, self.w_seed, cfg.jacobian_batch, progress)  # [S, R, D]
        # The floor keeps A invertible where r~ does not depend on w at all (then no step).
        self.lam = cfg.ridge * (self.jac * self.jac).sum(1).mean(1) + 1e-12  # [S]
        with _eval_mode(gen, clf), torch.no_grad():
            self.r_seed = torch.cat([reencode(gen, clf, self.w_seed[a : a + batch_size]).double()
                                     for a in range(0, len(self.w_seed), max(1, batch_size))]) \
                if len(self.w_seed) else torch.zeros(0, clf.n_units, dtype=torch.float64, device=dev)

    def seed_gradient(self, seed_idx: np.ndarray, unit: np.ndarray) -> np.ndarray:
        """[n] float32: ||d r~_i / d w|| at the seed; 0 = unit i cannot be moved from there."""
        s, u = torch.as_tensor(np.asarray(seed_idx)), torch.as_tensor(np.asarray(unit))
        return self.jac[s, u].norm(dim=1).float().cpu().numpy()

    def solve(self, seed_idx: np.ndarray, unit: np.ndarray, values: np.ndarray) -> torch.Tensor:
        """w [n, T, D] (float32): for row k, unit unit[k] of seed seed_idx[k] set to each of values[k] [T]."""
        values = np.asarray(values, dtype=np.float64)
        outs = []
        chunk = max(1, min(self.batch_size, SOLVE_CHUNK))
        with _eval_mode(self.gen, self.clf):
            for a in range(0, len(seed_idx), chunk):
                sl = slice(a, a + chunk)
                outs.append(self._solve_legs(np.asarray(seed_idx[sl]), np.asarray(unit[sl]), values[sl]))
        return torch.cat(outs) if outs else torch.zeros(0, values.shape[1], self.gen.w_dim)

    def _evaluate(self, w: torch.Tensor, target: torch.Tensor, unit: torch.Tensor):
        """r~, g = J_-i^T (r* - r~)_-i and j_i at w, exact, from one forward and one backward pass."""
        with torch.enable_grad():
            x = w.detach().float().requires_grad_(True)
            r = reencode(self.gen, self.clf, x)
            rows = torch.arange(len(x), device=x.device)
            err = target.float() - r.detach()
            err[rows, unit] = 0.0  # unit i is the constraint, not the hold
            onehot = torch.zeros_like(err)
            onehot[rows, unit] = 1.0
            g, = torch.autograd.grad(r, x, torch.stack([err, onehot]), is_grads_batched=True)
        return r.detach().double(), g[0].double(), g[1].double()

    def _solve_legs(self, seed_idx: np.ndarray, unit: np.ndarray, values: np.ndarray) -> torch.Tensor:
        """The legs of every (unit, seed) row; module doc."""
        cfg, dev = self.cfg, self.w_seed.device
        n_rows, T, D = len(seed_idx), values.shape[1], self.w_seed.shape[1]
        out = self.w_seed[torch.as_tensor(seed_idx, device=dev)][:, None, :].repeat(1, T, 1).clone()
        start_val = self.r_seed[seed_idx, unit].cpu().numpy()
        span = values.max(1) - values.min(1)
        movable = self.seed_gradient(seed_idx, unit) > 0
        legs = []  # (row, stops in walking order)
        for k in range(n_rows):
            if span[k] <= 0 or not movable[k]:
                continue
            off = values[k] - start_val[k]
            for sign in (1.0, -1.0):
                stops = [t for t in np.argsort(sign * values[k], kind="stable") if sign * off[t] > REACH_EPS * span[k]]
                if stops:
                    legs.append((k, [int(t) for t in stops]))
        if not legs:
            return out
        n = len(legs)
        row = torch.as_tensor([k for k, _ in legs], device=dev)
        s = torch.as_tensor(seed_idx, device=dev)[row]
        u = torch.as_tensor(unit, device=dev)[row]
        every = torch.arange(n, device=dev)
        stops = [t for _, t in legs]
        vals = torch.as_tensor(values, device=dev)[row]  # [n, T]
        width = torch.as_tensor(span, device=dev)[row]
        target = self.r_seed[s].clone()  # r*: the others at the seed's r~; unit i's entry is not used
        w = self.w_seed[s].double()
        r = self.r_seed[s].clone()
        jac = self.jac[s].clone()
        g = torch.zeros(n, D, dtype=torch.float64, device=dev)  # the others do not drift at the seed
        ji = jac[every, u].clone()
        eye = torch.eye(D, dtype=torch.float64, device=dev)
        stop = [0] * n  # position in the leg's stops
        begin = r[every, u].clone()  # the goal where this segment of the walk began
        goal_end = torch.stack([vals[i, stops[i][0]] for i in range(n)])
        n_walk = self._walk_steps(goal_end - begin, width)
        taken = torch.zeros(n, dtype=torch.float64, device=dev)  # steps in this segment
        active = torch.ones(n, dtype=torch.bool, device=dev)
        while bool(active.any()):
            a = torch.nonzero(active)[:, 0]
            ia = torch.arange(len(a), device=dev)
            held = jac[a].clone()
            held[ia, u[a]] = 0.0  # unit i's row is the constraint, not the hold
            chol = torch.linalg.cholesky(held.transpose(1, 2) @ held + self.lam[s[a]][:, None, None] * eye)
            taken[a] += 1
            goal = begin[a] + (taken[a] / n_walk[a]).clamp(max=1.0) * (goal_end[a] - begin[a])
            c = goal - r[a, u[a]]
            x = torch.cholesky_solve(torch.stack([g[a], ji[a]], 2), chol)  # [m, D, 2]: A^-1 g, A^-1 j_i
            q = (ji[a] * x[:, :, 1]).sum(1)
            nu = torch.where(q > 1e-20, (c - (ji[a] * x[:, :, 0]).sum(1)) / q.clamp_min(1e-20), torch.zeros_like(q))
            step = self._cut(x[:, :, 0] + nu[:, None] * x[:, :, 1])
            w[a] = w[a] + step
            r_new, g[a], ji[a] = self._evaluate(w[a], target[a], u[a])
            miss = (r_new - r[a]) - (jac[a] @ step[:, :, None])[..., 0]  # what the linear model missed
            sq = (step * step).sum(1, keepdim=True)
            big = sq > (SECANT_MIN_STEP * cfg.max_step) ** 2
            jac[a] = jac[a] + torch.where(big, step / sq.clamp_min(1e-30), 0.0)[:, None, :] * miss[:, :, None]
            r[a] = r_new
            gap = (goal_end[a] - r_new[ia, u[a]]).abs()
            walked = taken[a] >= n_walk[a]
            done = walked & ((gap <= cfg.tolerance * width[a]) | (taken[a] >= n_walk[a] + cfg.polish_steps))
            for i in a[done].tolist():
                out[row[i], stops[i][stop[i]]] = w[i].float()
                stop[i] += 1
                if stop[i] == len(stops[i]):
                    active[i] = False
                    continue
                begin[i], goal_end[i] = goal_end[i], vals[i, stops[i][stop[i]]]
                n_walk[i] = self._walk_steps(goal_end[i : i + 1] - begin[i : i + 1], width[i : i + 1])[0]
                taken[i] = 0.0
        return out

    def _walk_steps(self, distance: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """Steps for a segment: its share of walk_steps over the set range, at least one."""
        return torch.ceil(self.cfg.walk_steps * distance.abs() / width - 1e-9).clamp_min(1.0)

    def _cut(self, step: torch.Tensor) -> torch.Tensor:
        norm = step.norm(dim=1, keepdim=True)
        return step * torch.clamp(self.cfg.max_step / norm.clamp_min(1e-12), max=1.0)
