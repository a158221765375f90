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

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import check
from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- interface

class Classifier(nn.Module):
    """Base class: preprocessing, r = features(x), logits = logits_from_r(r).

    Subclasses set `arch` and implement `features`, `logits_from_r` and `config`
    (the dict `load_classifier` rebuilds them from).
    """

    arch = "base"

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
        return self.mean.device

    def to_unit(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] or float [N, 3, H, W] in [-1, 1] -> float [N, 3, H, W] in [0, 1] on device."""
        x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [N, H, W, 3], got shape {tuple(x.shape)}")
            return x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
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
        rs, ls = [], []
        try:
            with torch.inference_mode():
                for i in range(0, len(images), batch_size):
                    r = self.features(self.preprocess(images[i : i + batch_size]))
                    rs.append(r.float().cpu())
                    ls.append(self.logits_from_r(r).float().cpu())
        finally:
            self.train(was_training)
        if not rs:
            return torch.zeros(0, self.n_units), torch.zeros(0, self.n_classes)
        return torch.cat(rs), torch.cat(ls)


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

    def config(self) -> dict:
        return {"arch": self.arch, "class_names": list(self.class_names), "widths": list(self.widths),
                "stem_stride": self.stem_stride, "input_resolution": self.input_resolution,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


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

    def config(self) -> dict:
        return {"arch": self.arch, "class_names": list(self.class_names), "class_indices": list(self.class_indices),
                "n_outputs": self.n_outputs}


# ---------------------------------------------------------------------------- training

@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
    """Options of the default classifier's training (stage `train_classifier`)."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.2  # share of steps the one-cycle LR spends rising
    seed: int = 0
    widths: tuple[int, ...] = (32, 64, 128, 256)
    stem_stride: int = 2
    # Augmentation, so f also classifies slightly shifted, blurry or noisy generated images.
    shift_px: int = 3  # random translation up to this many pixels (edge pixels repeated)
    blur_prob: float = 0.3  # share of images blurred, Gaussian sigma uniform in [0.3, blur_sigma]
    blur_sigma: float = 1.0
    colour_jitter: float = 0.15  # brightness, contrast, saturation factors in [1 - j, 1 + j]; hue kept (it is class evidence)
    noise_std: float = 0.02  # Gaussian pixel noise, std uniform in [0, noise_std] on the [0, 1] scale

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be a positive integer, got {self.epochs}")
        check(self.batch_size >= 2, "batch_size", f"must be at least 2 (batch norm needs it), got {self.batch_size}")
        check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a positive number, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {self.weight_decay}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        check(0 < self.warmup_fraction < 1, "warmup_fraction", f"must be between 0 and 1, got {self.warmup_fraction}")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")
        check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths), "widths",
              f"must list at least one positive channel count, got {list(self.widths)}")
        check(self.stem_stride in (1, 2), "stem_stride", f"must be 1 or 2, got {self.stem_stride}")
        check(0 <= self.shift_px <= 16, "shift_px", f"must be between 0 and 16, got {self.shift_px}")
        check(0 <= self.blur_prob <= 1, "blur_prob", f"must be between 0 and 1, got {self.blur_prob}")
        check(0.3 <= self.blur_sigma <= 3, "blur_sigma", f"must be between 0.3 and 3, got {self.blur_sigma}")
        check(0 <= self.colour_jitter < 1, "colour_jitter", f"must be in [0, 1), got {self.colour_jitter}")
        check(0 <= self.noise_std <= 0.5, "noise_std", f"must be between 0 and 0.5, got {self.noise_std}")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment(x: torch.Tensor, cfg: ClassifierTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Random shift, blur, colour jitter and noise on a batch [N, 3, H, W] in [0, 1] (CPU)."""
    n, _, h, w = x.shape
    if cfg.shift_px > 0:
        # One gather with per-image offsets into an edge-padded copy: no per-image loop.
        s = cfg.shift_px
        xp = F.pad(x, (s, s, s, s), mode="replicate")
        dy = torch.randint(0, 2 * s + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * s + 1, (n,), generator=g)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = xp[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    if cfg.blur_prob > 0:
        # Per-image separable kernels as one grouped conv; unblurred images get a delta kernel.
        sigma = _uniform(n, 0.3, cfg.blur_sigma, g)
        on = torch.rand(n, generator=g) < cfg.blur_prob
        r = int(math.ceil(2 * cfg.blur_sigma))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        k = torch.where(on[:, None], k / k.sum(1, keepdim=True), (t == 0).float()[None].expand(n, -1))
        k = k.repeat_interleave(3, 0)  # [N*3, K], one kernel per channel of each image
        y = F.pad(x.reshape(1, n * 3, h, w), (r, r, r, r), mode="replicate")
        y = F.conv2d(y, k[:, None, None, :], groups=n * 3)
        x = F.conv2d(y, k[:, None, :, None], groups=n * 3).reshape(n, 3, h, w)
    if cfg.colour_jitter > 0:
        j = cfg.colour_jitter
        b, c, s = (_uniform(n, 1 - j, 1 + j, g).view(n, 1, 1, 1) for _ in range(3))
        x = x * b
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * c + x.mean(dim=(1, 2, 3), keepdim=True)
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * s + grey
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=g) * _uniform(n, 0.0, cfg.noise_std, g).view(n, 1, 1, 1)
    return x.clamp(0.0, 1.0)


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std on the [0, 1] scale, accumulated in float64 chunks to bound memory."""
    s = np.zeros(3)
    ss = np.zeros(3)
    for i in range(0, len(images), 4096):
        x = images[i : i + 4096].reshape(-1, 3).astype(np.float64) / 255.0
        s += x.sum(0)
        ss += (x * x).sum(0)
    m = len(images) * images.shape[1] * images.shape[2]
    mean = s / m
    std = np.sqrt(np.maximum(ss / m - mean**2, 1e-6))
    return [float(v) for v in mean], [float(v) for v in std]


def train_classifier(images: np.ndarray, labels: np.ndarray, cfg: ClassifierTrainConfig,
                     class_names: Sequence[str], progress: bool = True,
                     val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
                     ) -> tuple[SmallResNet, dict]:
    """Train a SmallResNet on uint8 images [N, H, W, 3] with integer labels [N]; CPU, deterministic."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise UserError(f"training images must be square uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise UserError(f"training labels must be [N] = [{len(images)}], got shape {labels.shape}")
    if len(images) < cfg.batch_size:
        raise UserError(f"batch_size {cfg.batch_size} exceeds the {len(images)} training images; lower batch_size")
    n_classes = len(class_names)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise UserError(f"training labels must lie in [0, {n_classes}) for {n_classes} class names, got {labels.min()}..{labels.max()}")

    mean, std = _channel_stats(images)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        model = SmallResNet(class_names, cfg.widths, images.shape[1], mean, std, cfg.stem_stride)
    g = torch.Generator().manual_seed(cfg.seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 kept; floats made per batch
    y_all = torch.from_numpy(labels.astype(np.int64))
    steps_per_epoch = len(images) // cfg.batch_size  # drop the ragged last batch: batch norm dislikes tiny ones
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=cfg.warmup_fraction)
    history: dict = {"epoch": [], "loss": [], "train_accuracy": [], "lr": [], "seconds": []}
    if val_images is not None:
        history["val_accuracy"] = []
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="train classifier", unit="step", disable=not progress)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(images), generator=g)
        loss_sum, correct, seen = 0.0, 0, 0
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x = augment(x_all[idx].float().div_(255.0), cfg, g)
            y = y_all[idx]
            logits = model(model.normalise(x))
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum / seen)
        history["train_accuracy"].append(correct / seen)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["seconds"].append(time.perf_counter() - t0)
        if val_images is not None:
            history["val_accuracy"].append(evaluate(model, val_images, val_labels)["accuracy"])
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", val_acc=f"{history['val_accuracy'][-1]:.3f}")
    bar.close()
    model.eval()
    return model, history


def evaluate(model: Classifier, images: np.ndarray | torch.Tensor, labels: np.ndarray, batch_size: int = 256) -> dict:
    """Accuracy, per-class accuracy (by class name) and confusion matrix (rows true, columns predicted)."""
    labels = np.asarray(labels, dtype=np.int64)
    _, logits = model.represent(images, batch_size)
    pred = logits.argmax(1).numpy()
    k = model.n_classes
    conf = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    per_class = {name: float(conf[i, i] / conf[i].sum()) if conf[i].sum() else float("nan")
                 for i, name in enumerate(model.class_names)}
    return {"accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
            "per_class_accuracy": per_class, "confusion": conf.tolist(), "n": int(len(labels))}


# ---------------------------------------------------------------------------- persistence

def save_classifier(path: str | os.PathLike, model: Classifier, **extra) -> None:
    """Write a 'classifier' checkpoint: the config that rebuilds `model` plus its weights."""
    save_checkpoint(path, "classifier", model.config(), model.state_dict(), **extra)


def _build(config: dict, where: str) -> Classifier:
    arch = config.get("arch")
    try:
        if arch == SmallResNet.arch:
            return SmallResNet(config["class_names"], config["widths"], config["input_resolution"],
                               config["mean"], config["std"], config["stem_stride"])
        if arch == ResNet50.arch:
            return ResNet50(config["class_indices"], config["class_names"], config["n_outputs"])
    except KeyError as e:
        raise UserError(f"{where}: classifier config lacks '{e.args[0]}'; retrain or re-export the classifier") from None
    raise UserError(f"{where}: unknown classifier arch '{arch}'; expected '{SmallResNet.arch}' or '{ResNet50.arch}'")


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the classifier saved by `save_classifier`, in eval mode on `device`."""
    payload = load_checkpoint(path, "classifier", map_location="cpu")
    model = _build(payload["config"], str(path))
    _load_strict(model, payload["state_dict"], Path(path), "a linkstyle classifier checkpoint")
    return model.to(device).eval()


def _load_strict(model: nn.Module, state: dict, path: Path, expected: str) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        what = f"missing key '{missing[0]}'" if missing else f"unexpected key '{unexpected[0]}'"
        raise UserError(f"{path}: {what} ({len(missing)} missing, {len(unexpected)} unexpected); expected {expected}")
    for k, v in want.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            raise UserError(f"{path}: key '{k}' has shape {got}, expected {tuple(v.shape)}; expected {expected}")
    model.load_state_dict(state, strict=True)


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
    _load_strict(model, state, path, expected)
    return model.to(device).eval()
