"""A minimal linkstyle plugin: a generator and a classifier any params.yaml can name.

    models:
      generator:
        kind: plugin
        factory: toy_plugin:make_generator   # package.module:function
        code: docs/examples                  # folder to import it from (omit if installed)
        path: null                           # a weights file, passed as path= when given
        options: {n_classes: 3}              # keyword arguments of the factory
      classifier:
        kind: plugin
        factory: toy_plugin:make_classifier
        code: docs/examples
        path: null
        options: {n_classes: 3}

Everything here is tiny and random-weight; it only shows the interface
(docs/own-models.md). tests/models/test_backends_pipeline.py runs it through `dvc repro`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linkstyle import Classifier, Generator


class ToyGenerator(Generator):
    """z -> w by a per-class affine map; w -> a 16 px image by one linear layer."""

    def __init__(self, n_classes: int = 3, w_dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.z_dim = self.w_dim = w_dim
        self.num_ws, self.resolution, self.n_classes = 1, 16, n_classes
        self.class_names = tuple(f"toy_{i}" for i in range(n_classes))
        self.register_buffer("means", 2.0 * torch.randn(n_classes, w_dim, generator=g))
        self.to_image = nn.Linear(w_dim, 3 * 16 * 16)
        self.to_feat = nn.Linear(w_dim, 4 * 8 * 8)

    def _map(self, z, classes):
        return self.means[classes] + z

    def class_mean_w(self):
        return self.means

    def _synthesis(self, w, features):
        img = torch.tanh(self.to_image(w)).view(-1, 3, 16, 16)
        return img, ([self.to_feat(w).view(-1, 4, 8, 8)] if features else [])


class ToyClassifier(Classifier):
    """Global average pooling of one conv layer's ReLU: r has 12 non-negative units."""

    arch = "toy_plugin"

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__([f"toy_{i}" for i in range(n_classes)], n_units=12, input_resolution=16, resize_to=16,
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.fc = nn.Linear(12, n_classes)

    def features(self, x):
        return F.relu(self.conv(x)).mean(dim=(2, 3))

    def logits_from_r(self, r):
        return self.fc(r)

    def config(self):
        return {"arch": self.arch, "n_classes": self.n_classes}


def make_generator(n_classes: int = 3, seed: int = 0, path: str | None = None) -> ToyGenerator:
    torch.manual_seed(seed)
    gen = ToyGenerator(n_classes, seed=seed)
    if path:  # a user's weights: whatever format the plugin chooses
        gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return gen


def make_classifier(n_classes: int = 3, seed: int = 1, path: str | None = None) -> ToyClassifier:
    torch.manual_seed(seed)
    clf = ToyClassifier(n_classes)
    if path:
        clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return clf
