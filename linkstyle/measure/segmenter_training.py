"""Training the few-shot segmenter (stage train_segmenter) and scoring it.

K generated images are labelled either by the generator's own part maps (the default
generator has them) or by index masks the user drew for chosen seeds (`labels: masks`;
layout in `linkstyle.measure.masks`). Cross-entropy, Adam, step LR; deterministic for a
seed. The segmenter is scored on held-out generated images against the generator's part
maps, where those exist (`iou_table`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.measure.features import UPSAMPLE_MODES, generator_maps, stack_features
from linkstyle.measure.masks import load_mask_folder
from linkstyle.measure.segmenter import FewShotSegmenter, _as_maps, segment_w


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    n_shots: int = 16  # labelled generated images the pipeline draws; training uses all it is given
    layers: Optional[tuple[int, ...]] = None  # indices into synthesis_features(w); None = every other
    channels: tuple[int, ...] = (128, 64, 64, 32)
    dilations: tuple[int, ...] = (1, 2, 1, 2, 1)  # one per conv: the hidden ones, then the output conv
    epochs: int = 150
    lr: float = 1e-3
    weight_decay: float = 1e-3
    lr_step: int = 50  # multiply the LR by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    batch_size: int = 4
    hflip: bool = False  # off by default: flipping swaps sides, wrong for left/right part labels
    upsample: str = "nearest"
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.n_shots >= 1, "n_shots", f"must be a positive integer, got {self.n_shots}")
        if self.layers is not None:
            check(len(self.layers) > 0, "layers", "must list at least one feature-map index, or be null for every other")
            check(all(i >= 0 for i in self.layers), "layers", f"must be indices >= 0, got {list(self.layers)}")
            check(len(set(self.layers)) == len(self.layers), "layers", f"lists an index twice: {list(self.layers)}")
        check(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "channels",
              f"must be a non-empty list of positive widths, got {list(self.channels)}")
        check(len(self.dilations) == len(self.channels) + 1, "dilations",
              f"must have one entry per conv, len(channels) + 1 = {len(self.channels) + 1}, got {len(self.dilations)}")
        check(all(d >= 1 for d in self.dilations), "dilations", f"must be positive, got {list(self.dilations)}")
        check(self.epochs >= 1, "epochs", f"must be a positive integer, got {self.epochs}")
        check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {self.weight_decay}")
        check(self.lr_step >= 1, "lr_step", f"must be a positive integer, got {self.lr_step}")
        check(0 < self.lr_gamma <= 1, "lr_gamma", f"must be in (0, 1], got {self.lr_gamma}")
        check(self.batch_size >= 1, "batch_size", f"must be a positive integer, got {self.batch_size}")
        check(self.upsample in UPSAMPLE_MODES, "upsample",
              f"must be one of {', '.join(UPSAMPLE_MODES)}, got '{self.upsample}'")
        check(self.seed >= 0, "seed", f"must be zero or positive, got {self.seed}")


def train_segmenter(features: torch.Tensor | Sequence[torch.Tensor], masks: Any, label_names: Sequence[str],
                    cfg: SegmenterConfig, progress: bool = True,
                    device: Optional[str | torch.device] = None) -> tuple[FewShotSegmenter, dict]:
    """Fit a segmenter to features and label masks [K, H, W].

    `features`: stacked [K, C, H, W], or the unstacked maps ([K, C_i, h_i, w_i] each, as
    `generator_maps` gives them; the cheaper path, same model).

    Cross-entropy, Adam, LR x lr_gamma every lr_step epochs. Deterministic on CPU for a
    given cfg.seed: the init runs under a forked, seeded global RNG (the caller's RNG is
    untouched) and one torch.Generator drives shuffling and flips. Trains on `device`
    (default: the features' device), moving one batch there at a time. history: loss and
    pixel_acc (training, per epoch), lr, n_train, seconds.
    """
    y = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).long()
    if y.ndim != 3:
        raise UserError(f"train_segmenter: masks must be [K, H, W], got {list(y.shape)}")
    xs, size = _as_maps(features, "train_segmenter", size=y.shape[-1])
    one = len(xs) == 1 and tuple(xs[0].shape[-2:]) == (size, size)
    x = xs[0] if one else stack_features(xs, size, list(range(len(xs))), cfg.upsample)
    if y.shape[0] != x.shape[0] or y.shape[1:] != x.shape[2:]:
        raise UserError(f"train_segmenter: masks must be [K, H, W] matching features [K, C, H, W] = {list(x.shape)}, "
                        f"got {list(y.shape)}")
    if len(x) == 0:
        raise UserError("train_segmenter: no labelled images; supply at least one mask (segmenter.n_shots)")
    n_labels = len(label_names)
    if y.min() < 0 or y.max() >= n_labels:
        found = sorted(set(torch.unique(y).tolist()) - set(range(n_labels)))
        raise UserError(f"train_segmenter: masks hold label ids {found[:10]} but there are {n_labels} labels "
                        f"(0..{n_labels - 1}); fix the masks or the label names")
    device = torch.device(device) if device is not None else x.device

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = FewShotSegmenter(x.shape[1], label_names, cfg.channels, cfg.dilations, cfg.layers, cfg.upsample)
    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
    model.in_mean.copy_(mean.cpu())
    model.in_std.copy_(var.sqrt().clamp_min(1e-6).cpu())  # constant channels would divide by zero
    model.to(device).train()
    del x  # the statistics were all the stacked copy was for

    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    k = len(y)
    history: dict[str, Any] = {"loss": [], "pixel_acc": [], "lr": [], "n_train": k}
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="train segmenter", unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        history["lr"].append(opt.param_groups[0]["lr"])
        order = torch.randperm(k, generator=g)
        flips = torch.rand(k, generator=g) < 0.5  # drawn even when unused, so hflip does not shift the RNG stream
        total, correct = 0.0, 0
        for s in range(0, k, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            xb, yb = [m[idx].to(device, torch.float32) for m in xs], y[idx].to(device)
            if cfg.hflip:  # flipping commutes with the upsampling, so each map flips on its own
                f = flips[idx].to(device)
                xb = [torch.where(f[:, None, None, None], m.flip(-1), m) for m in xb]
                yb = torch.where(f[:, None, None], yb.flip(-1), yb)
            logits = model(xb, size)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        sched.step()
        history["loss"].append(total / k)
        history["pixel_acc"].append(correct / y.numel())
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", acc=f"{history['pixel_acc'][-1]:.3f}")
    bar.close()
    history["seconds"] = time.perf_counter() - t0
    return model.eval(), history


# ---------------------------------------------------------------------------- scoring

def iou_table(pred: Any, true: Any, label_names: Sequence[str]) -> dict:
    """Per-label IoU over all pixels of all images, from one confusion matrix.

    A label absent from both prediction and truth in every image has no IoU (None) and
    is left out of mean_iou, so scoring never rewards or punishes parts nobody drew.
    Background (id 0) counts like any other label. Returns iou {name: value|None},
    mean_iou, pixel_accuracy, confusion [true, pred] counts, n_scored.
    """
    p, t = (np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a) for a in (pred, true))
    if p.shape != t.shape:
        raise UserError(f"iou_table: predicted masks {list(p.shape)} and true masks {list(t.shape)} differ in shape")
    n = len(label_names)
    p, t = p.astype(np.int64).ravel(), t.astype(np.int64).ravel()
    for name, a in (("predicted", p), ("true", t)):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise UserError(f"iou_table: {name} masks hold label ids outside 0..{n - 1} ({n} labels)")
    conf = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    iou = {name: (float(inter[i] / union[i]) if union[i] > 0 else None) for i, name in enumerate(label_names)}
    scored = [v for v in iou.values() if v is not None]
    return {
        "iou": iou,
        "mean_iou": float(np.mean(scored)) if scored else None,
        "pixel_accuracy": float(inter.sum() / max(1, t.size)),
        "confusion": conf.tolist(),
        "n_scored": len(scored),
    }


LABEL_SOURCES = ("generator", "masks")


@dataclass(frozen=True)
class FewShotConfig:
    """Options of stage `train_segmenter` besides the network's (`model`)."""

    psi: float = 0.7  # the truncation of the renders it will segment
    seed_base: int = 30_000_000
    n_eval: int = 200  # held-out generated images for the IoU
    labels: str = "generator"  # "generator": its own part maps; "masks": the user's mask folder
    model: SegmenterConfig = SegmenterConfig()  # the network and its training (train_segmenter.model)
    device: str = "auto"

    def __post_init__(self):
        check(0.0 < self.psi <= 1.0, "psi", "must be in (0, 1]")
        check(self.labels in LABEL_SOURCES, "labels", f"must be one of {', '.join(LABEL_SOURCES)}, got {self.labels!r}")
        check(self.n_eval >= 1, "n_eval", "must be >= 1")


def fit_segmenter(gen, cfg: FewShotConfig, masks_dir: str | os.PathLike, progress: bool = True):
    """Train on K labelled generated images; return (segmenter, metrics, per-epoch history).

    The labels are the generator's own part maps, or with `cfg.labels == "masks"` the
    masks in `masks_dir` (layout in `linkstyle.measure.masks`).
    """
    model_cfg = cfg.model
    if cfg.labels == "masks":
        seeds, classes, masks, names = load_mask_folder(masks_dir, gen.resolution, n_classes=gen.n_classes)
    else:
        if gen.part_names is None:
            raise UserError("train_segmenter.labels: this generator has no part maps of its own; label a few of "
                            f"its images in {masks_dir} and set train_segmenter.labels: masks")
        k = model_cfg.n_shots
        seeds = cfg.seed_base + np.arange(k)
        classes = np.arange(k) % gen.n_classes
        masks, names = None, list(gen.part_names)
    w = gen.sample_w(seeds, classes, cfg.psi)
    if masks is None:
        masks = gen.part_maps(w).cpu().numpy()
    maps = generator_maps(gen, w, model_cfg.layers)
    model, history = train_segmenter(maps, masks, names, model_cfg, progress=progress)
    metrics = {"n_shots": int(len(seeds)), "train_pixel_accuracy": history["pixel_acc"][-1]}
    if gen.part_names is not None and list(gen.part_names) == list(names):
        ev_seeds = cfg.seed_base + 1_000_000 + np.arange(cfg.n_eval)
        ev_w = gen.sample_w(ev_seeds, np.arange(cfg.n_eval) % gen.n_classes, cfg.psi)
        pred = segment_w(model, gen, ev_w)
        table = iou_table(pred, gen.part_maps(ev_w).cpu().numpy(), names)
        metrics.update(mean_iou=table["mean_iou"], iou=table["iou"], pixel_accuracy=table["pixel_accuracy"], n_eval=cfg.n_eval)
    return model, metrics, history
