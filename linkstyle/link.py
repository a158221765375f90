"""The linking network: a regression from classifier features r to generator latents w.

Linear links (OLS, ridge) are fitted in closed form in float64 and stored as float32
buffers; the MLP link is trained with Adam. Every link is an `nn.Module` mapping a
batch of r [n, r_dim] to w [n, w_dim], saved as plain tensors plus a config (never a
pickled estimator), so `load_link` can rebuild it with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import check
from .errors import UserError

LINK_KINDS = ("ols", "ridge", "mlp")


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    kinds: tuple[str, ...] = LINK_KINDS
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 4, 13))
    cv_folds: int = 5
    mlp_hidden: int = 512
    mlp_epochs: int = 100
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-4
    mlp_batch_size: int = 256
    mlp_val_fraction: float = 0.1
    mlp_patience: int = 20
    mlp_residual: bool = True
    seed: int = 0
    primary: str = "ridge"  # the link used downstream (tuning, editing)

    def __post_init__(self) -> None:
        valid = ", ".join(LINK_KINDS)
        check(len(self.kinds) > 0, "kinds", f"must list at least one link kind ({valid})")
        for k in self.kinds:
            check(k in LINK_KINDS, "kinds", f"has unknown kind '{k}'; valid kinds are {valid}")
        check(len(set(self.kinds)) == len(self.kinds), "kinds", "lists a kind twice; list each once")
        check(self.primary in self.kinds, "primary",
              f"'{self.primary}' is not among kinds ({', '.join(self.kinds)}); add it to kinds or pick one of them")
        check(len(self.ridge_alphas) > 0, "ridge_alphas", "must list at least one penalty")
        check(all(math.isfinite(a) and a > 0 for a in self.ridge_alphas), "ridge_alphas",
              f"must all be positive finite numbers, got {list(self.ridge_alphas)}")
        check(self.cv_folds >= 2, "cv_folds", f"must be at least 2, got {self.cv_folds}")
        check(self.mlp_hidden >= 1, "mlp_hidden", f"must be a positive integer, got {self.mlp_hidden}")
        check(self.mlp_epochs >= 1, "mlp_epochs", f"must be a positive integer, got {self.mlp_epochs}")
        check(self.mlp_lr > 0, "mlp_lr", f"must be positive, got {self.mlp_lr}")
        check(self.mlp_weight_decay >= 0, "mlp_weight_decay", f"must be zero or positive, got {self.mlp_weight_decay}")
        check(self.mlp_batch_size >= 1, "mlp_batch_size", f"must be a positive integer, got {self.mlp_batch_size}")
        check(0 < self.mlp_val_fraction < 1, "mlp_val_fraction", f"must be between 0 and 1, got {self.mlp_val_fraction}")
        check(self.mlp_patience >= 1, "mlp_patience", f"must be a positive integer, got {self.mlp_patience}")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")


# ---------------------------------------------------------------------------- modules

class LinearLink(nn.Module):
    """w = r @ weight.T + bias, with weight [w_dim, r_dim] held as buffers (nothing to train)."""

    def __init__(self, r_dim: int, w_dim: int) -> None:
        super().__init__()
        self.r_dim, self.w_dim = int(r_dim), int(w_dim)
        self.register_buffer("weight", torch.zeros(self.w_dim, self.r_dim))
        self.register_buffer("bias", torch.zeros(self.w_dim))

    @classmethod
    def from_numpy(cls, weight: np.ndarray, bias: np.ndarray) -> LinearLink:
        link = cls(weight.shape[1], weight.shape[0])
        link.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        link.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        return link

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.to(self.weight.dtype)
        return r @ self.weight.T + self.bias


class MLPLink(nn.Module):
    """Standardise r, one hidden ReLU layer plus an optional linear skip, unstandardise w.

    The standardisation lives in buffers so a saved link carries its own preprocessing.
    """

    def __init__(self, r_dim: int, w_dim: int, hidden: int, residual: bool = True) -> None:
        super().__init__()
        self.r_dim, self.w_dim, self.hidden, self.residual = int(r_dim), int(w_dim), int(hidden), bool(residual)
        self.register_buffer("r_mean", torch.zeros(self.r_dim))
        self.register_buffer("r_std", torch.ones(self.r_dim))
        self.register_buffer("w_mean", torch.zeros(self.w_dim))
        self.register_buffer("w_std", torch.ones(self.w_dim))
        self.fc1 = nn.Linear(self.r_dim, self.hidden)
        self.fc2 = nn.Linear(self.hidden, self.w_dim)
        self.skip = nn.Linear(self.r_dim, self.w_dim, bias=False) if self.residual else None

    def core(self, z: torch.Tensor) -> torch.Tensor:
        """The trainable part, from standardised r to standardised w."""
        out = self.fc2(torch.relu(self.fc1(z)))
        return out + self.skip(z) if self.skip is not None else out

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        z = (r.to(self.r_mean.dtype) - self.r_mean) / self.r_std
        return self.core(z) * self.w_std + self.w_mean


def link_device(module: nn.Module) -> torch.device:
    """Where a link lives: every link holds buffers (linear links hold nothing else)."""
    return next(iter(module.buffers())).device


@torch.no_grad()
def predict_w(module: nn.Module, r: Any, batch_size: int = 8192) -> np.ndarray:
    """Apply a link to r (array or tensor) in batches on the module's device; float64 numpy out."""
    module.eval()
    device = link_device(module)
    r = torch.as_tensor(np.asarray(r) if not isinstance(r, torch.Tensor) else r)
    outs = [module(r[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(r), batch_size)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, getattr(module, "w_dim", 0)))


# ---------------------------------------------------------------------------- inputs

def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_pairs(r: Any, w: Any, min_rows: int = 2, why: str = "fitting a link") -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 [n, dim] arrays; one-line errors for shapes, NaNs and too few pairs."""
    r, w = _as_array(r), _as_array(w)
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


def fit_ols(r: Any, w: Any) -> LinearLink:
    """Least squares with intercept (minimum-norm where r is rank deficient)."""
    r, w = _check_pairs(r, w, why="ordinary least squares")
    weight, bias, _ = _ols(r, w)
    return LinearLink.from_numpy(weight, bias)


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


def fit_ridge(r: Any, w: Any, alphas: tuple[float, ...] = LinkConfig.ridge_alphas, cv_folds: int = 5,
              seed: int = 0) -> tuple[LinearLink, dict]:
    """Ridge regression with the penalty chosen by K-fold CV on held-out MSE.

    The penalty is on the raw (unstandardised) coefficients, as in sklearn's Ridge; the
    intercept is not penalised. info: alpha, alphas, cv_mse (mean over folds per alpha),
    cv_mse_std, at_grid_edge (the best alpha is the first or last of the grid, so the
    grid may be too narrow).
    """
    r, w = _check_pairs(r, w, min_rows=max(2, cv_folds), why=f"ridge cross-validation with cv_folds={cv_folds}")
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
    link = LinearLink.from_numpy(coef.T, path.w_mean - path.r_mean @ coef)
    info = {
        "alpha": float(alphas[best]),
        "alphas": alphas.tolist(),
        "cv_mse": cv_mse.tolist(),
        "cv_mse_std": scores.std(0).tolist(),
        "cv_folds": int(cv_folds),
        "at_grid_edge": bool(len(alphas) > 1 and best in (0, len(alphas) - 1)),
    }
    return link, info


# ---------------------------------------------------------------------------- MLP fit

def _init_mlp(module: MLPLink, z: np.ndarray, y: np.ndarray, g: torch.Generator) -> None:
    """Deterministic init from `g`; the skip starts at a lightly ridged linear fit and fc2
    at zero, so training starts from the linear solution and only learns what it misses."""
    with torch.no_grad():
        bound = math.sqrt(6.0 / module.r_dim)  # He-uniform, for the ReLU layer
        module.fc1.weight.uniform_(-bound, bound, generator=g)
        module.fc1.bias.zero_()
        module.fc2.weight.zero_()
        module.fc2.bias.zero_()
        if module.skip is not None:
            lam = 1e-3 * len(z)  # z is standardised, so diag(z^T z) ~ n
            coef = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ y)
            module.skip.weight.copy_(torch.from_numpy(coef.T.astype(np.float32)))


def fit_mlp(r: Any, w: Any, cfg: LinkConfig, device: str | torch.device = "cpu",
            progress: bool = True) -> tuple[MLPLink, dict]:
    """Train an MLP link with Adam; keep the epoch with the lowest MSE on a held-out split.

    Deterministic for a given cfg.seed: one torch.Generator drives the split, the init and
    the shuffling. info: best_epoch (0 = the untrained linear init), best_val_mse,
    val_mse and train_mse per epoch (in w units), epochs_run, n_fit, n_val.
    """
    r, w = _check_pairs(r, w, min_rows=2, why="training the MLP link")
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(r)
    n_val = min(n - 1, max(1, round(cfg.mlp_val_fraction * n)))
    perm = torch.randperm(n, generator=g).numpy()
    fit_idx, val_idx = perm[n_val:], perm[:n_val]

    r_mean, r_std = r[fit_idx].mean(0), r[fit_idx].std(0)
    r_std = np.where(r_std > 1e-8, r_std, 1.0)  # dead units would divide by zero
    w_mean = w[fit_idx].mean(0)
    # One pooled scale for all of w, so the loss weights dims exactly as the reported MSE does.
    w_scale = float(np.sqrt(((w[fit_idx] - w_mean) ** 2).mean())) or 1.0
    z = (r - r_mean) / r_std
    y = (w - w_mean) / w_scale

    module = MLPLink(r.shape[1], w.shape[1], cfg.mlp_hidden, cfg.mlp_residual)
    module.r_mean.copy_(torch.from_numpy(r_mean.astype(np.float32)))
    module.r_std.copy_(torch.from_numpy(r_std.astype(np.float32)))
    module.w_mean.copy_(torch.from_numpy(w_mean.astype(np.float32)))
    module.w_std.fill_(w_scale)
    _init_mlp(module, z[fit_idx], y[fit_idx], g)
    module.to(device)

    zt = torch.from_numpy(z.astype(np.float32)).to(device)
    yt = torch.from_numpy(y.astype(np.float32)).to(device)
    z_fit, y_fit, z_val, y_val = zt[fit_idx], yt[fit_idx], zt[val_idx], yt[val_idx]
    opt = torch.optim.Adam(module.parameters(), lr=cfg.mlp_lr, weight_decay=cfg.mlp_weight_decay)
    to_w_units = w_scale ** 2

    def val_loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(torch.mean((module.core(z_val) - y_val) ** 2)) * to_w_units

    best_val, best_epoch = val_loss(), 0
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    val_curve, train_curve = [best_val], []
    bar = tqdm(range(1, cfg.mlp_epochs + 1), desc="fit mlp link", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        module.train()
        order = torch.randperm(len(fit_idx), generator=g).to(device)
        total = 0.0
        for i in range(0, len(order), cfg.mlp_batch_size):
            idx = order[i:i + cfg.mlp_batch_size]
            loss = torch.mean((module.core(z_fit[idx]) - y_fit[idx]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        train_curve.append(total / len(order) * to_w_units)
        val_curve.append(val_loss())
        if val_curve[-1] < best_val:
            best_val, best_epoch = val_curve[-1], epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        bar.set_postfix(val_mse=f"{val_curve[-1]:.4g}", best=best_epoch)
        if epoch - best_epoch >= cfg.mlp_patience:
            break
    bar.close()
    module.load_state_dict(best_state)
    module.eval()
    info = {
        "best_epoch": best_epoch,
        "best_val_mse": best_val,
        "epochs_run": len(train_curve),
        "val_mse": val_curve,
        "train_mse": train_curve,
        "n_fit": int(len(fit_idx)),
        "n_val": int(n_val),
    }
    return module, info


# ---------------------------------------------------------------------------- all kinds

def fit_links(r_train: Any, w_train: Any, cfg: LinkConfig, device: str | torch.device = "cpu",
              progress: bool = True) -> dict[str, tuple[nn.Module, dict]]:
    """Fit every kind in cfg.kinds on the same pairs; info gains train mse and r2."""
    r, w = _check_pairs(r_train, w_train, min_rows=max(2, cfg.cv_folds),
                        why=f"fitting links with cv_folds={cfg.cv_folds}")
    out: dict[str, tuple[nn.Module, dict]] = {}
    for kind in cfg.kinds:
        if kind == "ols":
            weight, bias, rank = _ols(r, w)
            module, info = LinearLink.from_numpy(weight, bias), {"rank": rank}
        elif kind == "ridge":
            module, info = fit_ridge(r, w, cfg.ridge_alphas, cfg.cv_folds, cfg.seed)
        else:
            module, info = fit_mlp(r, w, cfg, device=device, progress=progress)
        module = module.to(device).eval()
        train = link_metrics(w, predict_w(module, r))
        info = {"kind": kind, **info, "train_mse": train["mse"], "train_r2": train["r2"]}
        out[kind] = (module, info)
    return out


def link_metrics(w_true: Any, w_pred: Any) -> dict:
    """mse; r2 pooled over dims (1 - SSE/SST, each dim around its own mean); per-dim r2 and their mean.

    A constant dim scores 1 when predicted exactly and 0 otherwise (as sklearn does),
    so the numbers stay finite.
    """
    t, p = _as_array(w_true), _as_array(w_pred)
    if t.shape != p.shape or t.ndim != 2 or len(t) == 0:
        raise UserError(f"w_true and w_pred must be non-empty [pairs, dims] arrays of one shape, "
                        f"got {tuple(t.shape)} and {tuple(p.shape)}")
    sse = ((t - p) ** 2).sum(0)
    sst = ((t - t.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_dim = np.where(sst > 0, 1.0 - sse / sst, np.where(sse > 0, 0.0, 1.0))
    total_sst = float(sst.sum())
    r2 = 1.0 - float(sse.sum()) / total_sst if total_sst > 0 else (1.0 if float(sse.sum()) == 0 else 0.0)
    return {
        "mse": float(sse.sum() / t.size),
        "r2": float(r2),
        "r2_mean_over_dims": float(per_dim.mean()),
        "r2_per_dim": [float(v) for v in per_dim],
    }


# ---------------------------------------------------------------------------- persistence

def _plain(value: Any) -> Any:
    """Info as built-in types only, which torch.load(weights_only=True) accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_link(path: str | os.PathLike, module: nn.Module, kind: str, info: dict | None = None) -> None:
    """Write a link as tensors plus the config that rebuilds it."""
    expected = MLPLink if kind == "mlp" else LinearLink
    if kind not in LINK_KINDS or not isinstance(module, expected):
        raise ValueError(f"save_link: kind '{kind}' does not fit a {type(module).__name__}")
    config = {"link_kind": kind, "r_dim": module.r_dim, "w_dim": module.w_dim}
    if isinstance(module, MLPLink):
        config.update(hidden=module.hidden, residual=module.residual)
    save_checkpoint(path, "link", config, module.state_dict(), info=_plain(info or {}))


def _read(path: str | os.PathLike) -> dict:
    payload = load_checkpoint(path, "link")
    cfg = payload["config"]
    need = {"link_kind", "r_dim", "w_dim"} | ({"hidden", "residual"} if cfg.get("link_kind") == "mlp" else set())
    if cfg.get("link_kind") not in LINK_KINDS or not need <= set(cfg):
        raise UserError(f"{path}: link checkpoint has a bad config {cfg}; refit the link (dvc repro fit_link)")
    return payload


def read_link_info(path: str | os.PathLike) -> dict:
    """The link kind, dims and fitting info stored with a link (for reports)."""
    payload = _read(path)
    return {**payload["config"], "info": payload.get("info", {})}


def load_link(path: str | os.PathLike, r_dim: int | None = None, w_dim: int | None = None,
              device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved link in eval mode on `device`, checking its dims against the caller's."""
    payload = _read(path)
    cfg = payload["config"]
    if r_dim is not None and int(r_dim) != cfg["r_dim"]:
        raise UserError(f"{path}: link maps r of {cfg['r_dim']} units to w of {cfg['w_dim']} dims, but the "
                        f"classifier has {r_dim} units; refit the link (dvc repro fit_link)")
    if w_dim is not None and int(w_dim) != cfg["w_dim"]:
        raise UserError(f"{path}: link maps r of {cfg['r_dim']} units to w of {cfg['w_dim']} dims, but the "
                        f"generator's w has {w_dim} dims; refit the link (dvc repro fit_link)")
    if cfg["link_kind"] == "mlp":
        module: nn.Module = MLPLink(cfg["r_dim"], cfg["w_dim"], cfg["hidden"], cfg["residual"])
    else:
        module = LinearLink(cfg["r_dim"], cfg["w_dim"])
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise UserError(f"{path}: link weights do not match its config ({first}); refit the link (dvc repro fit_link)") from None
    return module.float().to(device).eval()
