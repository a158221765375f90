"""Quality of the models: do generated images look real to the classifier?

- accuracy of the classifier on generated samples, per class, at the truncation used
  downstream (the pairs are only useful if the classifier recognises the samples); this
  needs no real image;
- with real images (the built-in world, or a folder of the user's own: `real_images`),
  the classifier's accuracy on them and the Fréchet distance between real and generated
  images in the classifier's R space (an FID computed in our own feature space, since no
  Inception weights exist here), printed beside the real-vs-real value of two disjoint real
  sets of the same size, which is the floor the generated value should be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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


@dataclass(frozen=True)
class RealImages:
    """Two disjoint sets of real uint8 images [N, H, W, 3] with their class ids, and where they came from."""

    a: np.ndarray
    labels_a: np.ndarray
    b: np.ndarray
    source: str


def real_image_folder(folder: Path, class_names: tuple[str, ...], size: int) -> RealImages | None:
    """The user's real images: `folder/<class name>/*.png|jpg|...`, centre-cropped to a square
    and resized to the generator's `size`; split alternately into the two sets. None when the
    folder has no class folder at all (the Fréchet distance is then skipped)."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: models.real_images must name a folder with one folder of images per class")
    present = [c for c in class_names if (folder / c).is_dir()]
    if not present:
        return None
    if len(present) < len(class_names):
        missing = ", ".join(c for c in class_names if c not in present)
        raise UserError(f"{folder}: no folder for class {missing}; add one folder of real images per class "
                        f"({', '.join(class_names)}), or none at all to skip the real-image checks")
    images, labels = [], []
    for c, name in enumerate(class_names):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise UserError(f"{folder / name}: {len(files)} image(s); at least 2 per class are needed "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        for p in files:
            try:
                im = Image.open(p).convert("RGB")
            except OSError as e:
                raise UserError(f"{p}: not a readable image ({e}); remove or replace it") from None
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            images.append(np.asarray(im, dtype=np.uint8))
            labels.append(c)
    x, y = np.stack(images), np.asarray(labels)
    # Alternate within each class, so both sets hold every class.
    rank = np.concatenate([np.arange((y == c).sum()) for c in range(len(class_names))])
    return RealImages(x[rank % 2 == 0], y[rank % 2 == 0], x[rank % 2 == 1], str(folder))


def evaluate_models(gen, clf, real: RealImages | None, cfg: QualityConfig) -> dict:
    """Metrics of stage check_models; the real-image ones only with real images."""
    metrics: dict = {"psi": cfg.psi, "n_per_class": cfg.n_per_class, "n_units": int(clf.n_units)}
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
    if real is None:
        metrics["real_images"] = None
        metrics["frechet_r"] = None
        return metrics
    r_a, logits_a = clf.represent(torch.as_tensor(real.a), batch_size=cfg.batch_size)
    r_a, pred = r_a.numpy(), logits_a.argmax(1).numpy()
    r_b = clf.represent(torch.as_tensor(real.b), batch_size=cfg.batch_size)[0].numpy()
    metrics["real_images"] = {"source": real.source, "n": int(len(real.a) + len(real.b)),
                              "accuracy": {name: float((pred[real.labels_a == c] == c).mean())
                                           for c, name in enumerate(gen.class_names)}}
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
