"""Image conversions between the generator's float range and stored 8-bit images.

Renders are float [N, 3, H, W] in [-1, 1] (StyleGAN's convention); stored images and
figures are uint8 [N, H, W, 3]. Every conversion in the package goes through here, so
a render, its saved PNG and the classifier's view of either agree.
"""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [N, 3, H, W] -> uint8 [N, H, W, 3], StyleGAN's (x + 1) * 127.5 rule."""
    x = (images.permute(0, 2, 3, 1) + 1.0) * 127.5
    return x.round().clamp(0, 255).to(torch.uint8)


def to_signed(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (the inverse of `to_uint8`)."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_unit(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1], on `device` (moved as uint8: 4x less to copy)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
