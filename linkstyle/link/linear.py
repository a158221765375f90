"""Linear links r -> w: ordinary least squares and ridge, fitted in closed form.

Both are fitted in float64 and stored as float32 buffers of a `LinearLink`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold
from torch import nn

from linkstyle.core.config import check
from linkstyle.core.errors import UserError

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-4, 4, 13))  # the default CV grid


@dataclass(frozen=True)
class OLSConfig:
    """params.yaml `fit_link.ols`: least squares has nothing to choose."""


@dataclass(frozen=True)
class RidgeConfig:
    """params.yaml `fit_link.ridge`: the penalty grid, searched by K-fold CV."""

    alphas: tuple[float, ...] = RIDGE_ALPHAS
    cv_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check(len(self.alphas) > 0, "alphas", "must list at least one penalty")
        check(all(math.isfinite(a) and a > 0 for a in self.alphas), "alphas",
              f"must all be positive finite numbers, got {list(self.alphas)}")
        check(self.cv_folds >= 2, "cv_folds", f"must be at least 2, got {self.cv_folds}")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")


class LinearLink(nn.Module):
    """w = r @ weight.T + bias, with weight [w_dim, r_dim] held as buffers (nothing to train)."""

    arch = "linear"

    def __init__(self, r_dim: int, w_dim: int, kind: str = "ols") -> None:
        super().__init__()
        self.kind = kind
        self.r_dim, self.w_dim = int(r_dim), int(w_dim)
        self.register_buffer("weight", torch.zeros(self.w_dim, self.r_dim))
        self.register_buffer("bias", torch.zeros(self.w_dim))

    def config(self) -> dict:
        return {"arch": self.arch, "kind": self.kind, "r_dim": self.r_dim, "w_dim": self.w_dim}

    @classmethod
    def from_config(cls, d: dict) -> "LinearLink":
        return cls(d["r_dim"], d["w_dim"], d["kind"])

    @classmethod
    def from_numpy(cls, weight: np.ndarray, bias: np.ndarray, kind: str = "ols") -> LinearLink:
        link = cls(weight.shape[1], weight.shape[0], kind)
        link.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        link.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        return link

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.to(self.weight.dtype)
        return r @ self.weight.T + self.bias


# ---------------------------------------------------------------------------- inputs

def as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def check_pairs(r: Any, w: Any, min_rows: int = 2, why: str = "fitting a link") -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 [n, dim] arrays; one-line errors for shapes, NaNs and too few pairs."""
    r, w = as_array(r), as_array(w)
    for name, a, unit in (("r", r, "units"), ("w", w, "dims")):
        if a.ndim != 2:
            raise UserError(f"{name} must be a 2-D array [pairs, {unit}], got shape {tuple(a.shape)}")
        bad = int(a.size - np.isfinite(a).sum())
        if bad:
            raise UserError(f"{name} has {bad} non-finite values (NaN/inf); regenerate the paired data")
    if len(r) != len(w):
        raise UserError(f"r has {len(r)} rows but w has {len(w)}; they must hold the same pairs, row for row")
    if len(r) < min_rows:
        raise UserError(f"{why} needs at least {min_rows} pairs, got {len(r)}; supply more pairs or lower link.cv_folds")
    return r, w


# ---------------------------------------------------------------------------- linear fits

def _ols(r: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    # Centring first keeps the intercept out of the minimum-norm solution that lstsq
    # returns for rank-deficient r (dead units, fewer pairs than units), and makes it the
    # alpha -> 0 limit of ridge.
    r_mean, w_mean = r.mean(0), w.mean(0)
    coef, _, rank, _ = np.linalg.lstsq(r - r_mean, w - w_mean, rcond=None)
    return coef.T, w_mean - r_mean @ coef, int(rank)


def fit_ols(r: Any, w: Any) -> tuple[LinearLink, dict]:
    """Least squares with intercept (minimum-norm where r is rank deficient); info: rank of r."""
    r, w = check_pairs(r, w, why="ordinary least squares")
    weight, bias, rank = _ols(r, w)
    return LinearLink.from_numpy(weight, bias, kind="ols"), {"rank": rank}


class _RidgePath:
    """Ridge solutions for many penalties from one SVD of the centred training data."""

    def __init__(self, r: np.ndarray, w: np.ndarray) -> None:
        self.r_mean, self.w_mean = r.mean(0), w.mean(0)
        u, self.s, self.vt = np.linalg.svd(r - self.r_mean, full_matrices=False)
        self.uty = u.T @ (w - self.w_mean)

    def coef(self, alpha: float) -> np.ndarray:
        """[r_dim, w_dim] minimising |w - r B|^2 + alpha |B|^2 on the centred data."""
        return self.vt.T @ ((self.s / (self.s ** 2 + alpha))[:, None] * self.uty)

    def val_mse(self, r_val: np.ndarray, w_val: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        proj = (r_val - self.r_mean) @ self.vt.T  # in the SVD basis, each alpha is a rescaling
        target = w_val - self.w_mean
        return np.array([np.mean(((proj * (self.s / (self.s ** 2 + a))) @ self.uty - target) ** 2) for a in alphas])


def fit_ridge(r: Any, w: Any, alphas: tuple[float, ...] = RIDGE_ALPHAS, cv_folds: int = 5,
              seed: int = 0) -> tuple[LinearLink, dict]:
    """Ridge regression with the penalty chosen by K-fold CV on held-out MSE.

    The penalty is on the raw (unstandardised) coefficients, as in sklearn's Ridge; the
    intercept is not penalised. info: alpha, alphas, cv_mse (mean over folds per alpha),
    cv_mse_std, at_grid_edge (the best alpha is the first or last of the grid, so the
    grid may be too narrow).
    """
    r, w = check_pairs(r, w, min_rows=max(2, cv_folds), why=f"ridge cross-validation with cv_folds={cv_folds}")
    alphas = np.asarray(sorted(float(a) for a in alphas), dtype=np.float64)
    if len(alphas) == 0 or not np.all(alphas > 0):
        raise UserError(f"ridge_alphas must be a non-empty list of positive numbers, got {alphas.tolist()}")
    if cv_folds < 2:
        raise UserError(f"cv_folds must be at least 2, got {cv_folds}")
    folds = KFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(r)
    scores = np.stack([_RidgePath(r[tr], w[tr]).val_mse(r[va], w[va], alphas) for tr, va in folds])
    cv_mse = scores.mean(0)
    best = int(np.argmin(cv_mse))  # ties go to the smaller alpha
    path = _RidgePath(r, w)
    coef = path.coef(alphas[best])
    link = LinearLink.from_numpy(coef.T, path.w_mean - path.r_mean @ coef, kind="ridge")
    info = {
        "alpha": float(alphas[best]),
        "alphas": alphas.tolist(),
        "cv_mse": cv_mse.tolist(),
        "cv_mse_std": scores.std(0).tolist(),
        "cv_folds": int(cv_folds),
        "at_grid_edge": bool(len(alphas) > 1 and best in (0, len(alphas) - 1)),
    }
    return link, info
