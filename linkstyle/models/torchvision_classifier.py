"""torchvision ImageNet classifiers by name, their penultimate layer as R.

The user's weights are a file holding `torchvision.models.<arch>().state_dict()` (or
a training script's {"state_dict": ...} wrapper, or DataParallel's "module." keys);
the network is built by torchvision's own constructor, so any checkpoint torchvision
loads, this loads. One `Family` per architecture family says where R is:

- ResNets: after global average pooling (2048 units for ResNet-50, 512 for ResNet-18);
- DenseNets: after the final ReLU and global average pooling (1920 for DenseNet-201);
- VGG and AlexNet: fc7, the second 4096-unit fully connected layer after its ReLU.

The head (the last linear layer) maps R to the logits; `class_indices` keeps only the
outputs that are the generator's classes, in the generator's order.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.checkpoint import load_state_strict
from linkstyle.core.errors import UserError
from linkstyle.models.classifier import IMAGENET_MEAN, IMAGENET_STD, Classifier


def _resnet_r(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


def _densenet_r(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(F.relu(net.features(x)), 1), 1)


def _fc7_r(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = torch.flatten(net.avgpool(net.features(x)), 1)
    return net.classifier[:-1](x)  # fc6, ReLU, Dropout, fc7, ReLU, Dropout (identity in eval)


@dataclass(frozen=True)
class Family:
    penultimate: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head: Callable[[nn.Module], nn.Linear]
    where: str  # what R is, for messages and docs


RESNET = Family(_resnet_r, lambda net: net.fc, "after global average pooling")
DENSENET = Family(_densenet_r, lambda net: net.classifier, "after the last ReLU and global average pooling")
FC7 = Family(_fc7_r, lambda net: net.classifier[-1], "fc7 (second 4096-unit layer, after ReLU)")

# The registry: one line per architecture name that torchvision.models.get_model knows.
ARCHS: dict[str, Family] = {
    **{n: RESNET for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                           "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d")},
    **{n: DENSENET for n in ("densenet121", "densenet161", "densenet169", "densenet201")},
    **{n: FC7 for n in ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")},
}

# Where each family keeps its head's weight in a state dict (its row count = the checkpoint's outputs).
_HEAD_KEY = {id(RESNET): "fc.weight", id(DENSENET): "classifier.weight", id(FC7): "classifier.6.weight"}

# Old torchvision DenseNet checkpoints name "norm.1" what the constructor calls "norm1".
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class TorchvisionClassifier(Classifier):
    """A torchvision model with ImageNet preprocessing (resize 256, centre crop 224)."""

    arch = "torchvision"

    def __init__(self, name: str, class_indices: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None, n_outputs: int = 1000, empty: bool = False) -> None:
        """`empty`: build the network on the meta device (no memory, no random init) for weights to be assigned."""
        import torchvision  # imported here: the built-in world never needs it

        if name not in ARCHS:
            raise UserError(f"models.classifier.arch: unknown torchvision architecture {name!r}; "
                            f"use one of {', '.join(sorted(ARCHS))}, or kind: plugin for others")
        n_outputs = int(n_outputs)
        idx = list(range(n_outputs)) if class_indices is None else [int(i) for i in class_indices]
        if not idx or any(not 0 <= i < n_outputs for i in idx) or len(set(idx)) != len(idx):
            raise UserError(f"models.classifier.class_indices: must be distinct integers in [0, {n_outputs}) "
                            f"(the checkpoint has {n_outputs} outputs), got {list(class_indices or [])}")
        if class_names is None:
            class_names = [f"class_{i}" for i in idx]
        if len(class_names) != len(idx):
            raise UserError(f"models.classifier.class_names: {len(class_names)} names for {len(idx)} class_indices; "
                            "give one name per index")
        with torch.device("meta") if empty else contextlib.nullcontext():
            net = torchvision.models.get_model(name, weights=None, num_classes=n_outputs)
        head = ARCHS[name].head(net)
        super().__init__(class_names, head.in_features, 224, 256, IMAGENET_MEAN, IMAGENET_STD)
        self.name, self.n_outputs, self.class_indices = name, n_outputs, tuple(idx)
        self.net = net
        self.register_buffer("_idx", torch.tensor(idx, dtype=torch.long), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.amp:  # checked first: torch.fx traces this method (attribution) with amp off
            return ARCHS[self.name].penultimate(self.net, x)
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=x.device.type == "cuda"):
            r = ARCHS[self.name].penultimate(self.net, x)
        return r.float()

    def logits_from_r(self, r: torch.Tensor) -> torch.Tensor:
        head = ARCHS[self.name].head(self.net)
        return F.linear(r, head.weight[self._idx], head.bias[self._idx])

    def config(self) -> dict:
        return {"arch": self.arch, "name": self.name, "class_names": list(self.class_names),
                "class_indices": list(self.class_indices), "n_outputs": self.n_outputs}


def _read_state(path: Path, expected: str) -> dict:
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
    return {(_DENSENET_OLD_KEY.sub(r"\1\2", k) if isinstance(k, str) else k): v for k, v in state.items()}


def load_torchvision(name: str, path: str | os.PathLike, class_indices: Sequence[int] | None = None,
                     class_names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> TorchvisionClassifier:
    """torchvision model `name` with the weights in `path`, in eval mode on `device`."""
    path = Path(path)
    expected = f"a torchvision {name} state_dict saved with torch.save(model.state_dict(), path)"
    if not path.is_file():
        raise UserError(f"{path}: classifier weights not found; fix models.classifier.path in params.yaml "
                        f"(expected {expected})")
    if name not in ARCHS:
        TorchvisionClassifier(name)  # raises the one-line error
    state = _read_state(path, expected)
    head = state.get(_HEAD_KEY[id(ARCHS[name])])
    n_outputs = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else 1000
    # Built empty and the file's tensors assigned: a random init of millions of weights
    # that are overwritten at once would cost more than the load itself.
    model = TorchvisionClassifier(name, class_indices, class_names, n_outputs, empty=True)
    load_state_strict(model.net, state, path, expected, assign=True)
    left = [k for k, v in [*model.net.named_parameters(), *model.net.named_buffers()] if v.is_meta]
    if left:
        raise UserError(f"{path}: no values for {left[0]} ({len(left)} tensors); expected {expected}")
    return model.to(device).eval()
