"""Quality of the default models: do generated images look like the world to the classifier?

- accuracy of the classifier on generated samples, per class, at the truncation used
  downstream (the pairs are only useful if the classifier recognises the samples);
- Fréchet distance between real and generated images in the classifier's R space
  (an FID computed in our own feature space, since no Inception weights exist here),
  printed beside the real-vs-real value of two disjoint real sets of the same size,
  which is the floor the generated value should be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from linkstyle.core.config import check
from linkstyle.core.images import to_uint8


@dataclass(frozen=True)
class QualityConfig:
    """Options of stage `check_models`."""

    psi: float = 0.7
    n_per_class: int = 400
    seed_base: int = 5_000_000  # far from the world's seeds and from the pair seeds
    n_figure: int = 8
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self):
        check(0.0 < self.psi <= 1.0, "psi", "must be in (0, 1]")
        check(self.n_per_class >= 10, "n_per_class", "must be >= 10")
        check(self.n_figure >= 1, "n_figure", "must be >= 1")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # tiny imaginary parts from round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2.0 * covmean))


def generated_set(gen, cfg: QualityConfig, psi: float):
    """Seeds, classes, w, images ([-1, 1]) and part maps of n_per_class samples per class."""
    n = cfg.n_per_class * gen.n_classes
    seeds = cfg.seed_base + np.arange(n)
    classes = np.arange(n) % gen.n_classes
    w = gen.sample_w(seeds, classes, psi)
    return seeds, classes, w, gen.synthesize(w, cfg.batch_size)


def evaluate_models(gen, clf, real_a: np.ndarray, real_b: np.ndarray, cfg: QualityConfig) -> dict:
    """Metrics of stage check_models. real_a and real_b: disjoint uint8 real image sets."""
    metrics: dict = {"psi": cfg.psi, "n_per_class": cfg.n_per_class}
    per_class, r_gen = {}, {}
    for psi in sorted({cfg.psi, 1.0}):
        _, classes, _, images = generated_set(gen, cfg, psi)
        r, logits = clf.represent(images, batch_size=cfg.batch_size)
        r_gen[psi] = r.numpy()
        pred = logits.argmax(1).numpy()
        if psi == cfg.psi:
            for c, name in enumerate(gen.class_names):
                per_class[name] = float((pred[classes == c] == c).mean())
    metrics["generated_accuracy"] = per_class
    metrics["generated_accuracy_min"] = min(per_class.values())
    r_a = clf.represent(torch.as_tensor(real_a), batch_size=cfg.batch_size)[0].numpy()
    r_b = clf.represent(torch.as_tensor(real_b), batch_size=cfg.batch_size)[0].numpy()
    m = min(len(r_a), len(r_b), len(r_gen[1.0]))
    metrics["frechet_r"] = {
        "real_vs_real": frechet_distance(r_a[:m], r_b[:m]),
        "real_vs_generated_psi1": frechet_distance(r_a[:m], r_gen[1.0][:m]),
        f"real_vs_generated_psi{cfg.psi:g}": frechet_distance(r_a[:m], r_gen[cfg.psi][:m]),
        "n": m,
    }
    return metrics


def sample_grid(gen, cfg: QualityConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """n_figure samples per class (class-major) as uint8 images and part maps (or None)."""
    k, nc = cfg.n_figure, gen.n_classes
    seeds = cfg.seed_base + np.arange(k * nc)
    classes = np.repeat(np.arange(nc), k)
    w = gen.sample_w(seeds, classes, cfg.psi)
    images = to_uint8(gen.synthesize(w)).cpu().numpy()
    parts = gen.part_maps(w)
    return images, (parts.cpu().numpy() if parts is not None else None)
