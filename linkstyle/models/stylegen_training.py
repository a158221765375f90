"""Training the default generator on world images: VAE fit, then the class prior.

Deterministic on CPU for a given seed: parameters are initialised and batches drawn
from seeded `torch.Generator`s, and the posterior noise comes from the same generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from linkstyle.core.config import check
from linkstyle.core.images import to_signed
from linkstyle.models.stylegen import Encoder, StyleGen, StyleGenConfig


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Options of stage `train_generator`."""

    w_dim: int = 64
    channels: tuple[int, ...] = (128, 128, 64, 32)
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    kl_weight: float = 2e-4  # per latent dimension, relative to the mean pixel L1
    parts_weight: float = 0.5
    prior_shrinkage: float = 1e-3
    seed: int = 0
    max_train: int = 0  # 0: use every training image

    def __post_init__(self):
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.batch_size >= 2, "batch_size", "must be >= 2")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.kl_weight >= 0, "kl_weight", "must be >= 0")
        check(self.parts_weight >= 0, "parts_weight", "must be >= 0")
        check(self.max_train >= 0, "max_train", "must be >= 0 (0 = all)")


def train_generator(
    images: np.ndarray,
    labels: np.ndarray,
    parts: np.ndarray,
    class_names: tuple[str, ...],
    part_names: tuple[str, ...],
    cfg: GeneratorTrainConfig,
    progress: bool = True,
) -> tuple[StyleGen, dict]:
    """Fit the VAE on (image, part map) and the per-class prior; return the generator and a history."""
    torch.manual_seed(cfg.seed)
    res = images.shape[1]
    arch = StyleGenConfig(w_dim=cfg.w_dim, resolution=res, channels=cfg.channels, encoder_channels=cfg.encoder_channels)
    gen, enc = StyleGen(arch, class_names, part_names), Encoder(arch)
    if cfg.max_train and cfg.max_train < len(images):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(images))[: cfg.max_train])
        images, labels, parts = images[keep], labels[keep], parts[keep]
    x_all, p_all = to_signed(images), torch.as_tensor(parts).long()
    n = len(x_all)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    params = list(gen.parameters()) + list(enc.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    rng = torch.Generator().manual_seed(cfg.seed)
    history = {"loss": [], "l1": [], "parts_ce": [], "kl": []}
    t0 = time.time()
    bar = tqdm(total=total, desc="train_generator", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=rng)
        sums = np.zeros(4)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, p = x_all[idx], p_all[idx]
            mu, logvar = enc(x)
            w = mu + torch.randn(mu.shape, generator=rng) * (0.5 * logvar).exp()
            img, part_logits, _ = gen.synthesis(w)
            l1 = (img - x).abs().mean()
            ce = F.cross_entropy(part_logits, p)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
            loss = l1 + cfg.parts_weight * ce + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += [loss.item(), l1.item(), ce.item(), kl.item()]
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(epoch=epoch, l1=f"{l1.item():.4f}", ce=f"{ce.item():.3f}")
        for k, v in zip(history, sums / steps_per_epoch):
            history[k].append(float(v))
    bar.close()

    enc.eval()
    with torch.inference_mode():
        mu = torch.cat([enc(x_all[i : i + 512])[0] for i in range(0, n, 512)]).numpy()
    gen.fit_prior(mu, np.asarray(labels), cfg.prior_shrinkage)
    history["seconds"] = time.time() - t0
    history["n_train"] = n
    return gen.eval(), history
