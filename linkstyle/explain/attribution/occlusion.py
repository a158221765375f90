"""Occlusion (Zeiler & Fergus 2014), FeatureVis's input modification class, through Captum.

A grey square of `patch` pixels slides over the image with step `stride`; the map at a
pixel is the mean drop of the output over the placements that cover it (Captum's
`Occlusion`, all three channels occluded together). Positive = hiding the pixel lowers
the unit: evidence for it. `grid` evaluates each occluded image once for all targets
(Captum accepts a forward function with several outputs per example), so the cost does
not grow with the number of units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from linkstyle.core.config import check
from linkstyle.explain.attribution.base import Attribution, Maps, register


@register
class Occlusion(Attribution):
    name = "occlusion"
    family = "input modification"
    heat_rule = "signed"

    @dataclass(frozen=True)
    class Options:
        patch: int = 6  # side of the occluding square, pixels
        stride: int = 2  # step between placements, pixels
        baseline: float = 0.5  # grey level of the square, in [0, 1]
        perturbations_per_eval: int = 16  # occluded copies per forward pass (speed only)

        def __post_init__(self):
            check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")
            check(1 <= self.stride <= self.patch, "stride", f"must be in [1, patch] so every pixel is covered, got {self.stride}")
            check(0.0 <= self.baseline <= 1.0, "baseline", f"must be in [0, 1], got {self.baseline}")
            check(self.perturbations_per_eval >= 1, "perturbations_per_eval", "must be >= 1")

    def _check_cover(self) -> None:
        from linkstyle.core.errors import UserError

        r, p, s = self.net.image_resolution, self.opts.patch, self.opts.stride
        if p > r or (r - p) % s:
            raise UserError(f"occlusion: patch {p} and stride {s} leave the image border ({r} px) uncovered; "
                            f"choose them so that (resolution - patch) is a multiple of stride")

    def _run(self, x: torch.Tensor, forward, target) -> torch.Tensor:
        from captum.attr import Occlusion as CaptumOcclusion

        self._check_cover()
        p, s = self.opts.patch, self.opts.stride
        with torch.no_grad():
            return CaptumOcclusion(forward).attribute(x, sliding_window_shapes=(3, p, p), strides=(3, s, s),
                                                      baselines=self.opts.baseline, target=target,
                                                      perturbations_per_eval=self.opts.perturbations_per_eval)

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        # Captum's output per pair; occlusion runs one image per target at a time, so any
        # batch gives each pair the same evaluations.
        return self._maps(self._run(inputs, self.net, targets))

    def grid(self, inputs: torch.Tensor, targets, seeds) -> Maps:
        x = self.check_inputs(inputs)
        t = self.check_targets(targets)
        U, S = len(t), len(x)
        sel = t.to(self.device)
        out, per_batch = [], max(1, self.batch_size // U)  # batch_size counts (image, target) pairs
        for i in range(0, S, per_batch):
            xb = x[i:i + per_batch].to(self.device)
            a = self._run(xb, lambda z: self.net(z)[:, sel], None)  # [n * U, 3, H, W], output (n, u) row-major
            out.append(a.reshape(len(xb), U, *a.shape[1:]).transpose(0, 1).cpu())
        return self._maps(torch.cat(out, dim=1).reshape(U * S, *x.shape[1:])).reshape(U, S)
