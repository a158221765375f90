"""Figure of stage check_models: generated samples per class beside their part maps."""

from __future__ import annotations

import numpy as np

from linkstyle.report.figures import save_figure


def plot_samples(images: np.ndarray, parts: np.ndarray | None, class_names, part_names, psi: float, path) -> None:
    """One row per class: its images (uint8 [n_classes * k, H, W, 3], class-major), each
    followed by its part map where there is one (`models.quality.sample_grid` makes them)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    nc = len(class_names)
    k = len(images) // nc
    cols = 2 * k if parts is not None else k
    fig = Figure(figsize=(cols * 0.9, nc * 0.95 + 0.6))
    axes = fig.subplots(nc, cols, squeeze=False)
    cmap = colormaps["tab10"]
    for i in range(k * nc):
        row, j = divmod(i, k)
        ax = axes[row, 2 * j if parts is not None else j]
        ax.imshow(images[i], interpolation="nearest")
        if parts is not None:
            axes[row, 2 * j + 1].imshow(parts[i], cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
        axes[row, 0].set_ylabel(class_names[row], rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    if parts is not None:
        fig.legend([Patch(color=cmap(i)) for i in range(len(part_names))], part_names,
                   loc="lower center", ncol=len(part_names), fontsize=7, frameon=False)
    fig.suptitle(f"Generated samples (psi={psi:g}) and their part maps", fontsize=9)
    save_figure(fig, path, dpi=100)
