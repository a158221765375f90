"""Figures of stage counterfactuals: trajectory strips (Fig. 6), success per class pair, shifted units."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from linkstyle.core import h5
from linkstyle.report.figures import save_figure


def plot_strips(f, picks: Sequence[int], path: str | os.PathLike, dpi: int = 120) -> None:
    """Fig. 6 style: one row per picked trajectory, its kept frames left to right (origin first,
    counterfactual last), the target's probability under each frame."""
    from matplotlib.figure import Figure

    picks = np.sort(np.asarray(picks, dtype=np.int64))
    names = h5.get_attr(f, "class_names")
    n_frames = f["frames/steps"].shape[1]
    fig = Figure(figsize=(1.2 + 0.95 * n_frames, 0.6 + 1.25 * max(1, len(picks))), layout="constrained")
    axes = fig.subplots(max(1, len(picks)), n_frames, squeeze=False)
    if not len(picks):
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 0].text(0.0, 0.5, "no trajectory reached its target", va="center")
    t, probs = f["trajectories"], f["path/probs"]
    for row, b in zip(axes, picks.tolist()):
        steps, images = f["frames/steps"][b], f["frames/images"][b]
        start, target, origin = int(t["path_start"][b]), int(t["target"][b]), int(t["origin"][b])
        for ax, step, img in zip(row, steps, images):
            ax.set(xticks=[], yticks=[])
            if step < 0:
                ax.set_axis_off()
                continue
            ax.imshow(img, interpolation="nearest")
            p = float(probs[start + int(step), target])
            ax.set_xlabel(f"{'origin' if step == 0 else f'step {step}'}\np={p:.2f}", fontsize=7, labelpad=2)
        row[0].set_ylabel(f"{names[origin]} → {names[target]}\n(sample {int(t['k'][b])})", fontsize=8)
    fig.suptitle("Counterfactual trajectories: renders of L(relu(r - s)); p = classifier's probability of the target",
                 fontsize=9)
    save_figure(fig, path, dpi)


def plot_pair_table(summary: dict, class_names: Sequence[str], path: str | os.PathLike, dpi: int = 120) -> None:
    """Success rate per (origin, target) as a heat map, with the median steps of the successes."""
    from matplotlib.figure import Figure

    C = len(class_names)
    rate = np.full((C, C), np.nan)
    text = np.full((C, C), "", dtype=object)
    index = {n: i for i, n in enumerate(class_names)}
    for key, s in summary["per_pair"].items():
        o, t = (index[x] for x in key.split("->"))
        rate[o, t] = s["success_rate"]
        med = "-" if s["median_steps"] is None else f"{s['median_steps']:.0f}"
        text[o, t] = f"{s['success_rate']:.0%}\n{med} steps\nn={s['n']}"
    fig = Figure(figsize=(1.6 + 1.05 * C, 1.2 + 0.9 * C), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rate, vmin=0, vmax=1, cmap="viridis")
    for o in range(C):
        for t in range(C):
            if text[o, t]:
                ax.text(t, o, text[o, t], ha="center", va="center", fontsize=7,
                        color="black" if rate[o, t] > 0.6 else "white")
    ax.set_xticks(range(C), class_names, rotation=30, ha="right")
    ax.set_yticks(range(C), class_names)
    ax.set(xlabel="target class", ylabel="origin class")
    fig.colorbar(im, ax=ax, label="success rate (median steps of the successes)", shrink=0.8)
    rate_all = summary.get("success_rate")
    fig.suptitle(f"Counterfactual success per class pair: {rate_all:.0%} of {summary['n_trajectories']} "
                 f"trajectories, median {summary['median_steps']} steps" if rate_all is not None else
                 "Counterfactual success per class pair", fontsize=9)
    save_figure(fig, path, dpi)


def plot_units(table: pd.DataFrame, class_names: Sequence[str], path: str | os.PathLike, n_show: int = 5,
               dpi: int = 120) -> None:
    """Per class pair (origin rows x target columns), the units that moved most, with their labels."""
    from matplotlib.figure import Figure

    C = len(class_names)
    fig = Figure(figsize=(1.0 + 2.6 * C, 0.8 + 1.55 * C), layout="constrained")
    axes = fig.subplots(C, C, squeeze=False)
    lim = float(table["mean_delta"].abs().max()) if len(table) else 1.0
    for o in range(C):
        for t in range(C):
            ax = axes[o, t]
            sub = table[(table["origin"] == o) & (table["target"] == t)].sort_values("rank").head(n_show)
            if not len(sub):
                ax.set_axis_off()
                continue
            y = np.arange(len(sub))[::-1]
            d = sub["mean_delta"].to_numpy()
            ax.barh(y, d, color=np.where(d > 0, "tab:red", "tab:blue"), height=0.7)
            labels = [f"u{u} {p}·{m}" if p else f"u{u}" for u, p, m in
                      sub[["unit", "strongest_part", "metric"]].itertuples(index=False)]
            ax.set_yticks(y, labels, fontsize=6)
            ax.set_xlim(-lim * 1.05, lim * 1.05)
            ax.axvline(0, color="0.5", lw=0.5)
            ax.tick_params(axis="x", labelsize=6)
            ax.set_title(f"{class_names[o]} → {class_names[t]}", fontsize=7, pad=2)
    fig.suptitle("Units that moved most (mean Δr = relu(r - s) - r over successful trajectories); "
                 "label: strongest part · metric from analyze_units", fontsize=9)
    save_figure(fig, path, dpi)
