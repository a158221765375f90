"""Tiny differentiable worlds for the tuning tests: G(w) = tanh(A w + b) as a 4x4 image, and
r = softplus(P x + 0.5) of its 48 values. Hand-sized, so a test can say which units w can move."""

import numpy as np
import torch
from torch import nn

from linkstyle.models.classifier import Classifier
from linkstyle.models.generator import Generator


class TanhGen(Generator):
    """w [N, w_dim] -> 4x4 image tanh(A w + b); A ~ N(0, scale^2), b ~ N(0, bias_scale^2) (0: b = 0)."""

    def __init__(self, w_dim: int, seed: int, scale: float, bias_scale: float = 0.0):
        super().__init__()
        self.w_dim, self.z_dim, self.num_ws, self.n_classes, self.resolution = w_dim, w_dim, 1, 2, 4
        self.class_names, self.part_names = ("a", "b"), None
        self.lin = nn.Linear(w_dim, 48)
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            self.lin.weight.copy_(torch.as_tensor(rng.normal(size=(48, w_dim)) * scale))
            if bias_scale:
                self.lin.bias.copy_(torch.as_tensor(rng.normal(size=48) * bias_scale))
            else:
                self.lin.bias.zero_()

    def _synthesis(self, w, features):
        return torch.tanh(self.lin(w)).view(-1, 3, 4, 4), []


class SoftplusClf(Classifier):
    """n_units units r = softplus(P x + 0.5) of the normalised image, P ~ N(0, 0.3^2)."""

    def __init__(self, n_units: int, seed: int, arch: str):
        super().__init__(("a", "b"), n_units, 4, 4, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.arch = arch
        self.proj = nn.Linear(48, n_units)
        with torch.no_grad():
            self.proj.weight.copy_(torch.as_tensor(np.random.default_rng(seed).normal(size=(n_units, 48)) * 0.3))
            self.proj.bias.fill_(0.5)
        self.fc = nn.Linear(n_units, 2)

    def features(self, x):
        return nn.functional.softplus(self.proj(x.flatten(1)))

    def logits_from_r(self, r):
        return self.fc(r)
