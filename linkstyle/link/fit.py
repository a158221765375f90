"""The linking network: a regression from classifier features r to generator latents w.

Link kinds live in one registry, `LINK_KINDS`: each names its options (a params.yaml
section `fit_link.<kind>`), its fitting function and its module. Linear links (OLS,
ridge) are fitted in closed form in float64 and stored as float32 buffers; the MLP link
is trained with Adam. Every link is an `nn.Module` mapping a batch of r [n, r_dim] to w
[n, w_dim]; `linkstyle.link.store` saves and rebuilds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from linkstyle.core.errors import UserError
from linkstyle.core.runtime import module_device
from linkstyle.link.linear import (
    LinearLink,
    OLSConfig,
    RidgeConfig,
    as_array,
    check_pairs,
    fit_ols,
    fit_ridge,
)
from linkstyle.link.mlp import MLPConfig, MLPLink, fit_mlp


@dataclass(frozen=True)
class LinkKind:
    config: type  # the frozen dataclass of its params section
    module: type  # the nn.Module it fits
    fit: Callable  # (r, w, cfg, device, progress) -> (module, info)


def _fit_ols(r, w, cfg: OLSConfig, device, progress):
    return fit_ols(r, w)


def _fit_ridge(r, w, cfg: RidgeConfig, device, progress):
    return fit_ridge(r, w, cfg.alphas, cfg.cv_folds, cfg.seed)


LINK_KINDS: dict[str, LinkKind] = {
    "ols": LinkKind(OLSConfig, LinearLink, _fit_ols),
    "ridge": LinkKind(RidgeConfig, LinearLink, _fit_ridge),
    "mlp": LinkKind(MLPConfig, MLPLink, fit_mlp),
}


def check_kind(kind: str, where: str) -> str:
    """`kind` if the registry knows it, else a one-line error naming `where` (a param)."""
    if kind not in LINK_KINDS:
        raise UserError(f"{where}: unknown link kind {kind!r}; known kinds are {', '.join(LINK_KINDS)}")
    return kind


@torch.no_grad()
def predict_w(module: nn.Module, r: Any, batch_size: int = 8192) -> np.ndarray:
    """Apply a link to r (array or tensor) in batches on the module's device; float64 numpy out."""
    module.eval()
    device = module_device(module)
    r = torch.as_tensor(np.asarray(r) if not isinstance(r, torch.Tensor) else r)
    outs = [module(r[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(r), batch_size)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, getattr(module, "w_dim", 0)))


def fit_link(kind: str, r_train: Any, w_train: Any, cfg: Any, device: str | torch.device = "cpu",
             progress: bool = True) -> tuple[nn.Module, dict]:
    """Fit one link kind on the training pairs; info gains the kind, train mse and r2."""
    spec = LINK_KINDS[check_kind(kind, "kind")]
    min_rows = max(2, getattr(cfg, "cv_folds", 2))
    r, w = check_pairs(r_train, w_train, min_rows=min_rows, why=f"fitting the {kind} link")
    module, info = spec.fit(r, w, cfg, device, progress)
    module = module.to(device).eval()
    train = link_metrics(w, predict_w(module, r))
    return module, {"kind": kind, **info, "train_mse": train["mse"], "train_r2": train["r2"]}


def link_metrics(w_true: Any, w_pred: Any) -> dict:
    """mse; r2 pooled over dims (1 - SSE/SST, each dim around its own mean); per-dim r2 and their mean.

    A constant dim scores 1 when predicted exactly and 0 otherwise (as sklearn does),
    so the numbers stay finite.
    """
    t, p = as_array(w_true), as_array(w_pred)
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
