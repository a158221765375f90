"""Few-shot part segmenter on the generator's own synthesis features (docs/method.md section 5).

As in "Repurposing GANs for one-shot semantic part segmentation": the intermediate
synthesis feature maps of a handful of generated images are upsampled (nearest) to the
image size and concatenated per pixel; a small dilated CNN learns pixel labels from them.
New images are segmented from their own features, so no image encoder is ever needed.

Network (reference size "S"): len(channels) hidden blocks of dilated conv3x3 -> GroupNorm
-> ReLU, then one more dilated conv3x3 to the label logits, so len(dilations) must be
len(channels) + 1 (dilations (1,2,1,2,1), channels (128,64,64,32)). GroupNorm rather than
BatchNorm: with a few images per step batch statistics are noisy, and per-image
normalisation makes outputs independent of the batch in training and inference alike.
The input is standardised per channel with statistics of the training features, kept as
buffers, because generator layers differ in scale by orders of magnitude.

Inputs come from `linkstyle.measure.features`; training is in `segmenter_training`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from linkstyle.core.checkpoint import load_module, save_module
from linkstyle.core.errors import UserError
from linkstyle.core.io import plain
from linkstyle.core.runtime import module_device
from linkstyle.measure.features import generator_maps

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

    arch = "fewshot"

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

    @classmethod
    def from_config(cls, d: dict) -> "FewShotSegmenter":
        return cls(d["in_channels"], d["label_names"], d["channels"], d["dilations"], d["layers"], d["upsample"])

    def config(self) -> dict:
        return {"arch": self.arch, "in_channels": self.in_channels, "label_names": list(self.label_names), "channels": list(self.channels),
                "dilations": list(self.dilations), "layers": None if self.layers is None else list(self.layers),
                "upsample": self.upsample}


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
    device = module_device(model)
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


# ---------------------------------------------------------------------------- persistence

def save_segmenter(path: str | os.PathLike, model: FewShotSegmenter, generator_fingerprint: str,
                   info: Optional[dict] = None) -> None:
    """Write the segmenter with the fingerprint of the generator whose features it reads."""
    save_module(path, "segmenter", model, generator_fingerprint=str(generator_fingerprint), info=plain(info or {}))


def load_segmenter(path: str | os.PathLike, expected_generator_fingerprint: Optional[str] = None,
                   device: str | torch.device = "cpu") -> FewShotSegmenter:
    """Rebuild a saved segmenter in eval mode; `.generator_fingerprint` and `.info` are set."""
    model, payload = load_module(path, "segmenter", {FewShotSegmenter.arch: FewShotSegmenter},
                                 producer="train_segmenter", device=device)
    fp = payload.get("generator_fingerprint")
    if expected_generator_fingerprint is not None and fp != expected_generator_fingerprint:
        raise UserError(f"{path}: segmenter was trained for generator {fp} but the generator is "
                        f"{expected_generator_fingerprint}; rerun train_segmenter (dvc repro train_segmenter)")
    model.generator_fingerprint = fp
    model.info = payload.get("info", {})
    return model
