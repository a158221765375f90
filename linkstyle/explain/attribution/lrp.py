"""Layer-wise relevance propagation with the epsilon rule (Bach et al. 2015), through Captum.

The output's value is the relevance at the top; each layer hands the relevance of its
outputs to its inputs in proportion to their contributions z_ij = x_i w_ij,
R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j (Captum's `LRP`). Rules, by layer of the
model seam's attribution-ready copy (`linkstyle.models.attribution_ready`):

- Conv2d (every BatchNorm folded into the conv before it), Linear, the sums of residual
  branches (`Addition_Module`), average and max pooling, the resize to the classifier's
  input: epsilon rule with `epsilon` (FeatureVis used 0.001); the first convolution too,
  on the normalised pixels (no special input-layer rule);
- ReLU: relevance passes unchanged (Captum's rule for non-linearities);
- the input normalisation (x - mean) / std and Identity modules: identity rule, so the
  relevance of a normalised pixel is the relevance of that pixel;
- a BatchNorm not preceded by a convolution: epsilon rule (Captum's default).

Relevance is conserved up to what the epsilon and the biases absorb; the sum over the
pixels is about the output's value. Captum deletes the rules after each call, so they
are attached again before every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from linkstyle.core.config import check
from linkstyle.explain.attribution.base import Attribution, Maps, register
from linkstyle.models.attribution_ready import Normalize


def attach_rules(net: nn.Module, epsilon: float) -> None:
    """Set `module.rule` on every leaf module of the attribution-ready copy (see above)."""
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    for m in net.modules():
        if len(list(m.children())):
            continue
        if isinstance(m, (Normalize, nn.Identity)):
            m.rule = IdentityRule()
        elif isinstance(m, (nn.ReLU, nn.Dropout, nn.Tanh)):
            if hasattr(m, "rule"):  # Captum gives these its own pass-through; a set rule would break it
                del m.rule
        else:
            m.rule = EpsilonRule(epsilon)


@register
class LRPEpsilon(Attribution):
    name = "lrp"
    family = "deconvolutional"
    heat_rule = "signed"

    @dataclass(frozen=True)
    class Options:
        epsilon: float = 0.001  # stabiliser of every epsilon rule

        def __post_init__(self):
            check(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")

    def _batch(self, inputs: torch.Tensor, targets: torch.Tensor, seeds: np.ndarray) -> Maps:
        from captum.attr import LRP

        attach_rules(self.net, self.opts.epsilon)
        return self._maps(LRP(self.net).attribute(inputs.clone(), target=targets))
