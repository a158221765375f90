"""Figure of stage evaluate_link: the cycle I -> r -> w~ -> I~ (the paper's Fig. 3B-C)."""

from __future__ import annotations

import numpy as np

from linkstyle.report.figures import save_figure


def plot_cycle(res: dict, labels: np.ndarray, class_names, k: int, path) -> None:
    """Left: I over I~ for k test pairs per class (Fig. 3B). Right: distance histograms vs baseline."""
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    nc = len(class_names)
    fig = Figure(figsize=(k * 0.8 + 6.5, max(nc * 1.6, 4.5)))
    gs = GridSpec(2 * nc, k + 1, figure=fig, width_ratios=[1] * k + [k * 0.9], wspace=0.05, hspace=0.08)
    for c in range(nc):
        idx = np.flatnonzero(labels == c)[:k]
        for j, i in enumerate(idx):
            for row, key in ((0, "img"), (1, "img_t")):
                ax = fig.add_subplot(gs[2 * c + row, j])
                ax.imshow(res[key][i], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{class_names[c]}\n{'I' if row == 0 else 'I~'}", rotation=0, ha="right", va="center", fontsize=7)
    panels = [("ssim_dist", "1 - SSIM(I, I~)"), ("r_corr", "corr(r, r~)")] + ([("part_iou", "part-map IoU")] if "part_iou" in res else [])
    sub = gs[:, k].subgridspec(len(panels), 1, hspace=0.6)
    for p, (key, title) in enumerate(panels):
        ax = fig.add_subplot(sub[p])
        bins = np.linspace(min(res[key].min(), res[key + "_baseline"].min()), max(res[key].max(), res[key + "_baseline"].max()), 40)
        ax.hist(res[key], bins=bins, alpha=0.7, label="cycle pairs")
        ax.hist(res[key + "_baseline"], bins=bins, alpha=0.6, label="unrelated (same class)")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        if p == 0:
            ax.legend(fontsize=6)
    fig.suptitle("Cycle I -> r -> w~ -> I~ on held-out pairs", fontsize=9)
    save_figure(fig, path, dpi=110)
