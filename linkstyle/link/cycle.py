"""The cycle I -> r -> w~ -> I~ on held-out pairs (docs/method.md section 3, paper Fig. 3B-C).

How close is I~ to I? Measured in spaces other than R, so the check is not circular:
- 1 - SSIM (scikit-image's structural similarity on the 8-bit RGB images): a standard
  perceptual image distance that depends on neither network (the paper used MoCo-v2
  features, which cannot be downloaded here);
- part-map IoU between the generator's part maps of w and of w~ (does I~ have the
  same parts in the same places?), where the generator has part maps.
And in R itself: the correlation of r and r~ = f_R(I~), and how often the classifier
gives I~ the class of I. Every distance has a baseline of unrelated pairs: I against
the I~ of another sample of the same class (a derangement fixed by `seed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

from linkstyle.core.config import check
from linkstyle.core.images import to_uint8
from linkstyle.core.runtime import module_device
from linkstyle.core.stats import rowwise_corr


@dataclass(frozen=True)
class CycleConfig:
    """Options of stage `evaluate_link`."""

    batch_size: int = 256
    n_figure_per_class: int = 6
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        # Checked here, before any work: 0 divided by zero in the figure, after the metrics were written.
        check(self.n_figure_per_class >= 1, "n_figure_per_class", "must be >= 1 (test pairs per class in the figure)")


def ssim_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - SSIM per image pair of uint8 [N, H, W, 3] arrays."""
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2))
    return np.array([1.0 - structural_similarity(x, y, channel_axis=-1, data_range=255, win_size=win)
                     for x, y in zip(a, b)])


def part_iou(pa: np.ndarray, pb: np.ndarray, n_parts: int) -> np.ndarray:
    """Mean over non-background parts present in either map of IoU, per image pair."""
    out = np.zeros(len(pa))
    present = np.zeros(len(pa))
    for p in range(1, n_parts):
        a, b = pa == p, pb == p
        union = (a | b).sum((1, 2))
        inter = (a & b).sum((1, 2))
        has = union > 0
        out += np.where(has, inter / np.maximum(union, 1), 0.0)
        present += has
    return out / np.maximum(present, 1)


def derangement(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation mapping every index to another index of the same class."""
    rng = np.random.default_rng(seed)
    out = np.arange(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > 1:
            p = rng.permutation(idx)
            out[p] = np.roll(p, 1)  # each index to its predecessor in a random cycle: no fixed points
    return out


@torch.inference_mode()
def run_cycle(gen, clf, link: torch.nn.Module, w: np.ndarray, r: np.ndarray, labels: np.ndarray,
              cfg: CycleConfig, progress: bool = True) -> dict:
    """Per-pair arrays of every cycle measure and its baseline, plus images for the figure."""
    from tqdm.auto import tqdm

    dev = gen.device
    n = len(w)
    out = {k: [] for k in ("w_sqerr", "ssim_dist", "r_corr", "agree", "part_iou", "img", "img_t", "r_t", "parts", "parts_t")}
    bar = tqdm(total=n, desc="evaluate_link", unit="pair", disable=not progress)
    for i in range(0, n, cfg.batch_size):
        wb = torch.as_tensor(w[i : i + cfg.batch_size], device=dev)
        rb = torch.as_tensor(r[i : i + cfg.batch_size], device=module_device(link))
        wt = link(rb).to(dev)
        img, img_t = gen.synthesize(wb), gen.synthesize(wt)
        r_t, logits_t = clf.represent(img_t, batch_size=cfg.batch_size)
        out["w_sqerr"].append(((wb - wt) ** 2).mean(1).cpu().numpy())
        out["img"].append(to_uint8(img).cpu().numpy())
        out["img_t"].append(to_uint8(img_t).cpu().numpy())
        out["r_t"].append(r_t.numpy())
        out["agree"].append(logits_t.argmax(1).numpy() == labels[i : i + cfg.batch_size])
        if gen.part_names is not None:
            out["parts"].append(gen.part_maps(wb).cpu().numpy())
            out["parts_t"].append(gen.part_maps(wt).cpu().numpy())
        bar.update(len(wb))
    bar.close()
    res = {k: np.concatenate(v) for k, v in out.items() if v}
    perm = derangement(labels, cfg.seed)
    res["ssim_dist"] = ssim_distance(res["img"], res["img_t"])
    res["ssim_dist_baseline"] = ssim_distance(res["img"], res["img_t"][perm])
    res["r_corr"] = rowwise_corr(r, res["r_t"])
    res["r_corr_baseline"] = rowwise_corr(r, res["r_t"][perm])
    if "parts" in res:
        k = len(gen.part_names)
        res["part_iou"] = part_iou(res["parts"], res["parts_t"], k)
        res["part_iou_baseline"] = part_iou(res["parts"], res["parts_t"][perm], k)
    return res


def summarize_cycle(res: dict, w: np.ndarray, labels: np.ndarray, class_names) -> dict:
    def stats(x):
        return {"mean": float(np.mean(x)), "median": float(np.median(x))}

    m = {
        "w_mse": float(res["w_sqerr"].mean()),
        "w_mse_relative": float(res["w_sqerr"].mean() / w.var(0).mean()),  # 0 = exact, 1 = as bad as predicting the mean
        "ssim_distance": stats(res["ssim_dist"]), "ssim_distance_baseline": stats(res["ssim_dist_baseline"]),
        "r_correlation": stats(res["r_corr"]), "r_correlation_baseline": stats(res["r_corr_baseline"]),
        "class_agreement": float(res["agree"].mean()),
        "class_agreement_per_class": {name: float(res["agree"][labels == c].mean()) for c, name in enumerate(class_names)},
        "n_pairs": int(len(labels)),
    }
    if "part_iou" in res:
        m["part_iou"] = stats(res["part_iou"])
        m["part_iou_baseline"] = stats(res["part_iou_baseline"])
    return m
