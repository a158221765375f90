"""The default classifier: a small ResNet for the built-in world's 32 px images."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.models.classifier import Classifier

# ---------------------------------------------------------------------------- SmallResNet

class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(Classifier):
    """ResNet for small inputs: conv3x3 stem, one BasicBlock per stage, GAP -> r -> linear.

    The stem's stride 2 (default) quarters the cost of every later layer, which is what
    makes training fit in a few minutes on two CPU cores; stride 1 keeps full resolution.
    """

    arch = "small_resnet"

    def __init__(self, class_names: Sequence[str], widths: Sequence[int] = (32, 64, 128, 256),
                 input_resolution: int = 32, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), stem_stride: int = 2) -> None:
        widths = tuple(int(w) for w in widths)
        super().__init__(class_names, widths[-1], input_resolution, input_resolution, mean, std)
        self.widths = widths
        self.stem_stride = int(stem_stride)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, self.stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, self.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for b in blocks:  # residual branches start at zero: each block begins as the identity
            nn.init.zeros_(b.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def logits_from_r(self, r: torch.Tensor) -> torch.Tensor:
        return self.fc(r)

    @classmethod
    def from_config(cls, d: dict) -> "SmallResNet":
        return cls(d["class_names"], d["widths"], d["input_resolution"], d["mean"], d["std"], d["stem_stride"])

    def config(self) -> dict:
        return {"arch": self.arch, "class_names": list(self.class_names), "widths": list(self.widths),
                "stem_stride": self.stem_stride, "input_resolution": self.input_resolution,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}
