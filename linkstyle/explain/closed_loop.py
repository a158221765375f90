"""Closed-loop tuning (docs/method.md section 4): find w whose render re-encodes to the set r.

The open-loop link maps the edited r to w and trusts that the render shows the edit; it
mostly does not (a few percent of the set change survives, see faithfulness.py). Closed
loop asks the classifier instead. For tuned unit i, seed s and set value v, the target is
r* = r_s with unit i set to v, and w solves, starting from the seed's own w_s (whose
render re-encodes to r_s exactly),

    min_w  E(w) = (r*_i - r~_i(w))^2 + hold_weight * sum_{k != i} (r*_k - r~_k(w))^2,
    r~(w) = f_R(G(w)),

by damped Gauss-Newton (Levenberg-Marquardt), with curvature from the seed's Jacobian:

- J_s = d r~ / d w at w_s, once per seed (forward mode, one JVP per w dimension,
  batched over seeds), gives the curvature of the held units, hold_weight * J_s^T J_s;
- at every iterate the gradient of E and the gradient j_i of unit i are exact (one
  backward pass per render with two cotangents), so every kept step really lowers E and unit i's own
  curvature (1 - hold_weight) j_i j_i^T is current, even far from the seed;
- the step dw = H^-1 g, H = hold_weight J_s^T J_s + (1 - hold_weight) j_i j_i^T + mu lambda I,
  lambda = ridge * mean(diag J_s^T J_s), cut to max_step, is tried and kept only if E went
  down (Levenberg-Marquardt: a failure multiplies the render's mu by 4, which turns the
  step toward the gradient, a success divides it by 3, down to 1).

Re-linearising all of J at every iterate (64 JVPs per render and step) gave about the same
trade-off at 20-40x the cost per step on a CPU; a secant (Broyden) update of J_s was as cheap
as this but stalled (docs/method.md section 4). Units with no gradient at the seed (a ReLU
unit that is zero over the whole image) cannot be moved locally: their renders stay the seed's.

Every render is solved on its own (its own gradients, step and damping), so results do not
depend on the batch size beyond float rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core.config import check


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Options of tune_units.closed_loop."""

    hold_weight: float = 0.01  # weight of the other units' squared drift, relative to unit i's squared error, <= 1
    ridge: float = 0.01  # damping, relative to the mean diagonal of J_s^T J_s
    max_step: float = 4.0  # largest w step of one iteration
    n_iter: int = 10  # tried steps per render; each costs one forward and one backward pass
    jacobian_batch: int = 4  # seeds per batched Jacobian (memory: 64 tangents per seed)
    units_every: int = 1  # tune every k-th of the selected units only: the closed loop costs ~15x the open loop

    def __post_init__(self):
        check(0.0 <= self.hold_weight <= 1.0, "hold_weight", "must be in [0, 1] (0: the other units are free; 1: as weighty as unit i)")
        check(self.ridge > 0.0, "ridge", "must be > 0")
        check(self.max_step > 0.0, "max_step", "must be > 0")
        check(self.n_iter >= 1, "n_iter", "must be >= 1")
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
    """[S, R, D] float64: d r~ / d w at each row of w [S, D], forward mode, `batch` seeds at a time."""
    from torch.func import jacfwd, vmap

    def one(x):
        return reencode(gen, clf, x[None])[0]

    out = []
    with _eval_mode(gen, clf):
        for a in tqdm(range(0, len(w), batch), desc="tune_units/jacobians", unit="batch", disable=not progress):
            out.append(vmap(jacfwd(one))(w[a : a + batch].float().clone()).detach().double())
    return torch.cat(out) if out else torch.zeros(0, clf.n_units, gen.w_dim, dtype=torch.float64)


class ClosedLoop:
    """Per-seed geometry (Jacobians) once; then `solve` for any batch of (seed, unit, target)."""

    def __init__(self, gen, clf, w_seed: np.ndarray, cfg: ClosedLoopConfig, batch_size: int = 512,
                 progress: bool = False):
        self.gen, self.clf, self.cfg, self.batch_size = gen, clf, cfg, batch_size
        dev = gen.device
        self.w_seed = torch.as_tensor(np.asarray(w_seed), dtype=torch.float32, device=dev)
        jac = seed_jacobians(gen, clf, self.w_seed, cfg.jacobian_batch, progress)
        self.hess = jac.transpose(1, 2) @ jac  # [S, D, D]: J_s^T J_s
        # The floor keeps H invertible where r~ does not depend on w at all (then g = 0: no step).
        self.lam = cfg.ridge * self.hess.diagonal(dim1=1, dim2=2).mean(1) + 1e-12  # [S]

    def _evaluate(self, w: torch.Tensor, target: torch.Tensor, unit: torch.Tensor):
        """E, the gradient direction g = J^T D (r* - r~) and j_i at w, exact, from one backward pass."""
        gamma = self.cfg.hold_weight
        with torch.enable_grad():
            x = w.detach().float().requires_grad_(True)
            r = reencode(self.gen, self.clf, x)
            rows = torch.arange(len(x), device=x.device)
            err = target - r.detach()
            weights = torch.full_like(err, gamma)
            weights[rows, unit] = 1.0
            onehot = torch.zeros_like(err)
            onehot[rows, unit] = 1.0
            cot = torch.stack([weights * err, onehot])
            g, = torch.autograd.grad(r, x, cot, is_grads_batched=True)
        err = err.double()
        energy = (weights.double() * err * err).sum(1)
        return energy, g[0].double(), g[1].double()

    def solve(self, seed_idx: np.ndarray, unit: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        """w [n, D] (float32) for n renders: seed position, unit id and target r* [n, R] each."""
        outs = []
        with _eval_mode(self.gen, self.clf):
            for a in range(0, len(seed_idx), self.batch_size):
                sl = slice(a, a + self.batch_size)
                outs.append(self._solve(np.asarray(seed_idx[sl]), np.asarray(unit[sl]), target[sl]))
        return torch.cat(outs) if outs else torch.zeros(0, self.gen.w_dim)

    def _solve(self, seed_idx: np.ndarray, unit: np.ndarray, target: torch.Tensor) -> torch.Tensor:
        cfg, dev = self.cfg, self.w_seed.device
        s = torch.as_tensor(seed_idx, device=dev)
        u = torch.as_tensor(unit, device=dev)
        target = target.to(dev, torch.float32)
        w = self.w_seed[s].double()
        hold = cfg.hold_weight * self.hess[s]  # [n, D, D]
        eye = torch.eye(w.shape[1], dtype=torch.float64, device=dev)
        damp = self.lam[s][:, None, None] * eye
        mu = torch.ones(len(w), 1, 1, dtype=torch.float64, device=dev)  # Levenberg-Marquardt multiplier
        energy, g, ji = self._evaluate(w, target, u)
        for _ in range(cfg.n_iter):
            h = hold + (1.0 - cfg.hold_weight) * ji[:, :, None] * ji[:, None, :] + mu * damp
            step = torch.linalg.solve(h, g[:, :, None])[..., 0]
            norm = step.norm(dim=1, keepdim=True)
            step = step * torch.clamp(cfg.max_step / norm.clamp_min(1e-12), max=1.0)
            trial = w + step
            e2, g2, j2 = self._evaluate(trial, target, u)
            ok = e2 < energy
            okc = ok[:, None]
            w = torch.where(okc, trial, w)
            energy = torch.where(ok, e2, energy)
            g, ji = torch.where(okc, g2, g), torch.where(okc, j2, ji)
            # A failed step means the seed's curvature misleads here: damp harder, which
            # turns the step toward the (exact) gradient; a kept one relaxes the damping.
            mu = torch.where(ok[:, None, None], (mu / 3.0).clamp(min=1.0), mu * 4.0)
        return w.float()
