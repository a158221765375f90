"""Figures of stage analyze_units: label sparsity, t-SNE, cluster heat map, render strips (Figs. 4, 5)."""

from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from linkstyle.analyze.units import _standardise
from linkstyle.report.figures import save_figure


def _part_colors(tables: Mapping[str, pd.DataFrame]) -> dict[str, tuple]:
    from matplotlib import colormaps

    parts = pd.unique(tables["vectors"].columns.get_level_values("part"))
    cmap = colormaps["tab10"]
    return {str(p): cmap(i % 10) for i, p in enumerate(parts)}


def plot_sparsity(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike, dpi: int = 120) -> None:
    """Fig. 5A: label sparsity per metric, over all seeds and per class (box + units as dots)."""
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    sparsity, by_class = tables["sparsity"], tables["sparsity_by_class"]
    metrics = list(pd.unique(sparsity["metric"]))
    classes = by_class[["class", "class_name"]].drop_duplicates().sort_values("class")
    jitter = np.random.default_rng(0)  # fixed, so the same table gives the same picture
    fig = Figure(figsize=(1.2 + (0.55 * (len(classes) + 1) + 0.6) * max(1, len(metrics)), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(metrics)), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        groups = [("all\nclasses", sparsity.loc[sparsity["metric"] == metric, "sparsity"], "0.35")]
        for c, name in classes.itertuples(index=False):
            v = by_class.loc[(by_class["class"] == c) & (by_class["metric"] == metric), "sparsity"]
            groups.append((name, v, "tab:blue"))
        for pos, (_, v, color) in enumerate(groups):
            v = v.to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if not len(v):
                continue
            # Boxes over the dots: with thousands of units the dots would hide them.
            bp = ax.boxplot([v], positions=[pos], widths=0.6, patch_artist=True, showfliers=False, zorder=3,
                            medianprops={"color": "black", "lw": 1.5})
            bp["boxes"][0].set(facecolor=(*to_rgb(color), 0.3))
            few = len(v) <= 200
            ax.scatter(pos + jitter.uniform(-0.2, 0.2, len(v)), v, s=6 if few else 2, color=color,
                       alpha=0.6 if few else 0.25, zorder=2, lw=0)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=45, ha="right", rotation_mode="anchor")
        ax.axvline(0.5, color="0.6", lw=0.6, ls=":")
        ax.set(title=metric, ylim=(-0.03, 1.03))
    axes[0].set_ylabel("Hoyer sparsity over parts\n(1 = one part changes, 0 = all equally)")
    fig.suptitle(f"Label sparsity of unit effects ({sparsity['unit'].nunique()} units)")
    save_figure(fig, path, dpi)


def plot_tsne(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike, perplexity: Optional[float] = None,
              dpi: int = 120) -> None:
    """Fig. 5B: t-SNE of the units' label vectors, coloured by the part with the strongest change.

    `perplexity` (the one used, metrics["tsne_perplexity"]) only goes into the title.
    """
    from matplotlib.figure import Figure

    table = tables["units"].dropna(subset=["strongest_part", "tsne_x"])
    colors = _part_colors(tables)
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    size = 50 if len(table) <= 100 else 12
    for part, color in colors.items():
        sub = table[table["strongest_part"] == part]
        if len(sub):
            ax.scatter(sub["tsne_x"], sub["tsne_y"], s=size, color=color, edgecolor="white", linewidth=0.4,
                       label=f"{part} ({len(sub)})")
    if len(table) <= 40:  # few units: name them, so the plot can be read against the table
        for unit, x, y in table[["unit", "tsne_x", "tsne_y"]].itertuples(index=False):
            ax.annotate(str(unit), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7, color="0.25")
    ax.legend(title="strongest part (units)", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              markerscale=1 if size > 12 else 2)
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2")
    metrics = ", ".join(tables["vectors"].columns.get_level_values("metric").unique())
    ppl = f" (perplexity {perplexity:.3g})" if perplexity else ""
    ax.set_title(f"t-SNE of {len(table)} units' mean changes per part{ppl}\n"
                 f"metrics: {metrics}; z-scored per (part, metric)", fontsize=10)
    save_figure(fig, path, dpi)


def plot_clusters(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike, dpi: int = 120) -> None:
    """Fig. 5C: z-scored label vectors as a heat map, rows ordered by the dendrogram beside them."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from scipy.cluster.hierarchy import dendrogram

    vectors, table = tables["vectors"], tables["units"].set_index("unit")
    z, n = tables["linkage"].to_numpy(dtype=np.float64), len(vectors)
    order = np.argsort(table.loc[vectors.index, "leaf"].to_numpy()) if n else np.zeros(0, np.int64)
    heat = np.clip(_standardise(vectors)[order], -3, 3)
    colors = _part_colors(tables)
    part_ids = {p: i for i, p in enumerate(colors)}
    strongest = table.loc[vectors.index[order], "strongest_part"].map(part_ids).to_numpy(dtype=np.float64)

    fig = Figure(figsize=(max(7.0, 3.5 + 0.42 * heat.shape[1]), float(np.clip(2.5 + 0.16 * n, 5, 14))),
                 layout="constrained")
    ax_tree, ax_part, ax_heat, ax_bar = fig.subplots(1, 4, gridspec_kw={"width_ratios": [2.2, 0.35, 0.42 * max(1, heat.shape[1]), 0.25]})
    edges = np.arange(n + 1) * 10.0  # scipy's dendrogram puts leaf i at 10 i + 5
    if n >= 2:
        # One grey: scipy's cluster colours would reuse the part palette and read as parts.
        dendrogram(z, orientation="left", ax=ax_tree, no_labels=True, color_threshold=0, above_threshold_color="0.35")
        k = int(table["cluster"].max())
        if 1 < k <= n - 1:
            cut = (z[-(k - 1), 2] + z[-k, 2]) / 2
            ax_tree.axvline(cut, color="tab:red", lw=0.8, ls="--")
            ax_tree.text(cut, 10 * n, f"{k} clusters", color="tab:red", fontsize=8, ha="right", va="bottom")
    ax_tree.set(ylim=(0, 10 * n), yticks=[], xlabel="linkage distance", frame_on=False)
    ax_part.pcolormesh([0, 1], edges, strongest[:, None], cmap=ListedColormap(list(colors.values())),
                       vmin=-0.5, vmax=len(colors) - 0.5)
    ax_part.set_xticks([0.5], ["strongest\npart"], rotation=90)
    mesh = ax_heat.pcolormesh(np.arange(heat.shape[1] + 1), edges, heat, cmap="RdBu_r", vmin=-3, vmax=3)
    for ax in (ax_part, ax_heat):
        ax.set(ylim=(0, 10 * n), yticks=[])
    if n <= 60:
        ax_heat.yaxis.tick_right()
        ax_heat.set_yticks(edges[:-1] + 5, [str(u) for u in vectors.index[order]], fontsize=7)
    metrics = vectors.columns.get_level_values("metric")
    ax_heat.set_xticks(np.arange(len(metrics)) + 0.5, list(vectors.columns.get_level_values("part")), rotation=90)
    for metric in pd.unique(metrics):  # metric name above its block of parts, blocks divided by a line
        cols = np.flatnonzero(metrics == metric)
        ax_heat.text((cols[0] + cols[-1] + 1) / 2, 10 * n * 1.005, metric, ha="center", va="bottom", fontsize=9)
        ax_heat.axvline(cols[0], color="black", lw=1.2)
    fig.colorbar(mesh, cax=ax_bar, label="mean change, z-scored per column (clipped at ±3)")
    fig.legend(handles=[Patch(color=c, label=p) for p, c in colors.items()], loc="outside lower center",
               ncols=min(len(colors), 7), frameon=False, title="strongest part")
    fig.suptitle(f"Hierarchical clustering of {n} units' label vectors ({table['cluster'].max():.0f} clusters)")
    save_figure(fig, path, dpi)


def _strip_canvas(frames: np.ndarray, n_seeds: int) -> tuple[np.ndarray, list[float], list[float]]:
    """Frames [seeds, steps, H, W, 3] on white, room for `n_seeds`: thin gaps between steps, wide between seeds.

    Returns the canvas and the x centres of the frames and of each seed's group.
    """
    n, t, h, w, _ = frames.shape
    gap, seed_gap = max(1, w // 32), max(4, w // 4)
    block = t * (w + gap) - gap + seed_gap
    canvas = np.full((h, n_seeds * block - seed_gap, 3), 255, dtype=np.uint8)
    left = np.arange(n)[:, None] * block + np.arange(t)[None, :] * (w + gap)
    for i, j in np.ndindex(n, t):
        canvas[:, left[i, j]:left[i, j] + w] = frames[i, j]
    return canvas, (left + w / 2).ravel().tolist(), (left[:, 0] + (block - seed_gap) / 2).tolist()


def plot_strips(tables: Mapping[str, pd.DataFrame], tuning, path: str | os.PathLike, dpi: int = 120) -> None:
    """Fig. 4: per selected unit, its renders across steps for a few seeds (one row per unit).

    Reads from `tuning["renders"]` only the selected units' selected seeds.
    """
    from matplotlib.figure import Figure

    strips = tables["strips"]
    rows = strips.drop_duplicates("row").sort_values("row")
    renders, values = tuning["renders"], tuning["values"]
    _, _, n_steps, h, w, _ = renders.shape
    n_seeds = int(strips.groupby("row").size().max()) if len(strips) else 1
    fig = Figure(figsize=(max(6.0, 1.6 + 0.92 * n_seeds * n_steps), 0.9 + 1.6 * max(1, len(rows))), layout="constrained")
    axes = fig.subplots(max(1, len(rows)), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, rows.itertuples(index=False)):
        sub = strips[strips["row"] == r.row]
        pos = sub["seed_index"].to_numpy()
        # h5py wants increasing indices: read sorted, then put back in strip order.
        sort = np.argsort(pos)
        frames = np.empty((len(pos), n_steps, h, w, 3), dtype=np.uint8)
        frames[sort] = renders[int(r.unit_index), pos[sort].tolist()]
        canvas, tiles, groups = _strip_canvas(frames, n_seeds)
        ax.imshow(canvas, interpolation="nearest")
        step_values = np.asarray(values[int(r.unit_index)], dtype=np.float64)
        ax.set_xticks(tiles, [f"{v:.2g}" for v in np.tile(step_values, len(pos))], fontsize=7)
        ax.set(yticks=[], frame_on=False)
        for x, (seed, name, change) in zip(groups, sub[["seed", "class_name", "seed_change"]].itertuples(index=False)):
            ax.text(x, -1.5, f"seed {seed} ({name}): {change:+.2f}", ha="center", va="bottom", fontsize=7, color="0.3")
        ax.set_title(f"unit {r.unit}: {r.part} {r.metric} {r.mean_change:+.3f} "
                     f"(consistency {r.consistency:.0%}, sparsity {r.sparsity:.2f})", loc="left", fontsize=9, pad=12)
    if not len(rows):
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no unit changed any part", ha="center", va="center")
    axes[-1].set_xlabel("value of the unit in r at each step (step 0 → last), per seed; "
                        "text above each seed: that seed's change")
    fig.suptitle("Most selective units per part: renders across steps")
    save_figure(fig, path, dpi)
