"""The segmenter's input: the generator's own intermediate synthesis feature maps.

As in "Repurposing GANs for one-shot semantic part segmentation", the maps of a render
are its per-pixel features: `generator_maps` collects the chosen maps (each at its own
size), `stack_features` upsamples them to the image size and concatenates them.
`layers` picks indices into `Generator.synthesis_features(w)` (coarse to fine); None
means every other map from 0 (one per resolution for a StyleGAN-like synthesis).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from linkstyle.core.errors import UserError

UPSAMPLE_MODES = ("nearest", "bilinear")


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
