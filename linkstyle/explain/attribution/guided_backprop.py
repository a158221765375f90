"""Guided backpropagation (Springenberg et al. 2015), a deconvolutional method, through Captum.

The output's gradient with, at each ReLU, both the forward mask and a ReLU on the
incoming gradient (Captum's `GuidedBackprop`): only positive signals that passed forward
come back. Needs module ReLUs used once, not in place (the model seam's copy).
"""

from __future__ import annotations

import numpy as np
import torch

from linkstyle.explain.attribution.base import Attribution, Maps, register


@register
class GuidedBackprop(Attribution):
    name = "guided_backprop"
    family = "deconvolutional"
    heat_rule = "magnitude"

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        return self._maps(CaptumGuidedBackprop(self.net).attribute(inputs.clone(), target=targets))
