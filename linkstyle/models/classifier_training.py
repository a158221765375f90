"""Training the default classifier (a `SmallResNet`) on world images, with augmentation, and its evaluation."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.models.classifier import Classifier
from linkstyle.models.small_resnet import SmallResNet

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
