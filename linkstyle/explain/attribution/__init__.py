"""Feature visualisation baselines beside the link (docs/method.md section 11): FeatureVis's
three classes of methods (Grün et al. 2016), for a unit of R or a class logit, batched,
on an attribution-ready copy of any classifier the model seam loads.

    from linkstyle.models.attribution_ready import attribution_ready
    from linkstyle.explain.attribution import make_method

    net = attribution_ready(clf, "units", image_resolution=gen.resolution)
    maps = make_method("guided_backprop", net).attribute(images01, targets=[17, 17, 40])
    maps.heat  # [3, H, W]

Methods (`METHODS`), one per module, each a subclass of `Attribution`:
- input modification: `occlusion` (Occlusion);
- deconvolutional: `deconvnet` (Deconvnet), `guided_backprop` (GuidedBackprop),
  `lrp` (LRPEpsilon, epsilon rule; lrp.py lists the rule of each layer);
- input reconstruction: `am_pixel` (PixelMaximisation: jitter, blur, frequency penalty,
  range clamp), `am_latent` (LatentMaximisation: optimise w so the render maximises the
  output; needs `generator=`).
Captum provides the first four; activation maximisation is written here. `scores` holds
the ground-truth scores (part mass, pointing game, rank similarity), `study` the stage
attribute_units and `sanity` the model-randomisation test.
"""

from linkstyle.explain.attribution.base import METHODS, Attribution, Maps, heat, make_method, method_class, pair_seed
from linkstyle.explain.attribution.occlusion import Occlusion
from linkstyle.explain.attribution.deconvnet import Deconvnet
from linkstyle.explain.attribution.guided_backprop import GuidedBackprop
from linkstyle.explain.attribution.lrp import LRPEpsilon
from linkstyle.explain.attribution.am_pixel import PixelMaximisation
from linkstyle.explain.attribution.am_latent import LatentMaximisation

__all__ = ["METHODS", "Attribution", "Maps", "heat", "make_method", "method_class", "pair_seed", "Occlusion",
           "Deconvnet", "GuidedBackprop", "LRPEpsilon", "PixelMaximisation", "LatentMaximisation"]
