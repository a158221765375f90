"""Closed-loop tuning (docs/method.md section 9): find w whose render re-encodes to the set r.

The open-loop link maps the edited r to w and trusts that the render shows the edit; it
mostly does not (a few percent of the set change survives, see faithfulness.py). Closed
loop asks the classifier instead. For tuned unit i, seed s and set value v, the target is
r* = r_s with unit i set to v, and w is solved for from the seed's own w_s (whose render
re-encodes to r_s exactly), with r~(w) = f_R(G(w)) and J_s = d r~ / d w at w_s (forward
mode, one JVP per w dimension, once per seed, batched over seeds).

Method `path` (default). Unit i's goal walks from r~_i(w_s) to v in n_iter - n_polish equal
steps (continuation) and stays at v for the last n_polish; every step solves the problem
linearised at the iterate,

    min_dw ||e_-i - J_-i dw||^2 + lambda ||dw||^2   subject to   j_i dw = c,

e = r* - r~ (the other units' drift, exact), c = goal - r~_i, j_i = d r~_i / d w (exact,
one backward pass with two cotangents per render and step), J_-i the other units' rows of
a Jacobian that starts at J_s and follows the path by a secant (Broyden) update from the
exact change of all of r~ over each step. KKT in closed form: dw = A^-1 g + nu A^-1 j_i,
A = J_-i^T J_-i + lambda I, g = J_-i^T e, nu = (c - j_i^T A^-1 g) / (j_i^T A^-1 j_i + h);
h = hold_weight (0: unit i is a constraint of every linearised step; h > 0 softens it).
The step is cut to max_step and always taken. Holding the others by least squares in every
step, not by a penalty against unit i, and small steps that keep the linear model true,
move the others less per unit of transfer than `lm`; the polish steps at v catch up what the
cut steps left behind and re-hold the others, which moves them less again (docs/method.md D39;
the measured frontier: benchmarks/closed_loop_frontier.py).

Method `lm` (a soft alternative). One damped Gauss-Newton solve of

    min_w  E(w) = (r*_i - r~_i(w))^2 + hold_weight * sum_{k != i} (r*_k - r~_k(w))^2,

with H = hold_weight J_s^T J_s + (1 - hold_weight) j_i j_i^T + mu lambda I, exact gradient at
every iterate, a step kept only if E went down (mu x 4 on a failure, / 3 on a success).

lambda = ridge * mean(diag J_s^T J_s). Re-linearising all of J at every iterate (64 JVPs
per render and step) costs 20-40x per step on a CPU. Units with no gradient at the seed (a
ReLU unit that is zero over the whole image) cannot be moved locally: their renders stay
the seed's. Every render is solved on its own (its own gradients, step and damping), in
chunks of SOLVE_CHUNK, so results do not depend on the batch size beyond float rounding.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core.config import check


METHODS = ("path", "lm")
SECANT_MIN_STEP = 1e-3  # path: steps shorter than this times max_step leave J as it is
SOLVE_CHUNK = 64  # renders solved together (memory and CPU cache); results do not depend on it


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Options of tune_units.closed_loop."""

    method: str = "path"  # path: constrained steps along a continuation path (default); lm: one soft Levenberg-Marquardt solve
    hold_weight: float = 0.0  # weight of the other units' squared drift, relative to unit i's squared error, <= 1 (path: 0 = unit i a constraint; lm: try 0.01)
    ridge: float = 0.002  # damping, relative to the mean diagonal of J_s^T J_s
    max_step: float = 2.0  # largest w step of one iteration
    n_iter: int = 36  # steps per render; each costs one forward and one backward pass
    n_polish: int = 16  # path: of those, the last n_polish hold unit i at its set value (catch up, re-hold the others)
    jacobian_batch: int = 4  # seeds per batched Jacobian (memory: 64 tangents per seed)
    units_every: int = 1  # tune every k-th of the selected units only: the closed loop costs ~65x the open loop per render

    def __post_init__(self):
        check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        check(0.0 <= self.hold_weight <= 1.0, "hold_weight", "must be in [0, 1] (lm, 0: the other units are free; path, 0: unit i a constraint of every step)")
        check(self.ridge > 0.0, "ridge", "must be > 0")
        check(self.max_step > 0.0, "max_step", "must be > 0")
        check(self.n_iter >= 1, "n_iter", "must be >= 1")
        check(self.n_polish >= 0, "n_polish", "must be >= 0")
        check(self.method != "path" or self.n_polish < self.n_iter, "n_polish",
              f"must be in [0, n_iter) = [0, {self.n_iter}) for method path: the goal needs at least one step to walk")
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
    """Per-seed geometry (Jacobians) once; then `solve` for any batch of (seed, unit, target)."""

    def __init__(self, gen, clf, w_seed: np.ndarray, cfg: ClosedLoopConfig, batch_size: int = 512,
                 progress: bool = False):
        self.gen, self.clf, self.cfg, self.batch_size = gen, clf, cfg, batch_size
        dev = gen.device
        self.w_seed = torch.as_tensor(np.asarray(w_seed), dtype=torch.float32, device=dev)
        self.jac = seed_jacobians(gen, clf, self.w_seed, cfg.jacobian_batch, progress)  # [S, R, D]
        self.hess = self.jac.transpose(1, 2) @ self.jac  # [S, D, D]: J_s^T J_s
        # The floor keeps H invertible where r~ does not depend on w at all (then g = 0: no step).
        self.lam = cfg.ridge * self.hess.diagonal(dim1=1, dim2=2).mean(1) + 1e-12  # [S]

    def _evaluate(self, w: torch.Tensor, target: torch.Tensor, unit: torch.Tensor, hold: float, own: float):
        """r~, E, g = J^T D (r* - r~) and j_i at w, exact, from one forward and one backward pass;
        D weighs the other units by `hold` and unit i by `own`."""
        with torch.enable_grad():
            x = w.detach().float().requires_grad_(True)
            r = reencode(self.gen, self.clf, x)
            rows = torch.arange(len(x), device=x.device)
            err = target - r.detach()
            weights = torch.full_like(err, hold)
            weights[rows, unit] = own
            onehot = torch.zeros_like(err)
            onehot[rows, unit] = 1.0
            cot = torch.stack([weights * err, onehot])
            g, = torch.autograd.grad(r, x, cot, is_grads_batched=True)
        err = err.double()
        energy = (weights.double() * err * err).sum(1)
        return r.detach().double(), energy, g[0].double(), g[1].double()

    def solve(self, seed_idx: np.ndarray, unit: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """w [n, D] (float32) for n renders: seed position, unit id and target r* [n, R] each."""
        outs = []
        one = self._solve_path if self.cfg.method == "path" else self._solve_lm
        # At most SOLVE_CHUNK renders at a time: every render is solved on its own anyway, and
        # on a CPU small chunks run about twice as fast as 512 (cache, fewer page faults).
        chunk = max(1, min(self.batch_size, SOLVE_CHUNK))
        with _eval_mode(self.gen, self.clf):
            for a in range(0, len(seed_idx), chunk):
                sl = slice(a, a + chunk)
                outs.append(one(np.asarray(seed_idx[sl]), np.asarray(unit[sl]), target[sl]))
        return torch.cat(outs) if outs else torch.zeros(0, self.gen.w_dim)

    def _cut(self, step: torch.Tensor) -> torch.Tensor:
        norm = step.norm(dim=1, keepdim=True)
        return step * torch.clamp(self.cfg.max_step / norm.clamp_min(1e-12), max=1.0)

    def _solve_path(self, seed_idx: np.ndarray, unit: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """Method `path`: unit i's goal walks from r~_i(w_s) to its set value in n_iter - n_polish
        equal steps, then stays there for n_polish steps; each step solves the linearised problem
            min_dw ||e_-i - J_-i dw||^2 + lambda ||dw||^2 + (c - j_i dw)^2 / h,
        e = r* - r~ at the iterate (exact), c = goal - r~_i, j_i exact at the iterate and J the
        seed's Jacobian, carried along by a secant (Broyden) update from the exact change of
        all of r~ over each step. h = 0 makes unit i a constraint (j_i dw = c: KKT). Every step
        is taken, cut to max_step."""
        cfg, dev = self.cfg, self.w_seed.device
        s = torch.as_tensor(seed_idx, device=dev)
        u = torch.as_tensor(unit, device=dev)
        rows = torch.arange(len(s), device=dev)
        target = target.to(dev, torch.float32)
        w = self.w_seed[s].double()
        jac = self.jac[s].clone()  # [n, R, D]
        lam = self.lam[s][:, None, None] * torch.eye(w.shape[1], dtype=torch.float64, device=dev)
        r, _, g, ji = self._evaluate(w, target, u, hold=1.0, own=0.0)
        start, goal = r[rows, u], target[rows, u].double()
        walk = cfg.n_iter - cfg.n_polish
        for k in range(cfg.n_iter):
            held = jac.clone()
            held[rows, u] = 0.0  # unit i's curvature is not held
            chol = torch.linalg.cholesky(held.transpose(1, 2) @ held + lam)
            # The goal walks for n_iter - n_polish steps, then stays: the last steps are
            # Gauss-Newton steps at the set value that catch up and re-hold the others.
            c = start + min(1.0, (k + 1) / walk) * (goal - start) - r[rows, u]
            x = torch.cholesky_solve(torch.stack([g, ji], 2), chol)  # [n, D, 2]: A^-1 g, A^-1 j_i
            q = (ji * x[:, :, 1]).sum(1)
            # A unit with no gradient here (a ReLU unit off over the whole image) cannot be
            # moved: only the hold is corrected.
            nu = torch.where(q > 1e-20, (c - (ji * x[:, :, 0]).sum(1)) / (q + cfg.hold_weight), torch.zeros_like(q))
            step = self._cut(x[:, :, 0] + nu[:, None] * x[:, :, 1])
            w = w + step
            if k + 1 < cfg.n_iter:
                r_old = r
                r, _, g, ji = self._evaluate(w, target, u, hold=1.0, own=0.0)
                miss = (r - r_old) - (jac @ step[:, :, None])[..., 0]  # [n, R]: what the linear model missed
                # Only steps well above float noise update J (r~ is float32: a tiny step's miss is noise).
                sq = (step * step).sum(1, keepdim=True)
                big = sq > (SECANT_MIN_STEP * cfg.max_step) ** 2
                jac = jac + torch.where(big, step / sq.clamp_min(1e-30), 0.0)[:, None, :] * miss[:, :, None]
        return w.float()

    def _solve_lm(self, seed_idx: np.ndarray, unit: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """Method `lm`: one damped Gauss-Newton solve of E(w) (module doc)."""
        cfg, dev = self.cfg, self.w_seed.device
        s = torch.as_tensor(seed_idx, device=dev)
        u = torch.as_tensor(unit, device=dev)
        target = target.to(dev, torch.float32)
        w = self.w_seed[s].double()
        hold = cfg.hold_weight * self.hess[s]  # [n, D, D]
        eye = torch.eye(w.shape[1], dtype=torch.float64, device=dev)
        damp = self.lam[s][:, None, None] * eye
        mu = torch.ones(len(w), 1, 1, dtype=torch.float64, device=dev)  # Levenberg-Marquardt multiplier
        _, energy, g, ji = self._evaluate(w, target, u, hold=cfg.hold_weight, own=1.0)
        for _ in range(cfg.n_iter):
            h = hold + (1.0 - cfg.hold_weight) * ji[:, :, None] * ji[:, None, :] + mu * damp
            trial = w + self._cut(torch.linalg.solve(h, g[:, :, None])[..., 0])
            _, e2, g2, j2 = self._evaluate(trial, target, u, hold=cfg.hold_weight, own=1.0)
            ok = e2 < energy
            okc = ok[:, None]
            w = torch.where(okc, trial, w)
            energy = torch.where(ok, e2, energy)
            g, ji = torch.where(okc, g2, g), torch.where(okc, j2, ji)
            # A failed step means the seed's curvature misleads here: damp harder, which
            # turns the step toward the (exact) gradient; a kept one relaxes the damping.
            mu = torch.where(ok[:, None, None], (mu / 3.0).clamp(min=1.0), mu * 4.0)
        return w.float()
