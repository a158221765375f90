"""Activation maximisation in pixel space: FeatureVis's input reconstruction class.

Gradient ascent on the image for the output (a unit of R or a class logit), with the
usual regularisers of Yosinski et al. (2015) and Mahendran & Vedaldi (2016). The image is
start + delta and the regularisers act on the change delta, so what stays unchanged is
what the output does not need (a blur of the whole image would otherwise show up as a
change at every edge):
- jitter: each step sees the image rolled by a random shift of up to `jitter` pixels
  (drawn from the pair's own seed), so the result cannot rely on exact pixel positions;
- blur: every `blur_every` steps the change is blurred by a Gaussian of `blur_sigma`
  pixels, which damps the high frequencies that gradient ascent otherwise fills with noise;
- frequency penalty: `tv_weight` times the squared total variation of the change;
- range clamp: the image is kept in [0, 1] after every step.
Each step moves the change by `lr` times the gradient divided by its largest entry in
that image: plain gradient ascent with a per-image step size, so one pair's result does not
depend on the others in its batch, and pixels move in proportion to their gradient (Adam
would move every pixel with any gradient by about `lr`, and the change would no longer
show where the output is sensitive). The start is the image itself (`init: image`, so the result
stays comparable with the image's part map) or seeded grey noise (`init: noise`, the
classic visualisation). The map is the change, result - start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from linkstyle.core.config import check
from linkstyle.explain.attribution.base import Attribution, Maps, register

INITS = ("image", "noise")


def roll(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each image [N, C, H, W] by its own (dy, dx) in `shifts` [N, 2], batched, circular."""
    n, _, h, w = x.shape
    iy = (torch.arange(h, device=x.device)[None] - shifts[:, :1]) % h  # [N, H]
    ix = (torch.arange(w, device=x.device)[None] - shifts[:, 1:]) % w  # [N, W]
    rows = x.gather(2, iy[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return rows.gather(3, ix[:, None, None, :].expand(-1, x.shape[1], h, -1))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel, reflecting at the border."""
    radius = max(1, int(math.ceil(2.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean squared difference of neighbouring pixels [N]."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean((1, 2, 3)) + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean((1, 2, 3))


@register
class PixelMaximisation(Attribution):
    name = "am_pixel"
    family = "input reconstruction"
    heat_rule = "magnitude"

    @dataclass(frozen=True)
    class Options:
        steps: int = 48
        lr: float = 0.02  # largest change per step, in [0, 1] pixel units
        jitter: int = 2  # largest random shift per step, pixels
        blur_sigma: float = 0.5  # pixels; 0 = no blur
        blur_every: int = 4  # steps between blurs
        tv_weight: float = 0.0  # frequency penalty (squared total variation of the change)
        init: str = "image"  # image or noise

        def __post_init__(self):
            check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
            check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
            check(self.jitter >= 0, "jitter", f"must be >= 0, got {self.jitter}")
            check(self.blur_sigma >= 0, "blur_sigma", f"must be >= 0, got {self.blur_sigma}")
            check(self.blur_every >= 1, "blur_every", f"must be >= 1, got {self.blur_every}")
            check(self.tv_weight >= 0, "tv_weight", f"must be >= 0, got {self.tv_weight}")
            check(self.init in INITS, "init", f"must be one of {', '.join(INITS)}, got {self.init!r}")

    def _start(self, inputs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        if self.opts.init == "image":
            return inputs.detach().clone()
        noise = torch.stack([torch.rand(inputs.shape[1:], generator=g) for g in gens])
        return (0.5 + 0.2 * (noise - 0.5)).to(inputs.device)

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        o = self.opts
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]  # one RNG per pair
        start = self._start(inputs, gens)
        shifts = torch.stack([torch.randint(-o.jitter, o.jitter + 1, (o.steps, 2), generator=g) for g in gens])
        shifts = shifts.to(inputs.device)  # [N, steps, 2]
        delta = torch.zeros_like(start, requires_grad=True)
        idx = targets[:, None]
        for k in range(o.steps):
            x = start + delta
            seen = roll(x, shifts[:, k]) if o.jitter else x
            objective = self.net(seen).gather(1, idx)[:, 0].sum()
            if o.tv_weight:
                objective = objective - o.tv_weight * total_variation(delta).sum()
            (grad,) = torch.autograd.grad(objective, [delta])
            with torch.no_grad():
                delta += o.lr * grad / grad.abs().amax((1, 2, 3), keepdim=True).clamp(min=1e-12)
                if o.blur_sigma > 0 and (k + 1) % o.blur_every == 0:
                    delta.copy_(gaussian_blur(delta, o.blur_sigma))
                delta.copy_((start + delta).clamp(0.0, 1.0) - start)
        result = (start + delta).detach()
        return self._maps(result - start, start=start, result=result)
