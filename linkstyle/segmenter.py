"""Few-shot part segmenter on the generator's own synthesis features (METHOD.md section 5).

As in "Repurposing GANs for one-shot semantic part segmentation": the intermediate
synthesis feature maps of a handful of generated images are upsampled (nearest) to the
image size and concatenated per pixel; a small dilated CNN learns pixel labels from them.
New images are segmented from their own features, so no image encoder is ever needed.

Feature maps: `Generator.synthesis_features(w)` returns them coarse to fine. `layers`
picks indices into that list; None means every other map, starting at 0 (list[::2]),
i.e. one map per resolution for a StyleGAN-like synthesis (4, 8, 8, 16, 16, ...).

Network (reference size "S"): len(channels) hidden blocks of dilated conv3x3 -> GroupNorm
-> ReLU, then one more dilated conv3x3 to the label logits, so len(dilations) must be
len(channels) + 1 (dilations (1,2,1,2,1), channels (128,64,64,32)). GroupNorm rather than
BatchNorm: with a few images per step batch statistics are noisy, and per-image
normalisation makes outputs independent of the batch in training and inference alike.
The input is standardised per channel with statistics of the training features, kept as
buffers, because generator layers differ in scale by orders of magnitude.

User-supplied masks for a real generator (`load_mask_folder`) live in one folder:
  <folder>/labels.txt   one label name per line; line index = label id; line 0 = background
  <folder>/samples.csv  header `file,seed,class`: each mask file and the generator seed and
                        class id whose image it labels (the pipeline regenerates w and the
                        features from them, with the same truncation psi as the renders)
  <folder>/<file>       index-mask PNGs, single channel (8- or 16-bit grey, or palette),
                        pixel value = label id, size = generator resolution x resolution
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import check
from .errors import UserError

UPSAMPLE_MODES = ("nearest", "bilinear")


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


# ---------------------------------------------------------------------------- features

def resolve_layers(n_maps: int, layers: Optional[Sequence[int]]) -> list[int]:
    """Explicit indices: `layers`, or every other map (0, 2, 4, ...) when None."""
    if layers is None:
        return list(range(0, n_maps, 2))
    bad = [i for i in layers if not 0 <= int(i) < n_maps]
    if bad:
        raise UserError(f"segmenter.layers {list(layers)} has indices {bad} outside the generator's "
                        f"{n_maps} synthesis feature maps; use indices in [0, {n_maps})")
    return [int(i) for i in layers]


def stack_features(features: Sequence[torch.Tensor], size: int, layers: Optional[Sequence[int]] = None,
                   mode: str = "nearest", batch_size: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Upsample the chosen maps to size x size and concatenate them: [N, sum C_i, size, size].

    Written into one preallocated tensor `batch_size` images at a time, so the float32
    upsampled copies of all maps never coexist for the whole set (pass dtype=float16 to
    halve the result). Stays on the maps' device.
    """
    if mode not in UPSAMPLE_MODES:
        raise UserError(f"upsample mode must be one of {', '.join(UPSAMPLE_MODES)}, got '{mode}'")
    idx = resolve_layers(len(features), layers)
    maps = [features[i] for i in idx]
    if not maps or any(m.ndim != 4 for m in maps) or len({m.shape[0] for m in maps}) != 1:
        raise UserError(f"feature maps must be [N, C, h, w] with one N; got shapes {[list(m.shape) for m in maps]}")
    n = maps[0].shape[0]
    out = torch.empty(n, sum(m.shape[1] for m in maps), size, size, dtype=dtype, device=maps[0].device)
    kw = {} if mode == "nearest" else {"align_corners": False}
    for s in range(0, n, batch_size):
        c0 = 0
        for m in maps:
            x = m[s:s + batch_size].float()
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode=mode, **kw)
            out[s:s + batch_size, c0:c0 + m.shape[1]] = x
            c0 += m.shape[1]
    return out


def generator_maps(generator: Any, w: torch.Tensor, layers: Optional[Sequence[int]] = None,
                   batch_size: int = 64) -> list[torch.Tensor]:
    """The chosen synthesis maps of `generator` for w [N, w_dim], each at its own size.

    What `FewShotSegmenter` consumes without stacking: [N, C_i, h_i, w_i] float32 tensors
    (normal tensors, usable for training), computed `batch_size` w at a time.
    """
    if len(w) == 0:
        raise UserError("generator_maps needs at least one w")
    chunks = []
    for i in range(0, len(w), batch_size):
        maps = generator.synthesis_features(w[i:i + batch_size])
        chunks.append([maps[j].float() for j in resolve_layers(len(maps), layers)])
    return [torch.cat(c).clone() for c in zip(*chunks)]


def generator_features(generator: Any, w: torch.Tensor, layers: Optional[Sequence[int]] = None,
                       mode: str = "nearest", batch_size: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stacked features [N, C, R, R] of `generator` for w [N, w_dim], R = generator.resolution.

    Runs `synthesis_features` batch by batch, so only one batch's raw maps exist at a time.
    """
    parts = [stack_features(generator.synthesis_features(w[i:i + batch_size]), generator.resolution,
                            layers, mode, batch_size, dtype) for i in range(0, len(w), batch_size)]
    if not parts:
        raise UserError("generator_features needs at least one w")
    return torch.cat(parts).clone()  # clone outside inference mode: a normal tensor that training can use


# ---------------------------------------------------------------------------- network

def _upsampled_kernel(weight: torch.Tensor, k: int, dilation: tuple[int, int]) -> torch.Tensor:
    """Transposed-conv kernel [C_in, C_out, k + 2 r_y, k + 2 r_x] equal to nearest x k, then `weight`.

    Output pixel y of conv(upsample(x)) reads upsampled rows y + d (t - c) for taps t,
    i.e. coarse rows floor((y + d (t - c)) / k); a coarse pixel Y therefore reaches fine
    offsets j = y - kY in [-d c, k - 1 + d c] through the taps t with
    0 <= j + d (t - c) < k. Summing those taps' weights per offset gives the kernel.
    """
    _, _, kh, kw = weight.shape
    sel = []
    for n_taps, d in ((kh, dilation[0]), (kw, dilation[1])):
        c = n_taps // 2
        j = torch.arange(k + 2 * d * c) - d * c
        t = torch.arange(n_taps)
        pos = j[:, None] + d * (t[None, :] - c)
        sel.append(((pos >= 0) & (pos < k)).to(weight.dtype))  # [offsets, taps]
    return torch.einsum("ocyx,iy,jx->coij", weight, sel[0], sel[1])


class FewShotSegmenter(nn.Module):
    """Standardise per channel, dilated conv3x3 blocks, a dilated conv3x3 to n_labels logits."""

    def __init__(self, in_channels: int, label_names: Sequence[str], channels: Sequence[int] = (128, 64, 64, 32),
                 dilations: Sequence[int] = (1, 2, 1, 2, 1), layers: Optional[Sequence[int]] = None,
                 upsample: str = "nearest") -> None:
        super().__init__()
        if len(dilations) != len(channels) + 1:
            raise UserError(f"segmenter dilations need len(channels) + 1 = {len(channels) + 1} entries, "
                            f"got {len(dilations)}")
        if not 2 <= len(label_names) <= 256:  # uint8 masks hold ids 0..255
            raise UserError(f"a segmenter needs 2 to 256 labels (background plus parts), got {len(label_names)}")
        self.in_channels, self.n_labels = int(in_channels), len(label_names)
        self.label_names = tuple(str(n) for n in label_names)
        self.channels, self.dilations = tuple(int(c) for c in channels), tuple(int(d) for d in dilations)
        self.layers = None if layers is None else tuple(int(i) for i in layers)
        self.upsample = upsample
        self.register_buffer("in_mean", torch.zeros(self.in_channels))
        self.register_buffer("in_std", torch.ones(self.in_channels))
        blocks: list[nn.Module] = []
        c_in = self.in_channels
        for c, d in zip(self.channels, self.dilations):
            # padding = dilation keeps the size for a 3x3 kernel; the norm's shift makes a conv bias redundant
            blocks += [nn.Conv2d(c_in, c, 3, padding=d, dilation=d, bias=False),
                       nn.GroupNorm(math.gcd(c, 8), c), nn.ReLU(inplace=True)]
            c_in = c
        d = self.dilations[-1]
        blocks.append(nn.Conv2d(c_in, self.n_labels, 3, padding=d, dilation=d))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], size: Optional[int] = None) -> torch.Tensor:
        """Logits from stacked features [N, C, R, R], or from the unstacked maps (and `size` = R).

        The two give the same logits up to float rounding; the maps path is ~3x cheaper
        (see `_first_conv_maps`) and never builds the stacked tensor.
        """
        if isinstance(x, torch.Tensor):
            x = (x.to(self.in_mean.dtype) - self.in_mean[:, None, None]) / self.in_std[:, None, None]
            return self.net(x)
        if size is None:
            size = max(m.shape[-1] for m in x)
        return self.net[1:](self._first_conv_maps(list(x), int(size)))

    def _first_conv_maps(self, maps: list[torch.Tensor], size: int) -> torch.Tensor:
        """The first conv over upsample-and-concatenate(maps), without upsampling the inputs.

        Most input channels sit on coarse maps (320 of the default generator's 352), and
        the first conv is ~75% of the network's multiply-adds. Nearest upsampling by an
        integer factor k is a transposed conv with stride k and a k x k box kernel, so the
        upsample-then-conv of a coarse map is one transposed conv with stride k whose
        kernel is the box convolved with the conv's (k + 2r wide, r = the conv's reach):
        3x fewer multiply-adds in the first layer on the default generator, and the
        upsampled copies never exist. Exact up to float rounding (the tests compare it
        with the stacked path). Bilinear upsampling, or sizes that do not divide, take the
        plain path. Standardising commutes with the upsampling.
        """
        conv = self.net[0]
        weight = conv.weight
        o, _, kh, kw = weight.shape
        n = maps[0].shape[0]
        if sum(m.shape[1] for m in maps) != self.in_channels or any(m.shape[0] != n for m in maps):
            raise UserError(f"segmenter: maps with {sum(m.shape[1] for m in maps)} channels in all, "
                            f"shapes {[list(m.shape) for m in maps]}; it was trained on {self.in_channels} channels "
                            "from one batch; the generator or segmenter.layers changed, rerun dvc repro train_segmenter")
        kw_up = {} if self.upsample == "nearest" else {"align_corners": False}
        fine, out, c0 = [], None, 0
        for m in maps:
            c = m.shape[1]
            x = (m.to(weight.dtype) - self.in_mean[c0:c0 + c, None, None]) / self.in_std[c0:c0 + c, None, None]
            w = weight[:, c0:c0 + c]
            c0 += c
            h = x.shape[-1]
            if x.shape[-2:] == (size, size):
                fine.append((x, w))
            elif self.upsample == "nearest" and x.shape[-2] == h and size % h == 0:
                # channels_last: oneDNN's fast transposed conv on CPU (~2x the default layout)
                cl = torch.channels_last
                y = F.conv_transpose2d(x.contiguous(memory_format=cl),
                                       _upsampled_kernel(w, size // h, conv.dilation).contiguous(memory_format=cl),
                                       stride=size // h,
                                       padding=tuple(d * (k // 2) for d, k in zip(conv.dilation, (kh, kw))))
                out = y if out is None else out + y
            else:
                fine.append((F.interpolate(x, size=(size, size), mode=self.upsample, **kw_up), w))
        if fine:
            y = F.conv2d(torch.cat([x for x, _ in fine], 1), torch.cat([w for _, w in fine], 1),
                         padding=conv.padding, dilation=conv.dilation)
            out = y if out is None else out + y
        return out

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "label_names": list(self.label_names), "channels": list(self.channels),
                "dilations": list(self.dilations), "layers": None if self.layers is None else list(self.layers),
                "upsample": self.upsample}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_features(features: Any, where: str) -> torch.Tensor:
    x = torch.as_tensor(features)
    if x.ndim != 4 or not x.is_floating_point():
        raise UserError(f"{where}: features must be a float [N, C, H, W] tensor, got {x.dtype} {list(x.shape)}")
    return x


def _as_maps(features: Any, where: str, size: Optional[int] = None) -> tuple[list[torch.Tensor], int]:
    """(list of [N, C_i, h_i, w_i] maps, output size) from stacked features or a list of maps."""
    if isinstance(features, (list, tuple)):
        if not features:
            raise UserError(f"{where}: got an empty list of feature maps")
        xs = [_check_features(m, where) for m in features]
        if len({m.shape[0] for m in xs}) != 1:
            raise UserError(f"{where}: feature maps hold different numbers of images: {[m.shape[0] for m in xs]}")
    else:
        xs = [_check_features(features, where)]
    size = int(size) if size is not None else max(m.shape[-1] for m in xs)
    if any(m.shape[-1] > size or m.shape[-2] > size for m in xs):
        raise UserError(f"{where}: feature maps {[list(m.shape) for m in xs]} are larger than the output size {size}")
    return xs, size


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
    x = stack_features(xs, size, list(range(len(xs))), cfg.upsample) if len(xs) > 1 else xs[0]
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


def segment(model: FewShotSegmenter, features: Any, batch_size: int = 16, size: Optional[int] = None) -> np.ndarray:
    """Label masks uint8 [N, H, W] (argmax of the logits), batched on the model's device.

    `features`: stacked [N, C, H, W], or the unstacked maps with `size` = H (default: the
    largest map's). GroupNorm normalises each image on its own, so the result does not
    depend on batch_size.
    """
    xs, size = _as_maps(features, "segment", size)
    n_ch = sum(m.shape[1] for m in xs)
    if n_ch != model.in_channels:
        raise UserError(f"segment: features have {n_ch} channels but the segmenter was trained on "
                        f"{model.in_channels}; the generator or segmenter.layers changed, rerun dvc repro train_segmenter")
    model.eval()
    device = _device(model)
    out = []
    with torch.inference_mode():
        for s in range(0, len(xs[0]), batch_size):
            logits = model([m[s:s + batch_size].to(device) for m in xs], size)
            out.append(logits.argmax(1).to(torch.uint8).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, size, size), dtype=np.uint8)


def segment_w(model: FewShotSegmenter, generator: Any, w: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Label masks uint8 [N, R, R] of the generator's images for w, from its own maps, batch by batch."""
    out = [segment(model, generator_maps(generator, w[i:i + batch_size], model.layers, batch_size), batch_size,
                   generator.resolution) for i in range(0, len(w), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, generator.resolution, generator.resolution), dtype=np.uint8)


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


# ---------------------------------------------------------------------------- persistence

def save_segmenter(path: str | os.PathLike, model: FewShotSegmenter, generator_fingerprint: str,
                   layers: Optional[Sequence[int]], info: Optional[dict] = None) -> None:
    """Write the segmenter with the generator fingerprint and feature layers it was trained on."""
    layers = None if layers is None else tuple(int(i) for i in layers)
    if layers != model.layers:
        raise ValueError(f"save_segmenter: layers {layers} differ from the model's training layers {model.layers}")
    plain = {k: v for k, v in (info or {}).items() if isinstance(v, (int, float, str, bool, list, type(None)))}
    save_checkpoint(path, "segmenter", model.config(), model.state_dict(),
                    generator_fingerprint=str(generator_fingerprint), info=plain)


def load_segmenter(path: str | os.PathLike, expected_generator_fingerprint: Optional[str] = None,
                   device: str | torch.device = "cpu") -> FewShotSegmenter:
    """Rebuild a saved segmenter in eval mode; `.generator_fingerprint` and `.info` are set."""
    payload = load_checkpoint(path, "segmenter")
    fp = payload.get("generator_fingerprint")
    if expected_generator_fingerprint is not None and fp != expected_generator_fingerprint:
        raise UserError(f"{path}: segmenter was trained for generator {fp} but the generator is "
                        f"{expected_generator_fingerprint}; rerun train_segmenter (dvc repro train_segmenter)")
    cfg = payload["config"]
    try:
        model = FewShotSegmenter(cfg["in_channels"], cfg["label_names"], cfg["channels"], cfg["dilations"],
                                 cfg["layers"], cfg["upsample"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path}: segmenter checkpoint does not match its config ({first}); "
                        f"rerun train_segmenter (dvc repro train_segmenter)") from None
    model.generator_fingerprint = fp
    model.info = payload.get("info", {})
    return model.to(device).eval()


# ---------------------------------------------------------------------------- user masks

def read_label_names(path: str | os.PathLike) -> list[str]:
    """labels.txt: one name per line, line index = label id, line 0 = background."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label names file not found; write one label name per line, background first")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline or blank lines at the end are not labels
    names = [ln.strip() for ln in lines]
    if len(names) < 2:
        raise UserError(f"{path}: needs at least 2 label names (background, then parts), found {len(names)}")
    if len(names) > 256:
        raise UserError(f"{path}: at most 256 labels fit 8-bit masks, found {len(names)}")
    if "" in names:
        raise UserError(f"{path}: line {names.index('') + 1} is blank; every line up to the last must name a label")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{path}: label names {dup} appear more than once; give each label a unique name")
    return names


def _read_mask(path: Path, resolution: int, n_labels: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: mask listed in samples.csv not found; add the file or remove its row")
    try:
        with Image.open(path) as im:
            mode, a = im.mode, np.array(im)
    except Exception as e:  # PIL raises many types for foreign or truncated files
        raise UserError(f"{path}: unreadable mask image ({type(e).__name__}); save it as a single-channel PNG") from None
    if a.ndim != 2 or mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise UserError(f"{path}: mask must be a single-channel index image (8/16-bit grey or palette), got mode {mode}; "
                        f"store label ids as pixel values, not colours")
    if a.shape != (resolution, resolution):
        raise UserError(f"{path}: mask is {a.shape[1]}x{a.shape[0]} but the generator resolution is "
                        f"{resolution}x{resolution}; resize it (nearest) to {resolution}x{resolution}")
    ids = np.unique(a.astype(np.int64))
    bad = ids[(ids < 0) | (ids >= n_labels)]
    if bad.size:
        raise UserError(f"{path}: mask holds label ids {bad.tolist()[:10]} but labels.txt names {n_labels} labels "
                        f"(ids 0..{n_labels - 1}); fix the mask or add the labels")
    return a.astype(np.uint8)


def load_mask_folder(folder: str | os.PathLike, resolution: int, labels_file: Optional[str | os.PathLike] = None,
                     n_classes: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a mask folder (layout in the module docstring).

    Returns seeds int64 [K], classes int64 [K], masks uint8 [K, R, R], label_names.
    labels_file defaults to <folder>/labels.txt; n_classes, when given, bounds class ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: mask folder not found; create it (labels.txt, samples.csv, masks) "
                        f"or fix the path in params.yaml")
    names = read_label_names(labels_file if labels_file is not None else folder / "labels.txt")
    table = folder / "samples.csv"
    if not table.is_file():
        raise UserError(f"{table}: not found; list the masks with a header line 'file,seed,class'")
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = list(reader)
    if not {"file", "seed", "class"} <= set(header):
        raise UserError(f"{table}: header must have columns file,seed,class, got {','.join(header) or 'nothing'}")
    if not rows:
        raise UserError(f"{table}: lists no masks; add one row per mask (file,seed,class)")
    seeds, classes, masks = [], [], []
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}  # None: extra cells
        try:
            seed, cls = int(row["seed"]), int(row["class"])
        except ValueError:
            raise UserError(f"{table}: line {line}: seed and class must be integers, "
                            f"got '{row['seed']}', '{row['class']}'") from None
        if not 0 <= seed < 2**32:
            raise UserError(f"{table}: line {line}: seed {seed} must be in [0, 2**32)")
        if cls < 0 or (n_classes is not None and cls >= n_classes):
            bound = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
            raise UserError(f"{table}: line {line}: class {cls} is not a generator class id ({bound})")
        if not row["file"]:
            raise UserError(f"{table}: line {line}: empty file name")
        seeds.append(seed)
        classes.append(cls)
        masks.append(_read_mask(folder / row["file"], resolution, len(names)))
    return np.array(seeds, dtype=np.int64), np.array(classes, dtype=np.int64), np.stack(masks), names
