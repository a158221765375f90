"""Figures of stage invariances: samples the classifier cannot tell apart, and the factors R is
invariant to (docs/method.md section 10)."""

from __future__ import annotations

import os

import numpy as np

from linkstyle.report.figures import save_figure


def plot_invariance_samples(fig_data: dict, classes: np.ndarray, cosine: np.ndarray, class_names,
                            path: str | os.PathLike, dpi: int = 120) -> None:
    """One row per seed: the pair's image, the INN's mean (v = 0), then samples of w given its r;
    each sample titled with cos(r~, r)."""
    from matplotlib.figure import Figure

    renders, originals, means = fig_data["renders"], fig_data["originals"], fig_data["mean_renders"]
    n, k = renders.shape[:2]
    fig = Figure(figsize=(0.85 * (k + 2) + 0.9, 0.95 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, k + 2, squeeze=False)
    for i in range(n):
        row = [(originals[i], "image" if i == 0 else ""), (means[i], "v = 0" if i == 0 else "")]
        row += [(renders[i, j], f"{cosine[i, j]:.3f}") for j in range(k)]
        for j, (img, title) in enumerate(row):
            ax = axes[i, j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=6, pad=2)
        axes[i, 0].set_ylabel(class_names[int(classes[i])], fontsize=7)
    fig.suptitle("Samples of w given the image's r (titles: cos(r~, r)); what changes along a row, R does not see",
                 fontsize=8)
    save_figure(fig, path, dpi)


def plot_invariant_factors(summary: dict, threshold: float, path: str | os.PathLike, dpi: int = 120) -> None:
    """Bars: per part and metric, std over samples with the same r / std over the class's images;
    dots: the same per class. Parts too small to measure are left out. A generator without part
    maps has no factors: the figure says so (the stage's output exists either way)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not summary.get("factors"):
        fig = Figure(figsize=(5, 1.2))
        fig.text(0.5, 0.5, "no factors measured: the generator has no part maps", ha="center", va="center", fontsize=9)
        save_figure(fig, path, dpi)
        return
    rows = [r for r in summary["factors"] if not r["skipped"] and r["ratio"] is not None]
    rows.sort(key=lambda r: r["ratio"])
    metrics = list(dict.fromkeys(r["metric"] for r in summary["factors"]))
    colors = {m: c for m, c in zip(metrics, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"))}
    fig = Figure(figsize=(6.2, 0.28 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.barh(y, [r["ratio"] for r in rows], color=[colors[r["metric"]] for r in rows], alpha=0.8)
    for i, r in enumerate(rows):
        per = list(r["ratio_per_class"].values())
        ax.scatter(per, np.full(len(per), i), s=7, color="black", zorder=3, lw=0)
    ax.set_yticks(y, [f"{r['part']} {r['metric']}" for r in rows], fontsize=7)
    ax.axvline(threshold, color="0.3", ls="--", lw=0.8)
    ax.axvline(1.0, color="0.6", ls=":", lw=0.8)
    ax.set_xlabel("std over samples with the same r / std over the class's images\n"
                  f"(bars: all seeds; dots: per class; dashed: invariant from {threshold:g})", fontsize=8)
    top = max([1.05] + [v for r in rows for v in (r["ratio"], *r["ratio_per_class"].values())])
    ax.set_xlim(0, top * 1.02)
    ax.legend(handles=[Patch(color=colors[m], alpha=0.8, label=m) for m in metrics], fontsize=7, loc="lower right")
    ax.set_title("What R is invariant to: factors that vary among images the classifier cannot tell apart", fontsize=8)
    save_figure(fig, path, dpi)
