"""Activation maximisation in the generator's latent space (the "deep generator network"
prior of Nguyen et al. 2016): FeatureVis's input reconstruction class with the image
constrained to what the generator can render.

Gradient ascent on w for the output of the render: maximise f(G(w)) - l2 ||w - w0||^2 / w_dim
with Adam from the start w0 (a test seed's latent), so the result is an image of the
generator's world, with the generator's own part map. The map is the per-pixel change
between the renders of w0 and of the result, the same quantity as the link's map
(first and last render of a tuned unit): the two differ in how w moves (the classifier's
gradient here, the link from a changed r there).

Needs gradients through the generator; the Generator interface renders under
inference mode, so this calls its synthesis network (`_synthesis`) directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.explain.attribution.base import Attribution, Maps, register


@register
class LatentMaximisation(Attribution):
    name = "am_latent"
    family = "input reconstruction"
    heat_rule = "magnitude"
    input_kind = "w"

    @dataclass(frozen=True)
    class Options:
        steps: int = 24
        lr: float = 0.05  # Adam step in w
        l2: float = 0.01  # pull toward the start w0 (per w dimension)

        def __post_init__(self):
            check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
            check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
            check(self.l2 >= 0, "l2", f"must be >= 0, got {self.l2}")

    def __init__(self, net, options=None, batch_size: int = 64, progress: bool = False, generator=None, **context):
        super().__init__(net, options, batch_size, progress)
        if generator is None:
            raise UserError("am_latent: needs the generator (make_method(..., generator=gen))")
        if generator.resolution != net.image_resolution:
            raise UserError(f"am_latent: the generator renders {generator.resolution} px but the attribution-ready "
                            f"classifier was built for {net.image_resolution} px; build it with image_resolution="
                            f"{generator.resolution}")
        self.gen = generator

    def check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(inputs, dtype=torch.float32)
        if w.ndim != 2 or w.shape[1] != self.gen.w_dim:
            raise UserError(f"am_latent: start latents must be [N, {self.gen.w_dim}], got shape {list(w.shape)}")
        return w

    def _render(self, w: torch.Tensor) -> torch.Tensor:
        img = self.gen._synthesis(w, False)[0]  # differentiable; Generator.synthesize is not
        return ((img + 1.0) * 0.5).clamp(0.0, 1.0)  # as Classifier.to_unit

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        o = self.opts
        w0 = inputs.to(self.gen.device)
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=o.lr)
        idx = targets[:, None].to(self.device)
        for _ in range(o.steps):
            objective = self.net(self._render(w).to(self.device)).gather(1, idx)[:, 0].sum()
            if o.l2:
                objective = objective - o.l2 * ((w - w0) ** 2).mean(1).sum()
            (grad,) = torch.autograd.grad(objective, [w])
            w.grad = -grad
            opt.step()
        w = w.detach()
        start, parts_start = self.gen.render(w0)
        result, parts_result = self.gen.render(w)
        if parts_start is None:
            parts_start = parts_result = torch.zeros(len(w), *start.shape[-2:], dtype=torch.uint8)
        start, result = ((start + 1) * 0.5).clamp(0, 1), ((result + 1) * 0.5).clamp(0, 1)
        return self._maps(result - start, start=start, result=result, parts_start=parts_start,
                          parts_result=parts_result, w=w)
