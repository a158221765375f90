"""The MLP link r -> w: one hidden ReLU layer on top of a linear skip, trained with Adam."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from linkstyle.core.config import check
from linkstyle.link.linear import check_pairs


@dataclass(frozen=True)
class MLPConfig:
    """params.yaml `fit_link.mlp`."""

    hidden: int = 512
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    val_fraction: float = 0.1
    patience: int = 20
    residual: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "hidden", f"must be a positive integer, got {self.hidden}")
        check(self.epochs >= 1, "epochs", f"must be a positive integer, got {self.epochs}")
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {self.weight_decay}")
        check(self.batch_size >= 1, "batch_size", f"must be a positive integer, got {self.batch_size}")
        check(0 < self.val_fraction < 1, "val_fraction", f"must be between 0 and 1, got {self.val_fraction}")
        check(self.patience >= 1, "patience", f"must be a positive integer, got {self.patience}")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")


class MLPLink(nn.Module):
    """Standardise r, one hidden ReLU layer plus an optional linear skip, unstandardise w.

    The standardisation lives in buffers so a saved link carries its own preprocessing.
    """

    arch = "mlp"

    def __init__(self, r_dim: int, w_dim: int, hidden: int, residual: bool = True, kind: str = "mlp") -> None:
        super().__init__()
        self.kind = kind
        self.r_dim, self.w_dim, self.hidden, self.residual = int(r_dim), int(w_dim), int(hidden), bool(residual)
        self.register_buffer("r_mean", torch.zeros(self.r_dim))
        self.register_buffer("r_std", torch.ones(self.r_dim))
        self.register_buffer("w_mean", torch.zeros(self.w_dim))
        self.register_buffer("w_std", torch.ones(self.w_dim))
        self.fc1 = nn.Linear(self.r_dim, self.hidden)
        self.fc2 = nn.Linear(self.hidden, self.w_dim)
        self.skip = nn.Linear(self.r_dim, self.w_dim, bias=False) if self.residual else None

    def config(self) -> dict:
        return {"arch": self.arch, "kind": self.kind, "r_dim": self.r_dim, "w_dim": self.w_dim,
                "hidden": self.hidden, "residual": self.residual}

    @classmethod
    def from_config(cls, d: dict) -> "MLPLink":
        return cls(d["r_dim"], d["w_dim"], d["hidden"], d["residual"], d["kind"])

    def core(self, z: torch.Tensor) -> torch.Tensor:
        """The trainable part, from standardised r to standardised w."""
        out = self.fc2(torch.relu(self.fc1(z)))
        return out + self.skip(z) if self.skip is not None else out

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        z = (r.to(self.r_mean.dtype) - self.r_mean) / self.r_std
        return self.core(z) * self.w_std + self.w_mean


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


def fit_mlp(r: Any, w: Any, cfg: MLPConfig, device: str | torch.device = "cpu",
            progress: bool = True) -> tuple[MLPLink, dict]:
    """`_fit_mlp` with one CPU thread and deterministic kernels, restored afterwards.

    The reduction order of a multi-threaded matmul depends on the thread count, so the
    same seed gave different weights on machines with different core counts; one thread
    (about as fast here: the matrices are small) removes that. Kernels that differ by
    instruction set (AVX2 vs AVX-512) can still differ in the last bits across CPUs.
    """
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _fit_mlp(r, w, cfg, device, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _fit_mlp(r: Any, w: Any, cfg: MLPConfig, device: str | torch.device = "cpu",
             progress: bool = True) -> tuple[MLPLink, dict]:
    """Train an MLP link with Adam; keep the epoch with the lowest MSE on a held-out split.

    Deterministic for a given cfg.seed: one torch.Generator drives the split, the init and
    the shuffling. info: best_epoch (0 = the untrained linear init), best_val_mse,
    val_mse and train_mse per epoch (in w units), epochs_run, n_fit, n_val.
    """
    r, w = check_pairs(r, w, min_rows=2, why="training the MLP link")
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(r)
    n_val = min(n - 1, max(1, round(cfg.val_fraction * n)))
    perm = torch.randperm(n, generator=g).numpy()
    fit_idx, val_idx = perm[n_val:], perm[:n_val]

    r_mean, r_std = r[fit_idx].mean(0), r[fit_idx].std(0)
    r_std = np.where(r_std > 1e-8, r_std, 1.0)  # dead units would divide by zero
    w_mean = w[fit_idx].mean(0)
    # One pooled scale for all of w, so the loss weights dims exactly as the reported MSE does.
    w_scale = float(np.sqrt(((w[fit_idx] - w_mean) ** 2).mean())) or 1.0
    z = (r - r_mean) / r_std
    y = (w - w_mean) / w_scale

    module = MLPLink(r.shape[1], w.shape[1], cfg.hidden, cfg.residual)
    module.r_mean.copy_(torch.from_numpy(r_mean.astype(np.float32)))
    module.r_std.copy_(torch.from_numpy(r_std.astype(np.float32)))
    module.w_mean.copy_(torch.from_numpy(w_mean.astype(np.float32)))
    module.w_std.fill_(w_scale)
    _init_mlp(module, z[fit_idx], y[fit_idx], g)
    module.to(device)

    zt = torch.from_numpy(z.astype(np.float32)).to(device)
    yt = torch.from_numpy(y.astype(np.float32)).to(device)
    z_fit, y_fit, z_val, y_val = zt[fit_idx], yt[fit_idx], zt[val_idx], yt[val_idx]
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    to_w_units = w_scale ** 2

    def val_loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(torch.mean((module.core(z_val) - y_val) ** 2)) * to_w_units

    best_val, best_epoch = val_loss(), 0
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    val_curve, train_curve = [best_val], []
    bar = tqdm(range(1, cfg.epochs + 1), desc="fit mlp link", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        module.train()
        order = torch.randperm(len(fit_idx), generator=g).to(device)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
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
        if epoch - best_epoch >= cfg.patience:
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
