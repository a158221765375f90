"""ResNet-50 with torchvision's state-dict keys, for a user's ImageNet checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.checkpoint import load_state_strict
from linkstyle.core.errors import UserError
from linkstyle.models.classifier import IMAGENET_MEAN, IMAGENET_STD, Classifier

# ---------------------------------------------------------------------------- ResNet-50

class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: stride on the 3x3 conv), same attribute names."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50(Classifier):
    """ResNet-50 with torchvision's state-dict keys; ImageNet preprocessing (256 -> crop 224).

    `class_indices` picks which of the fc outputs are the classes (e.g. five ImageNet
    dog breeds); logits_from_r returns only those, in that order.
    """

    arch = "resnet50"

    def __init__(self, class_indices: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 n_outputs: int = 1000) -> None:
        n_outputs = int(n_outputs)
        idx = list(range(n_outputs)) if class_indices is None else [int(i) for i in class_indices]
        if not idx or any(not 0 <= i < n_outputs for i in idx) or len(set(idx)) != len(idx):
            raise UserError(f"class_indices must be distinct integers in [0, {n_outputs}), got {list(class_indices or [])}")
        if class_names is None:
            class_names = [f"class_{i}" for i in idx]
        if len(class_names) != len(idx):
            raise UserError(f"class_names has {len(class_names)} names but class_indices has {len(idx)}; give one name per index")
        super().__init__(class_names, 2048, 224, 256, IMAGENET_MEAN, IMAGENET_STD)
        self.n_outputs = n_outputs
        self.class_indices = tuple(idx)
        self.register_buffer("_idx", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, planes, 2 if (j == 0 and i > 0) else 1))
                c = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, n_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def logits_from_r(self, r: torch.Tensor) -> torch.Tensor:
        return F.linear(r, self.fc.weight[self._idx], self.fc.bias[self._idx])

    @classmethod
    def from_config(cls, d: dict) -> "ResNet50":
        return cls(d["class_indices"], d["class_names"], d["n_outputs"])

    def config(self) -> dict:
        return {"arch": self.arch, "class_names": list(self.class_names), "class_indices": list(self.class_indices),
                "n_outputs": self.n_outputs}


def load_torchvision_resnet50(path: str | os.PathLike, class_indices: Sequence[int] | None = None,
                              class_names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> ResNet50:
    """A ResNet50 from a file holding `torchvision.models.resnet50().state_dict()` (any fc size)."""
    path = Path(path)
    expected = "a torchvision resnet50 state_dict saved with torch.save(model.state_dict(), path)"
    if not path.exists():
        raise UserError(f"{path}: classifier weights not found; fix the path in params.yaml (expected {expected})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, pickles of whole models, foreign formats
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or unreadable weights ({msg}); expected {expected}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # common wrapper of training scripts
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict; expected {expected}")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    fc = state.get("fc.weight")
    n_outputs = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else 1000
    model = ResNet50(class_indices, class_names, n_outputs)
    load_state_strict(model, state, path, expected)
    return model.to(device).eval()
