"""Image classifiers f whose penultimate layer R the method links to the generator's W.

Every classifier is a `Classifier`: `preprocess` turns either stored 8-bit images
[N, H, W, 3] or generator output [N, 3, H, W] in [-1, 1] into the model's input, so
the same code path serves training data, paired-data renders and counterfactual
renders. `features` gives r after global average pooling (non-negative, as in
ResNet) and `logits_from_r` the class scores, which later stages call directly on
edited r.

Two architectures: `SmallResNet`, trained here on the built-in world, and
`ResNet50`, which takes a user's torchvision state dict unchanged (same key names),
optionally restricted to a subset of its output classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.images import to_unit
from linkstyle.core.runtime import batched, module_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- interface

class Classifier(nn.Module):
    """Base class: preprocessing, r = features(x), logits = logits_from_r(r).

    Subclasses set `arch` and implement `features`, `logits_from_r` and `config`
    (the dict `load_classifier` rebuilds them from).
    """

    arch = "base"
    amp = False  # mixed precision on CUDA (models.classifier.amp); honoured by the torchvision backend

    def __init__(self, class_names: Sequence[str], n_units: int, input_resolution: int, resize_to: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.class_names = tuple(str(c) for c in class_names)
        self.n_classes = len(self.class_names)
        self.n_units = int(n_units)
        self.input_resolution = int(input_resolution)
        self.resize_to = int(resize_to)  # shorter side before the centre crop to input_resolution
        # Not persistent: a torchvision state dict has no such keys, and the config records them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return module_device(self)

    def to_unit(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] or float [N, 3, H, W] in [-1, 1] -> float [N, 3, H, W] in [0, 1] on device."""
        x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [N, H, W, 3], got shape {tuple(x.shape)}")
            return to_unit(x, self.device)
        if x.is_floating_point():
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"float images must be [N, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
            # Clamped like the 8-bit export of a render, so a render and its saved PNG agree.
            return ((x.to(self.device, torch.float32) + 1.0) * 0.5).clamp(0.0, 1.0)
        raise ValueError(f"images must be uint8 [N, H, W, 3] or float [N, 3, H, W], got dtype {x.dtype}")

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Shorter side to `resize_to`, then centre crop `input_resolution` (torchvision Resize + CenterCrop)."""
        h, w = x.shape[-2:]
        s = self.resize_to
        size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)  # torchvision's rounding
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        h, w = x.shape[-2:]
        c = self.input_resolution
        if (h, w) != (c, c):
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            x = x[..., top : top + c, left : left + c]
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Images as stored or as rendered -> normalised model input [N, 3, R, R] on device."""
        return self.normalise(self.resize(self.to_unit(images)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits_from_r(self, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_r(self.features(x))

    def config(self) -> dict:
        raise NotImplementedError

    def represent(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(r [N, n_units], logits [N, n_classes]), float32 on CPU, in eval mode."""
        was_training = self.training
        self.eval()  # batch statistics would make r depend on the batch
        def encode(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            r = self.features(self.preprocess(images[a:b]))
            return r.float().cpu(), self.logits_from_r(r).float().cpu()

        try:
            with torch.inference_mode():
                out = batched(encode, len(images), batch_size, self.device)
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros(0, self.n_units), torch.zeros(0, self.n_classes)
        rs, ls = zip(*out)
        return torch.cat(rs), torch.cat(ls)
