"""Few-shot training data for the segmenter, drawn from the generator itself.

K generated images are labelled either by the generator's own part maps (the default
generator has them) or by index masks the user drew for chosen seeds (real generators;
layout in `segmenter.load_mask_folder`). The segmenter is scored on held-out generated
images against the generator's part maps, where those exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import check
from .errors import UserError
from .segmenter import SegmenterConfig, generator_maps, iou_table, load_mask_folder, segment_w, train_segmenter


@dataclass(frozen=True)
class FewShotConfig:
    """Options of stage `train_segmenter` besides the network's (`model`)."""

    psi: float = 0.7  # the truncation of the renders it will segment
    seed_base: int = 30_000_000
    n_eval: int = 200  # held-out generated images for the IoU
    masks_dir: Optional[str] = None  # user masks; None = the generator's own part maps
    device: str = "auto"

    def __post_init__(self):
        check(0.0 < self.psi <= 1.0, "psi", "must be in (0, 1]")
        check(self.n_eval >= 1, "n_eval", "must be >= 1")


def fit_segmenter(gen, model_cfg: SegmenterConfig, cfg: FewShotConfig, progress: bool = True):
    """Train on K labelled generated images; return (segmenter, metrics)."""
    if cfg.masks_dir is not None:
        seeds, classes, masks, names = load_mask_folder(cfg.masks_dir, gen.resolution, n_classes=gen.n_classes)
    else:
        if gen.part_names is None:
            raise UserError("train_segmenter.masks_dir: this generator has no part maps of its own; "
                            "label a few of its images and point masks_dir at the folder")
        k = model_cfg.n_shots
        seeds = cfg.seed_base + np.arange(k)
        classes = np.arange(k) % gen.n_classes
        masks, names = None, list(gen.part_names)
    w = gen.sample_w(seeds, classes, cfg.psi)
    if masks is None:
        masks = gen.part_maps(w).cpu().numpy()
    maps = generator_maps(gen, w, model_cfg.layers)
    model, history = train_segmenter(maps, masks, names, model_cfg, progress=progress)
    metrics = {"n_shots": int(len(seeds)), "train_pixel_accuracy": history["pixel_acc"][-1]}
    if gen.part_names is not None and list(gen.part_names) == list(names):
        ev_seeds = cfg.seed_base + 1_000_000 + np.arange(cfg.n_eval)
        ev_w = gen.sample_w(ev_seeds, np.arange(cfg.n_eval) % gen.n_classes, cfg.psi)
        pred = segment_w(model, gen, ev_w)
        table = iou_table(pred, gen.part_maps(ev_w).cpu().numpy(), names)
        metrics.update(mean_iou=table["mean_iou"], iou=table["iou"], pixel_accuracy=table["pixel_accuracy"], n_eval=cfg.n_eval)
    return model, metrics
