"""The INN link: a conditional invertible network v = INN(w; r), v ~ N(0, I) (docs/method.md section 10).

The linear and MLP links give one w per r, but R is invariant to part of what W encodes
(the ridge link's held-out R^2 is 0.87). Following Rombach, Esser and Ommer ("Making Sense
of CNNs: Interpreting Deep Representations and Their Invariances with INNs"), a
conditional normalising flow models the whole conditional density p(w | r): sampling v
for a fixed r draws the w, and so the images, that the classifier cannot tell apart.
Their latent is an autoencoder's; ours is the generator's W, so nothing else is trained.

The map from w to v, in order (each step invertible in w for a fixed r):
1. subtract a mean link m(r) (`mean`: an MLP link, a ridge link, or none), fitted first by
   least squares on the fitting split and then frozen; a translation has log det 0;
2. standardise the residual per dim (buffers), then a lower-triangular linear map
   initialised at the inverse Cholesky factor of the residuals' covariance (no mean: skipped);
   so far this is the Gaussian model w | r ~ N(m(r), S), exactly, at init;
3. `n_blocks` blocks of ActNorm -> double affine coupling -> a fixed permutation, as the
   reference's flow. A double coupling updates the second half of x from the first half
   and the embedding c of r, then the first half from the new second half:
   x_b <- x_b * exp(s(x_a, c)) + t(x_a, c), with s and t separate LeakyReLU MLPs, tanh on
   s. Their last layers start at zero, so every block starts as the identity. c is a small
   MLP of the standardised r, computed once per batch.
Steps 2-3 train by the negative log-likelihood 0.5 |v|^2 - log det with Adam; the
generator and classifier are untouched (the pairs already hold w and r).

Why step 1 (not in the reference): trained by likelihood alone, the couplings overfit the
condition long before they learn the non-linear part of the mean, and the INN's held-out
NLL and mean stayed no better than a linear link plus Gaussian noise (docs/method.md section 10, D27).

The module is also a link: `forward(r)` is w at v = 0, so `linkstyle.link.fit.predict_w`
and `link_metrics` score it like the others. `sample(r, v)` maps noise to w; `encode(w, r)`
gives v and the log-determinant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from linkstyle.core.checkpoint import load_module, save_module
from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.core.io import plain
from linkstyle.link.linear import LinearLink, check_pairs, fit_ridge
from linkstyle.link.mlp import MLPConfig, MLPLink, fit_mlp

LOG_2PI = math.log(2.0 * math.pi)
MEANS = ("mlp", "ridge", "none")
MEAN_LINKS: dict[str, type] = {MLPLink.arch: MLPLink, LinearLink.arch: LinearLink}


@dataclass(frozen=True)
class INNConfig:
    """params.yaml `fit_inn`."""

    mean: str = "mlp"  # the mean link subtracted first: mlp, ridge or none (the reference: none)
    mean_hidden: int = 512  # mean: mlp: its hidden width (fit_link.mlp's default)
    mean_epochs: int = 100  # mean: mlp: its epochs (fit_link.mlp's default)
    n_blocks: int = 4  # ActNorm + double coupling + permutation (the reference: 20)
    hidden: int = 128  # width of the s and t MLPs (the reference: 1024)
    depth: int = 1  # hidden-to-hidden layers in each s and t MLP
    embed_dim: int = 64  # the condition's embedding
    embed_hidden: int = 256
    epochs: int = 60
    lr: float = 3e-4
    weight_decay: float = 1e-4  # Adam L2, as the MLP link
    batch_size: int = 256
    val_fraction: float = 0.1
    patience: int = 10  # stop after this many epochs without a better validation NLL
    clip_grad: float = 10.0  # gradient-norm clip: one outlier batch must not blow up the scales
    mean_samples: int = 16  # samples per test r for the Monte Carlo conditional mean (reported as a link)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.mean in MEANS, "mean", f"must be one of {', '.join(MEANS)}, got {self.mean!r}")
        for key in ("mean_hidden", "mean_epochs", "n_blocks", "hidden", "embed_dim", "embed_hidden", "epochs",
                    "batch_size", "patience", "mean_samples"):
            value = getattr(self, key)
            check(value >= 1, key, f"must be a positive integer, got {value}")
        check(self.depth >= 0, "depth", f"must be zero or a positive integer, got {self.depth}")
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {self.weight_decay}")
        check(0 < self.val_fraction < 1, "val_fraction", f"must be between 0 and 1, got {self.val_fraction}")
        check(self.clip_grad > 0, "clip_grad", f"must be positive, got {self.clip_grad}")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")


# ---------------------------------------------------------------------------- building blocks

def _mlp(d_in: int, hidden: int, depth: int, d_out: int, tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.LeakyReLU()]
    for _ in range(depth):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU()]
    layers.append(nn.Linear(hidden, d_out))
    if tanh:  # bounded log-scales, exp(s) in (1/e, e) per coupling, as the reference's s nets
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActNorm(nn.Module):
    """y = (x + loc) * exp(log_scale) per dim; initialised from data so y starts standardised."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        self.loc.copy_(-x.mean(0))
        self.log_scale.copy_(-torch.log(x.std(0) + 1e-6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x + self.loc) * self.log_scale.exp(), self.log_scale.sum().expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.log_scale).exp() - self.loc


class TriangularLinear(nn.Module):
    """y = x L^T with L lower-triangular with a positive diagonal exp(log_diag): an invertible
    linear map (log det = sum(log_diag)) that whitens correlated dims in one step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))

    def matrix(self) -> torch.Tensor:
        return torch.tril(self.lower, -1) + torch.diag(self.log_diag.exp())

    @torch.no_grad()
    def set_matrix(self, m: torch.Tensor) -> None:
        self.lower.copy_(torch.tril(m, -1))
        self.log_diag.copy_(torch.diagonal(m).log())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.matrix().T, self.log_diag.sum().expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(self.matrix(), y.T, upper=False).T


class DoubleCoupling(nn.Module):
    """Two conditional affine couplings: first half -> second half, then second -> first."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.d1 = dim // 2
        d2 = dim - self.d1
        self.s = nn.ModuleList([_mlp(self.d1 + cond_dim, hidden, depth, d2, True),
                                _mlp(d2 + cond_dim, hidden, depth, self.d1, True)])
        self.t = nn.ModuleList([_mlp(self.d1 + cond_dim, hidden, depth, d2, False),
                                _mlp(d2 + cond_dim, hidden, depth, self.d1, False)])

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, :self.d1], x[:, self.d1:]
        h = torch.cat([a, c], 1)
        s0 = self.s[0](h)
        b = b * s0.exp() + self.t[0](h)
        h = torch.cat([b, c], 1)
        s1 = self.s[1](h)
        a = a * s1.exp() + self.t[1](h)
        return torch.cat([a, b], 1), s0.sum(1) + s1.sum(1)

    def inverse(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a, b = y[:, :self.d1], y[:, self.d1:]
        h = torch.cat([b, c], 1)
        a = (a - self.t[1](h)) * (-self.s[1](h)).exp()
        h = torch.cat([a, c], 1)
        b = (b - self.t[0](h)) * (-self.s[0](h)).exp()
        return torch.cat([a, b], 1)


# ---------------------------------------------------------------------------- the network

class ConditionalINN(nn.Module):
    """v = INN(w; r). Buffers: r_mean, r_std (the condition's standardisation), res_mean,
    res_std (the residual's) and perms [n_blocks, w_dim] (fixed permutations drawn at fit
    time). `mean_link` (an MLP or linear link, or None) is frozen after its fit."""

    arch = "inn"

    def __init__(self, r_dim: int, w_dim: int, n_blocks: int = 4, hidden: int = 128, depth: int = 1,
                 embed_dim: int = 64, embed_hidden: int = 256, mean_link: nn.Module | None = None) -> None:
        super().__init__()
        if int(w_dim) < 2:
            raise UserError(f"models.generator: w has {w_dim} dim, but a coupling INN splits w into two halves; "
                            "use a generator with w_dim >= 2")
        self.kind = "inn"
        self.r_dim, self.w_dim = int(r_dim), int(w_dim)
        self.n_blocks, self.hidden, self.depth = int(n_blocks), int(hidden), int(depth)
        self.embed_dim, self.embed_hidden = int(embed_dim), int(embed_hidden)
        self.register_buffer("r_mean", torch.zeros(self.r_dim))
        self.register_buffer("r_std", torch.ones(self.r_dim))
        self.register_buffer("res_mean", torch.zeros(self.w_dim))
        self.register_buffer("res_std", torch.ones(self.w_dim))
        self.register_buffer("perms", torch.arange(self.w_dim).repeat(self.n_blocks, 1))
        self.mean_link = mean_link
        if mean_link is not None:
            mean_link.requires_grad_(False)
        self.whiten = TriangularLinear(self.w_dim) if mean_link is not None else None
        self.embed = nn.Sequential(nn.Linear(self.r_dim, self.embed_hidden), nn.LeakyReLU(),
                                   nn.Linear(self.embed_hidden, self.embed_dim))
        self.norms = nn.ModuleList([ActNorm(self.w_dim) for _ in range(self.n_blocks)])
        self.couplings = nn.ModuleList([DoubleCoupling(self.w_dim, self.embed_dim, self.hidden, self.depth)
                                        for _ in range(self.n_blocks)])

    def config(self) -> dict:
        return {"arch": self.arch, "kind": self.kind, "r_dim": self.r_dim, "w_dim": self.w_dim,
                "n_blocks": self.n_blocks, "hidden": self.hidden, "depth": self.depth,
                "embed_dim": self.embed_dim, "embed_hidden": self.embed_hidden,
                "mean_link": self.mean_link.config() if self.mean_link is not None else None}

    @classmethod
    def from_config(cls, d: dict) -> ConditionalINN:
        m = d["mean_link"]
        mean_link = MEAN_LINKS[m["arch"]].from_config(m) if m is not None else None
        return cls(d["r_dim"], d["w_dim"], d["n_blocks"], d["hidden"], d["depth"], d["embed_dim"], d["embed_hidden"],
                   mean_link)

    # -- the flow on the standardised residual x ------------------------------------------
    def condition(self, r: torch.Tensor) -> torch.Tensor:
        return self.embed((r - self.r_mean) / self.r_std)

    def _mean(self, r: torch.Tensor) -> torch.Tensor:
        return self.mean_link(r) if self.mean_link is not None else torch.zeros(len(r), self.w_dim, device=r.device)

    def _forward_x(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        if self.whiten is not None:
            x, logdet = self.whiten(x)
        for norm, coupling, perm in zip(self.norms, self.couplings, self.perms):
            x, ld = norm(x)
            logdet = logdet + ld
            x, ld = coupling(x, c)
            logdet = logdet + ld
            x = x[:, perm]
        return x, logdet

    def _inverse_x(self, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = v
        for norm, coupling, perm in zip(reversed(self.norms), reversed(self.couplings), reversed(self.perms)):
            x = torch.empty_like(x).index_copy_(1, perm, x)  # undo x[:, perm]
            x = coupling.inverse(x, c)
            x = norm.inverse(x)
        return self.whiten.inverse(x) if self.whiten is not None else x

    # -- in w units ----------------------------------------------------------------------
    def encode(self, w: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, log|det dv/dw|) per row; the log det includes the residual's standardisation."""
        r, w = r.to(self.r_mean.dtype), w.to(self.r_mean.dtype)
        x = (w - self._mean(r) - self.res_mean) / self.res_std
        v, logdet = self._forward_x(x, self.condition(r))
        return v, logdet - self.res_std.log().sum()

    def decode(self, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """w = INN^-1(v; r)."""
        r = r.to(self.r_mean.dtype)
        x = self._inverse_x(v.to(self.r_mean.dtype), self.condition(r))
        return x * self.res_std + self.res_mean + self._mean(r)

    def nll(self, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """-log p(w | r) per row, in nats (w units)."""
        v, logdet = self.encode(w, r)
        return 0.5 * (v * v).sum(1) + 0.5 * self.w_dim * LOG_2PI - logdet

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """The INN as a link: w at v = 0."""
        return self.decode(torch.zeros(len(r), self.w_dim, device=r.device), r)

    def sample(self, r: torch.Tensor, v: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """w for noise v ~ N(0, I) given r (rows paired), the noise scaled by `temperature`."""
        return self.decode(v * temperature, r)


# ---------------------------------------------------------------------------- noise, sampling, scores

def draw_v(keys: Any, w_dim: int) -> np.ndarray:
    """float32 [N, w_dim] standard normal noise, row i from `RandomState(keys[i])`.

    keys: [N, m] integers in [0, 2**32), e.g. (sample seed, pair seed, k), so a sample's
    noise depends on its own key only, never on the batch it was drawn in.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if keys.ndim != 2 or (keys < 0).any() or (keys >= 2**32).any():  # a caller's bug, not the user's input
        raise ValueError("noise keys must be an [N, m] array of integers in [0, 2**32)")
    out = np.zeros((len(keys), w_dim), dtype=np.float32)
    for i, key in enumerate(keys):  # one generator per sample is the point; ~10 us each
        out[i] = np.random.RandomState(key.astype(np.uint32)).randn(w_dim)
    return out


def noise_keys(pair_seeds: Any, n_samples: int, sample_seed: int) -> np.ndarray:
    """[len(pair_seeds) * K, 3] keys (sample_seed, pair seed, k) for `draw_v`, seed-major."""
    s = np.repeat(np.asarray(pair_seeds, dtype=np.int64), n_samples)
    k = np.tile(np.arange(n_samples, dtype=np.int64), len(s) // max(n_samples, 1))
    return np.stack([np.full_like(s, sample_seed), s, k], 1)


def _batched(fn, n: int, batch_size: int) -> list:
    return [fn(slice(i, i + batch_size)) for i in range(0, n, batch_size)]


@torch.no_grad()
def sample_w(inn: ConditionalINN, r: Any, keys: Any, temperature: float = 1.0, batch_size: int = 4096) -> np.ndarray:
    """float64 [N, w_dim] samples of w given r, row i with the noise of keys[i]."""
    inn.eval()
    dev = inn.r_mean.device
    r = torch.as_tensor(np.asarray(r, dtype=np.float32))
    v = torch.from_numpy(draw_v(keys, inn.w_dim))
    if len(r) != len(v):
        raise ValueError(f"got {len(r)} r rows but {len(v)} noise keys")
    outs = _batched(lambda s: inn.sample(r[s].to(dev), v[s].to(dev), temperature).double().cpu(), len(r), batch_size)
    return torch.cat(outs).numpy() if outs else np.zeros((0, inn.w_dim))


@torch.no_grad()
def mean_nll(inn: ConditionalINN, r: Any, w: Any, batch_size: int = 4096) -> float:
    """Mean -log p(w | r) per dimension of w, in nats."""
    inn.eval()
    dev = inn.r_mean.device
    r = torch.as_tensor(np.asarray(r, dtype=np.float32))
    w = torch.as_tensor(np.asarray(w, dtype=np.float32))
    parts = _batched(lambda s: float(inn.nll(w[s].to(dev), r[s].to(dev)).double().sum()), len(r), batch_size)
    return sum(parts) / (len(r) * inn.w_dim)


def gaussian_nll(pred_fit: np.ndarray, w_fit: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    """Mean -log p(w | r) per dim, in nats, of the Gaussian model w | r ~ N(pred(r), S) with S the
    residual covariance of (pred_fit, w_fit): a link plus Gaussian noise, the INN's baseline."""
    e_fit = np.asarray(w_fit, np.float64) - np.asarray(pred_fit, np.float64)
    e = np.asarray(w, np.float64) - np.asarray(pred, np.float64)
    cov = np.cov(e_fit.T, bias=True).reshape(e.shape[1], e.shape[1]) + 1e-9 * np.eye(e.shape[1])
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, e.T)
    d = e.shape[1]
    return float((0.5 * (sol * sol).sum(0)).mean() / d + np.log(np.diag(chol)).mean() + 0.5 * LOG_2PI)


# ---------------------------------------------------------------------------- fit

def _init_flow(inn: ConditionalINN, x: torch.Tensor, g: torch.Generator) -> None:
    """Deterministic init from `g` on the standardised residuals x of the fitting split:
    torch's default uniform init for the embedding and the s and t nets, their last layers
    at zero (every coupling starts as the identity), fixed permutations, the whitening at the
    inverse Cholesky factor of x's covariance, and each ActNorm set from what it sees, so v
    starts standardised and the INN starts as the Gaussian model N(m(r), S)."""
    with torch.no_grad():
        for m in (*inn.embed, *inn.couplings.modules()):
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
        for coupling in inn.couplings:
            for net in (*coupling.s, *coupling.t):
                last = [m for m in net if isinstance(m, nn.Linear)][-1]
                last.weight.zero_()
                last.bias.zero_()
        for b in range(inn.n_blocks):
            inn.perms[b] = torch.randperm(inn.w_dim, generator=g)
        if inn.whiten is not None:
            cov = torch.cov(x.double().T, correction=0) + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
            inn.whiten.set_matrix(torch.linalg.inv(torch.linalg.cholesky(cov)).float())
            x, _ = inn.whiten(x)
        c = torch.zeros(len(x), inn.embed_dim)  # the couplings are the identity: c is not used yet
        for norm, coupling, perm in zip(inn.norms, inn.couplings, inn.perms):
            norm.init_from(x)
            x, _ = norm(x)
            x, _ = coupling(x, c)
            x = x[:, perm]


def _fit_mean(r: np.ndarray, w: np.ndarray, cfg: INNConfig) -> tuple[nn.Module | None, dict]:
    """The mean link on the fitting split, by least squares (as stage fit_link fits it)."""
    if cfg.mean == "none":
        return None, {}
    if cfg.mean == "ridge":
        link, info = fit_ridge(r, w, seed=cfg.seed)
        return link, {"alpha": info["alpha"]}
    link, info = fit_mlp(r, w, MLPConfig(hidden=cfg.mean_hidden, epochs=cfg.mean_epochs, seed=cfg.seed), progress=False)
    return link, {"best_epoch": info["best_epoch"], "best_val_mse": info["best_val_mse"]}


def fit_inn(r: Any, w: Any, cfg: INNConfig, progress: bool = True) -> tuple[ConditionalINN, dict]:
    """`_fit_inn` on CPU with one thread and deterministic kernels, restored afterwards
    (as `linkstyle.link.mlp.fit_mlp`, docs/method.md D10: the same seed gives the same
    weights whatever the core count)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _fit_inn(r, w, cfg, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _fit_inn(r: Any, w: Any, cfg: INNConfig, progress: bool) -> tuple[ConditionalINN, dict]:
    """Fit the mean link, then the flow by Adam on the NLL, keeping the epoch with the lowest
    NLL on a held-out split (which the mean link never sees either).

    One torch.Generator drives the split, the init, the permutations and the shuffling.
    info: mean (the mean link's own fit info), best_epoch (0 = the Gaussian model at init),
    best_val_nll, val_nll_init, curves (one row per epoch: epoch, train_nll, val_nll, nats
    per dim of w; epoch 0 = the init), epochs_run, n_fit, n_val, n_params.
    """
    r, w = check_pairs(r, w, min_rows=4, why="training the INN")
    if w.shape[1] < 2:
        raise UserError(f"models.generator: w has {w.shape[1]} dim, but a coupling INN splits w into two halves; "
                        "use a generator with w_dim >= 2")
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(r)
    n_val = min(n - 2, max(2, round(cfg.val_fraction * n)))
    perm = torch.randperm(n, generator=g).numpy()
    fit_idx, val_idx = perm[n_val:], perm[:n_val]

    mean_link, mean_info = _fit_mean(r[fit_idx], w[fit_idx], cfg)
    rt = torch.from_numpy(r.astype(np.float32))
    wt = torch.from_numpy(w.astype(np.float32))
    inn = ConditionalINN(r.shape[1], w.shape[1], cfg.n_blocks, cfg.hidden, cfg.depth, cfg.embed_dim, cfg.embed_hidden,
                         mean_link.cpu().float().eval() if mean_link is not None else None)
    with torch.no_grad():
        res = wt - inn._mean(rt)  # the mean link is frozen: the residuals are fixed data
    r_std, res_std = rt[fit_idx].std(0), res[fit_idx].std(0)
    inn.r_mean.copy_(rt[fit_idx].mean(0))
    inn.r_std.copy_(torch.where(r_std > 1e-8, r_std, 1.0))  # dead units would divide by zero
    inn.res_mean.copy_(res[fit_idx].mean(0))
    inn.res_std.copy_(torch.where(res_std > 1e-8, res_std, 1.0))
    x = (res - inn.res_mean) / inn.res_std
    _init_flow(inn, x[fit_idx], g)

    x_fit, r_fit = x[fit_idx], rt[fit_idx]
    params = [p for p in inn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    const = 0.5 * LOG_2PI + float(inn.res_std.log().mean())  # the standardised loss -> nats per dim of w

    def val_nll() -> float:
        return mean_nll(inn, rt[val_idx], wt[val_idx])

    best_val, best_epoch = val_nll(), 0
    best_state = {k: v.detach().clone() for k, v in inn.state_dict().items()}
    curves = [{"epoch": 0, "train_nll": None, "val_nll": best_val}]
    bar = tqdm(range(1, cfg.epochs + 1), desc="fit inn", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        inn.train()
        order = torch.randperm(len(fit_idx), generator=g)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            v, logdet = inn._forward_x(x_fit[idx], inn.condition(r_fit[idx]))
            loss = (0.5 * (v * v).sum(1) - logdet).mean() / inn.w_dim
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            opt.step()
            total += loss.item() * len(idx)
        val = val_nll()
        curves.append({"epoch": epoch, "train_nll": total / len(order) + const, "val_nll": val})
        if not math.isfinite(val):
            raise UserError(f"fit_inn: the validation NLL became {val} at epoch {epoch}; lower fit_inn.lr or fit_inn.clip_grad")
        if val < best_val:
            best_val, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in inn.state_dict().items()}
        bar.set_postfix(val_nll=f"{val:.4g}", best=best_epoch)
        if epoch - best_epoch >= cfg.patience:
            break
    bar.close()
    inn.load_state_dict(best_state)
    inn.eval()
    info = {
        "mean": {"kind": cfg.mean, **mean_info},
        "best_epoch": best_epoch,
        "best_val_nll": best_val,
        "val_nll_init": curves[0]["val_nll"],
        "epochs_run": len(curves) - 1,
        "curves": curves,
        "n_fit": len(fit_idx),
        "n_val": int(n_val),
        "n_params": int(sum(p.numel() for p in params)),
    }
    return inn, info


def evaluate_inn(inn: ConditionalINN, train: dict, test: dict, cfg: INNConfig) -> dict:
    """Held-out scores of a fitted INN on the test pairs (dicts with w, r, seed), in the
    format of the link kinds' metrics (stage fit_link), so that `reports/link/inn.json`
    sits beside `ols`, `ridge` and `mlp`:

    - kind 'inn', and test_mse, test_r2, test_r2_mean_over_dims, test_r2_min_dim,
      test_r2_per_dim and train_r2 of the INN as a link, w at v = 0 (`link_metrics`);
    - test_nll (nats per dim of w) beside two Gaussian models w | r ~ N(m(r), S), S the
      training residuals' covariance: m a ridge link (`gaussian_ridge`) and m the INN's own
      mean link (`gaussian_mean`, where it has one): what the flow adds to a link plus noise;
    - test_r2_sample_mean: R^2 of the Monte Carlo mean of `mean_samples` samples (noise
      keys (seed, pair seed, k)), and test_r2_mean_link, that of the INN's own mean link;
    - calibration: mean |v|^2 / w_dim of the encoded test pairs (1 if p(w | r) is right;
      above 1: the INN is too sure), and E tr Var(w | r) / tr Var(w) by the samples.
    """
    from linkstyle.link.fit import (  # fit imports mlp/linear only: no cycle
        link_metrics,
        predict_w,
    )

    rt, wt = test["r"], np.asarray(test["w"], np.float64)
    ridge, _ = fit_ridge(train["r"], train["w"], seed=cfg.seed)
    k = cfg.mean_samples
    ws = sample_w(inn, np.repeat(rt, k, 0), noise_keys(test["seed"], k, cfg.seed)).reshape(len(rt), k, -1)
    with torch.no_grad():
        v, _ = inn.encode(torch.as_tensor(wt, dtype=torch.float32), torch.as_tensor(np.asarray(rt), dtype=torch.float32))
    at_zero, mc = link_metrics(wt, predict_w(inn, rt)), link_metrics(wt, ws.mean(1))
    out = {
        "kind": "inn",
        "test_mse": at_zero["mse"], "test_r2": at_zero["r2"], "test_r2_mean_over_dims": at_zero["r2_mean_over_dims"],
        "test_r2_min_dim": min(at_zero["r2_per_dim"]),
        "train_r2": link_metrics(train["w"], predict_w(inn, train["r"]))["r2"],
        "test_nll": mean_nll(inn, rt, wt),
        "test_nll_gaussian_ridge": gaussian_nll(predict_w(ridge, train["r"]), train["w"], predict_w(ridge, rt), wt),
        "test_r2_sample_mean": mc["r2"],
        "test_v_sq_per_dim": float((v.double() ** 2).mean()),
        "test_sample_var_share": float(ws.var(1, ddof=1).sum(1).mean() / wt.var(0).sum()),
        "test_r2_per_dim": at_zero["r2_per_dim"],
    }
    if inn.mean_link is not None:
        m_train, m_test = predict_w(inn.mean_link, train["r"]), predict_w(inn.mean_link, rt)
        out["test_nll_gaussian_mean"] = gaussian_nll(m_train, train["w"], m_test, wt)
        out["test_r2_mean_link"] = link_metrics(wt, m_test)["r2"]
    return out


# ---------------------------------------------------------------------------- persistence

def save_inn(path: str | os.PathLike, inn: ConditionalINN, info: dict | None = None, **fingerprints: str) -> None:
    """Write an INN with its fitting info and the fingerprints of the pairs (and models) it was fitted on."""
    save_module(path, "inn", inn, info=plain(info or {}), **fingerprints)


def load_inn(path: str | os.PathLike, r_dim: int | None = None, w_dim: int | None = None,
             device: str | torch.device = "cpu", expect: dict | None = None) -> ConditionalINN:
    """Rebuild a saved INN in eval mode on `device`, checking dims and fingerprints (`expect`)."""
    inn, payload = load_module(path, "inn", {ConditionalINN.arch: ConditionalINN}, producer="fit_inn", device="cpu")
    for key, value in (expect or {}).items():
        if payload.get(key) != value:
            raise UserError(f"{path}: INN was fitted with {key}={payload.get(key)} but the current one is {value}; "
                            "refit it (dvc repro fit_inn)")
    for name, have, want in (("classifier's r", inn.r_dim, r_dim), ("generator's w", inn.w_dim, w_dim)):
        if want is not None and int(want) != have:
            raise UserError(f"{path}: INN models w of {inn.w_dim} dims given r of {inn.r_dim} units, but the "
                            f"{name} has {want}; refit it (dvc repro fit_inn)")
    inn.info = payload.get("info", {})
    return inn.float().to(device).eval()
