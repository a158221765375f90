"""Figure of stage similarity: ARI per space and RSA of W vs R against controls (the paper's Fig. 3A)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from linkstyle.link.similarity import ARI_SPACES, RSA_KINDS, RSA_SPACES
from linkstyle.report.figures import save_figure


def _box(ax, data: list[np.ndarray], positions: list[float], colors: list[str], rng: np.random.Generator) -> None:
    bp = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True, showfliers=False,
                    medianprops={"color": "black"})
    for patch, color in zip(bp["boxes"], colors):
        patch.set_facecolor(color)
        patch.set_alpha(0.35)
    for pos, vals, color in zip(positions, data, colors):
        ax.scatter(pos + rng.uniform(-0.15, 0.15, len(vals)), vals, s=6, color=color, alpha=0.6, zorder=3)
        ax.scatter([pos], [np.mean(vals)], marker="D", s=25, color="black", zorder=4)


def plot_similarity(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Fig. 3A-style PNG: ARI per space (left) and RSA W-R vs controls (right)."""
    # Figure without pyplot renders through Agg and leaves the process-wide backend alone.
    from matplotlib.figure import Figure

    colors = {"W": "tab:blue", "R": "tab:orange", "W-R": "tab:purple",
              "control_shuffled": "tab:gray", "control_random": "silver"}
    jitter = np.random.default_rng(0)  # fixed, so the same table gives the same picture
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_ari, ax_rsa = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4, 7]})

    def values(analysis: str, space: str) -> np.ndarray:
        sel = df[(df["analysis"] == analysis) & (df["space"] == space)]
        return sel["value"].to_numpy(dtype=np.float64)

    spaces = [s for s in ARI_SPACES if len(values("ari", s))]
    _box(ax_ari, [values("ari", s) for s in spaces], list(range(len(spaces))), [colors[s] for s in spaces], jitter)
    ax_ari.set_xticks(range(len(spaces)), [s.replace("control_", "control\n") for s in spaces])
    ax_ari.set_ylabel("adjusted Rand index")
    ax_ari.set_title("k-means clustering vs classes")

    data, pos, cols, ticks, names = [], [], [], [], []
    for g, kind in enumerate(RSA_KINDS):
        for j, space in enumerate(RSA_SPACES):
            v = values(f"rsa_{kind}", space)
            if len(v):
                p = g * (len(RSA_SPACES) + 1) + j
                data.append(v)
                pos.append(p)
                cols.append(colors[space])
                ticks.append(p)
                names.append(f"{space.replace('control_', '')}\n({kind[:4]}.)")
    if data:
        _box(ax_rsa, data, pos, cols, jitter)
    ax_rsa.set_xticks(ticks, names)
    ax_rsa.set_ylabel("RSA (Pearson r of upper triangles)")
    ax_rsa.set_title("representational similarity W vs R")

    for ax in (ax_ari, ax_rsa):
        ax.set_ylim(-0.1, 1.02)
        ax.axhline(0, color="black", lw=0.5, ls=":")
    n_rep = df["repetition"].nunique()
    fig.suptitle(f"Similarity of W and R ({n_rep} repetitions; diamond = mean)")
    save_figure(fig, path, dpi=120)
