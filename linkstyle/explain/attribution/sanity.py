"""The model-randomisation test of Adebayo et al. (2018), for every method and the link.

The classifier's layers are re-initialised one more at a time from the top
(`linkstyle.models.attribution_ready.cascade_layers` / `randomised`; each layer draws
its weights from its own seed, so a layer randomised at step k has the same weights at
every later step). After each step every method's maps of a few (unit, seed) pairs are
computed again and compared with the trained model's by Spearman's rank correlation of
|heat|. A map that explains the trained model must change when its weights go: a method
whose maps stay similar with every layer random is flagged.

The link is tested the same way: its maps come from a link fitted to the classifier's r,
so for each step the link is fitted again (the same kind and options as the pipeline's
link) on `link_pairs` training pairs re-encoded by the randomised classifier, and the
units are tuned with it as in tune_units (unit set to its min and max over the seeds,
first and last render). Step 0 fits it on the same pairs with the trained classifier,
so the comparison differs in the classifier only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core.config import check
from linkstyle.explain.attribution.base import heat as heat_of
from linkstyle.link.fit import LINK_KINDS
from linkstyle.explain.attribution.scores import rank_similarity
from linkstyle.models.attribution_ready import attribution_ready, cascade_layers, randomised


def _check_fit_link(self) -> None:
    """`kinds` and `use` name links that exist and are fitted. dvc.yaml turns `use` into the path
    data/links/<use>.pt, so an unknown kind would otherwise surface as DVC's missing-file error."""
    known = ", ".join(LINK_KINDS)
    for kind in self.kinds:
        check(kind in LINK_KINDS, "kinds", f"names an unknown link kind {kind!r}; known kinds are {known}")
    check(self.use in LINK_KINDS, "use", f"is an unknown link kind {self.use!r}; known kinds are {known}")
    check(self.use in self.kinds, "use", f"{self.use!r} is not in fit_link.kinds {list(self.kinds)}, so no stage "
          "fits it; add it to kinds or use one of them")


# params.yaml `fit_link` as a whole: the refit needs the options of whichever kind the link file
# names, and a stage can depend only on sections it reads by a fixed name (tests/test_dvc_deps.py).
FitLinkParams = dataclasses.make_dataclass(
    "FitLinkParams",
    [("kinds", tuple[str, ...], dataclasses.field(default=tuple(LINK_KINDS))), ("use", str, dataclasses.field(default="ridge"))]
    + [(kind, spec.config, dataclasses.field(default_factory=spec.config)) for kind, spec in LINK_KINDS.items()],
    namespace={"__post_init__": _check_fit_link}, frozen=True)


class LinkRefit:
    """Fits the link on re-encoded training renders and tunes units with it, per classifier."""

    def __init__(self, gen, kind: str, fit_cfg: Any, train_w: np.ndarray, seed_images: torch.Tensor,
                 batch_size: int = 256) -> None:
        self.gen, self.kind, self.fit_cfg, self.batch_size = gen, kind, fit_cfg, batch_size
        self.train_w = np.asarray(train_w, dtype=np.float32)
        self.train_images = gen.synthesize(torch.as_tensor(self.train_w), batch_size)  # [-1, 1], rendered once
        self.seed_images = seed_images  # [-1, 1] renders of the test seeds (the units' range)

    def heat(self, clf, units: np.ndarray, seed_pos: np.ndarray) -> np.ndarray:
        """[P, H, W]: |last - first| render of unit units[p] tuned on seed seed_pos[p], with a
        link fitted to `clf`'s r; the unit's values span its [min, max] over all the seeds."""
        from linkstyle.link.fit import fit_link

        r_train, _ = clf.represent(self.train_images, self.batch_size)
        link, _ = fit_link(self.kind, r_train.numpy(), self.train_w, self.fit_cfg, device=self.gen.device, progress=False)
        r_seeds, _ = clf.represent(self.seed_images, self.batch_size)
        u = torch.as_tensor(np.asarray(units, dtype=np.int64))
        lo, hi = r_seeds[:, u].min(0).values, r_seeds[:, u].max(0).values  # [P]
        r = r_seeds[torch.as_tensor(np.asarray(seed_pos, dtype=np.int64))][:, None, :].repeat(1, 2, 1)  # [P, 2, R]
        r.scatter_(2, u[:, None, None].expand(-1, 2, 1), torch.stack([lo, hi], 1)[:, :, None])
        with torch.no_grad():
            w = link(r.reshape(-1, r.shape[-1]).to(self.gen.device))
        img = ((self.gen.synthesize(w, self.batch_size) + 1) * 0.5).clamp(0, 1).cpu()
        img = img.reshape(len(u), 2, *img.shape[1:])
        return heat_of(img[:, 1] - img[:, 0], "magnitude").numpy()


def similarity(reference: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Rank similarity per pair; 0 where the new map is empty (constant) and the reference is
    not (the explanation is gone: it changed), NaN where the reference itself is empty."""
    sim = rank_similarity(reference, maps)
    ref = np.abs(reference.reshape(len(reference), -1))
    new = np.abs(maps.reshape(len(maps), -1))
    ref_ok = ref.max(1) > ref.min(1)
    return np.where(ref_ok & ~(new.max(1) > new.min(1)), 0.0, np.where(ref_ok, sim, np.nan))


def randomisation_test(clf, method_heat: Callable[[Any], dict[str, np.ndarray]], resolution: int, seed: int,
                       link: Optional[tuple[LinkRefit, np.ndarray, np.ndarray]] = None,
                       progress: bool = True) -> tuple[list[str], dict[str, np.ndarray]]:
    """Similarity of each method's maps to the trained model's as layers are randomised from the top.

    method_heat(net) -> {method: heat [P, H, W]} for the test's P pairs on an
    attribution-ready network. link: (refit, units [P], seed positions [P]) to test the
    link too. Returns (step names: 'none', then the layer randomised last, ...;
    similarity {method: [steps, P]}).
    """
    layers = cascade_layers(clf, "units")
    steps = ["none"] + layers[::-1]
    bar = tqdm(total=len(steps), desc="randomisation", unit="step", disable=not progress)
    reference = method_heat(attribution_ready(clf, "units", image_resolution=resolution))
    if link is not None:
        refit, units, seed_pos = link
        reference["link"] = refit.heat(clf, units, seed_pos)
    sims = {m: [similarity(h, h)] for m, h in reference.items()}
    bar.update(1)
    for k in range(1, len(steps)):
        rand = randomised(clf, layers[len(layers) - k:], seed)
        maps = method_heat(attribution_ready(rand, "units", image_resolution=resolution))
        if link is not None:
            maps["link"] = refit.heat(rand, units, seed_pos)
        for m, h in maps.items():
            sims[m].append(similarity(reference[m], h))
        bar.update(1)
    bar.close()
    return steps, {m: np.stack(v) for m, v in sims.items()}
