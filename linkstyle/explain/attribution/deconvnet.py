"""Deconvnet (Zeiler & Fergus 2014), one of FeatureVis's deconvolutional methods, through Captum.

The output's gradient is sent back through the network, but at each ReLU the backward
pass applies a ReLU to the incoming gradient instead of the forward pass's mask
(Captum's `Deconvolution`). Needs every ReLU a module used once, not in place: the
attribution-ready copy of the model seam guarantees it.
"""

from __future__ import annotations

import numpy as np
import torch

from linkstyle.explain.attribution.base import Attribution, Maps, register


@register
class Deconvnet(Attribution):
    name = "deconvnet"
    family = "deconvolutional"
    heat_rule = "magnitude"

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        from captum.attr import Deconvolution

        return self._maps(Deconvolution(self.net).attribute(inputs.clone(), target=targets))
