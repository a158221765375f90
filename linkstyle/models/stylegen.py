"""The default generator: a StyleGAN2-style synthesis network with a fitted class prior.

Why not a GAN: on a 2-core CPU a small GAN collapses to a handful of images per class
inside the time budget. An autoencoder trains stably in minutes, so the default is:

- an encoder (training only) that maps an image to a posterior over w (a VAE with a
  small KL weight, which keeps W smooth, so nearby w render nearby images);
- a StyleGAN2-style synthesis network: learned 4x4 constant, modulated 3x3 convolutions
  with weight demodulation driven by w through per-layer affine maps, bilinear
  upsampling and skip toRGB outputs, plus a toParts head that predicts the part map,
  so every generated image comes with its own segmentation;
- a class-conditional mapping (z, c) -> w = mean_c + L_c z, a Gaussian per class fitted
  to the encoder means of that class's training images (L_c the Cholesky factor of its
  covariance). Truncation toward mean_c is then exactly StyleGAN's per-class truncation.

Modulation is done the "non-fused" way (scale the input by the style, shared conv, scale
the output by the demodulation coefficients), which is the same maths as StyleGAN2's
grouped convolution and the faster one on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.config import check
from linkstyle.models.generator import Generator


@dataclass(frozen=True)
class StyleGenConfig:
    """Architecture of the default generator."""

    w_dim: int = 64
    resolution: int = 32
    channels: tuple[int, ...] = (128, 128, 64, 32)  # per resolution 4, 8, 16, ...
    encoder_channels: tuple[int, ...] = (32, 64, 128)

    def __post_init__(self):
        check(self.w_dim >= 2, "w_dim", "must be >= 2")
        check(self.resolution in (16, 32, 64, 128), "resolution", "must be 16, 32, 64 or 128")
        n_res = int(math.log2(self.resolution)) - 1
        check(len(self.channels) == n_res, "channels", f"needs one entry per resolution 4..{self.resolution} ({n_res})")


class ModConv(nn.Module):
    """Modulated convolution with optional demodulation (StyleGAN2, non-fused)."""

    def __init__(self, cin: int, cout: int, w_dim: int, k: int = 3, demod: bool = True, act: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(w_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # start as an unmodulated conv
        self.demod, self.act, self.pad = demod, act, k // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # [N, cin]
        x = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.pad)
        if self.demod:
            # 1 / ||W * s|| per output channel and sample, as StyleGAN2's demodulation.
            d = torch.rsqrt((s[:, None, :] ** 2 * self.weight.pow(2).sum((2, 3))[None]).sum(2) + 1e-8)
            x = x * d[:, :, None, None]
        x = x + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) if self.act else x


class Synthesis(nn.Module):
    def __init__(self, cfg: StyleGenConfig, n_parts: int):
        super().__init__()
        ch = cfg.channels
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.convs = nn.ModuleList([ModConv(ch[0], ch[0], cfg.w_dim)])
        self.torgb = nn.ModuleList([ModConv(ch[0], 3, cfg.w_dim, k=1, demod=False, act=False)])
        for cin, cout in zip(ch[:-1], ch[1:]):
            self.convs.append(ModConv(cin, cout, cfg.w_dim))
            self.convs.append(ModConv(cout, cout, cfg.w_dim))
            self.torgb.append(ModConv(cout, 3, cfg.w_dim, k=1, demod=False, act=False))
        self.toparts = nn.Conv2d(ch[-1], n_parts, 1)
        self.num_ws = len(self.convs) + 1

    def forward(self, w: torch.Tensor, features: bool = False):
        x = self.const.expand(len(w), -1, -1, -1)
        x = self.convs[0](x, w)
        feats = [x] if features else []
        rgb = self.torgb[0](x, w)
        for i in range(1, len(self.convs), 2):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.convs[i](x, w)
            if features:
                feats.append(x)
            x = self.convs[i + 1](x, w)
            if features:
                feats.append(x)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + self.torgb[(i + 1) // 2](x, w)
        return torch.tanh(rgb), self.toparts(x), feats


class Encoder(nn.Module):
    """Image [-1, 1] -> (mean, log-variance) of w. Used in training only."""

    def __init__(self, cfg: StyleGenConfig):
        super().__init__()
        layers, cin = [], 3
        for c in cfg.encoder_channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = c
        self.body = nn.Sequential(*layers)
        side = cfg.resolution // 2 ** len(cfg.encoder_channels)
        self.head = nn.Linear(cin * side * side, 2 * cfg.w_dim)

    def forward(self, x):
        mu, logvar = self.head(self.body(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 4)


class StyleGen(Generator):
    """Default generator: Gaussian class prior -> w -> StyleGAN2-style synthesis."""

    def __init__(self, cfg: StyleGenConfig, class_names: tuple[str, ...], part_names: tuple[str, ...]):
        super().__init__()
        self.cfg = cfg
        self.class_names, self.part_names = tuple(class_names), tuple(part_names)
        self.n_classes, self.w_dim, self.z_dim, self.resolution = len(class_names), cfg.w_dim, cfg.w_dim, cfg.resolution
        self.synthesis = Synthesis(cfg, len(part_names))
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("prior_mean", torch.zeros(self.n_classes, cfg.w_dim))
        self.register_buffer("prior_chol", torch.eye(cfg.w_dim).repeat(self.n_classes, 1, 1))

    def fit_prior(self, mu: np.ndarray, labels: np.ndarray, shrinkage: float = 1e-3) -> None:
        """Fit one Gaussian per class to encoder means (float64 maths, small ridge for rank)."""
        means, chols = [], []
        for c in range(self.n_classes):
            x = mu[labels == c].astype(np.float64)
            m = x.mean(0)
            cov = np.cov(x, rowvar=False) + shrinkage * np.eye(x.shape[1])
            means.append(m)
            chols.append(np.linalg.cholesky(cov))
        self.prior_mean.copy_(torch.as_tensor(np.stack(means), dtype=torch.float32))
        self.prior_chol.copy_(torch.as_tensor(np.stack(chols), dtype=torch.float32))

    def _map(self, z, classes):
        # Elementwise product and a last-axis sum rather than a batched matmul: each row
        # is reduced on its own, so w does not depend on the batch it was drawn in.
        return self.prior_mean[classes] + (self.prior_chol[classes] * z[:, None, :]).sum(-1)

    def class_mean_w(self):
        return self.prior_mean

    def _synthesis(self, w, features):
        img, _, feats = self.synthesis(w, features)
        return img, feats

    def _parts(self, w):
        return self.synthesis(w)[1].argmax(1).to(torch.uint8)

    def _render(self, w):
        img, parts, _ = self.synthesis(w)
        return img, parts.argmax(1).to(torch.uint8)

    def config(self) -> dict:
        return dict(
            arch="stylegen", w_dim=self.cfg.w_dim, resolution=self.cfg.resolution,
            channels=list(self.cfg.channels), encoder_channels=list(self.cfg.encoder_channels),
            class_names=list(self.class_names), part_names=list(self.part_names),
        )

    @classmethod
    def from_config(cls, d: dict) -> "StyleGen":
        cfg = StyleGenConfig(w_dim=d["w_dim"], resolution=d["resolution"], channels=tuple(d["channels"]),
                             encoder_channels=tuple(d["encoder_channels"]))
        return cls(cfg, tuple(d["class_names"]), tuple(d["part_names"]))
