"""Figures of stage attribute_units: the comparison grid (FeatureVis's Fig. 3 with the link
beside the methods), the score table per method and part, and the randomisation curves."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from linkstyle.core.h5 import get_attr
from linkstyle.report.figures import save_figure

CONTOUR = "#00e5ff"


def _rows(f, n_control: int = 2) -> list[int]:
    """The grid's rows: the most selective unit of each part, then the first control units."""
    group, part = f["unit_group"][:], f["unit_part"][:]
    rows, seen = [], set()
    for i in range(len(group)):
        if group[i] == 0 and part[i] not in seen:
            rows.append(i)
            seen.add(part[i])
    return rows + [i for i in range(len(group)) if group[i] == 1][:n_control]


def _show_heat(ax, h: np.ndarray, signed: bool, mask: Optional[np.ndarray]) -> None:
    if not np.isfinite(h).any():
        ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        return
    if signed:
        v = float(np.nanmax(np.abs(h))) or 1.0
        ax.imshow(h, cmap="bwr", vmin=-v, vmax=v, interpolation="nearest")
    else:
        ax.imshow(h, cmap="inferno", vmin=0.0, vmax=float(np.nanmax(h)) or 1.0, interpolation="nearest")
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=CONTOUR, linewidths=0.6)


def _row_seed(f, u: int) -> int:
    """The seed shown for unit row u: the first seed on which the unit is active (an inactive
    unit leaves the image-explaining methods an empty map), preferring the seeds activation
    maximisation ran on; seed 0 if the unit is active on none."""
    active = f["active"][u].astype(bool)
    n_am = min((f[k].shape[1] for k in f if k.startswith("am_") and k.endswith("_result")), default=0)
    for pool in (active[:n_am], active):
        if pool.any():
            return int(np.flatnonzero(pool)[0])
    return 0


def plot_grid(f, path: str | os.PathLike, dpi: int = 120) -> None:
    """Rows: units (most selective per part, then controls), each on its first test image
    where it is active; columns: the image, each method's heat map (activation maximisation
    also its optimised image), and the link's first and last render with their change. The
    cyan line is the part the unit is labelled with (on the image; on the renders for the
    latent method and the link)."""
    from matplotlib.figure import Figure

    methods, families = get_attr(f, "methods"), get_attr(f, "families")
    parts_names = get_attr(f, "part_names")
    signed = {"occlusion", "lrp"}
    cols: list[tuple[str, str, str]] = [("image", "image", "")]
    for m in methods:
        if m == "link":
            cols += [("link_first", "link: first", "link"), ("link_last", "link: last", "link"), ("heat", "link: change", "link")]
        elif f"{m}_result" in f:
            cols += [(f"{m}_result", f"{m}: result", m), ("heat", f"{m}: change", m)]
        else:
            cols.append(("heat", m, m))
    rows = _rows(f)
    fig = Figure(figsize=(1.05 * len(cols) + 0.9, 1.1 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    units, unit_part, group = f["units"][:], f["unit_part"][:], f["unit_group"][:]
    seeds = f["seeds"][:]
    for r, u in enumerate(rows):
        pid = int(unit_part[u])
        s = _row_seed(f, u)
        image, parts = f["images"][s], f["parts"][s]
        for c, (key, title, m) in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if key == "image":
                ax.imshow(image, interpolation="nearest")
                ax.contour((parts == pid).astype(float), levels=[0.5], colors=CONTOUR, linewidths=0.6)
                ax.set_ylabel(f"unit {units[u]}\n{parts_names[pid]}" + (" (control)" if group[u] else "")
                              + f"\nseed {int(seeds[s])}", fontsize=6)
                continue
            if m == "link":
                mask = (f["link_parts_first"][u, s] == pid) | (f["link_parts_last"][u, s] == pid)
            elif m == "am_latent":
                a = f["am_latent_parts_start"].shape[1]
                mask = ((f["am_latent_parts_start"][u, s] == pid) | (f["am_latent_parts_result"][u, s] == pid)) if s < a else None
            else:
                mask = parts == pid
            if key == "heat":
                _show_heat(ax, f["heat"][methods.index(m), u, s], m in signed, mask)
            elif key in f and (key.startswith("link") or s < f[key].shape[1]):
                ax.imshow(f[key][u, s], interpolation="nearest")
    fig.suptitle("Feature visualisations of single units of R beside the link (each unit on a test image where it "
                 "is active; blue/red: signed, dark-bright: magnitude; cyan: the unit's labelled part)", fontsize=8)
    save_figure(fig, path, dpi)


def plot_scores(summary: pd.DataFrame, by_part: pd.DataFrame, path: str | os.PathLike, dpi: int = 120,
                part_source: str = "generator") -> None:
    """Part mass and pointing game per method against chance (selective and control units;
    whiskers: 95% bootstrap interval over units of the lift over chance), and the part-mass
    lift over chance per method and part (selective units)."""
    from matplotlib.figure import Figure

    methods = list(pd.unique(summary["method"]))
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.2])
    x = np.arange(len(methods))
    for ax, key, label in ((axes[0], "part_mass", "positive mass inside the part"),
                           (axes[1], "pointing", "pointing game: maximum inside the part")):
        for j, (g, color) in enumerate((("selective", "tab:blue"), ("control", "tab:orange"))):
            rows = summary[summary["group"] == g].set_index("method").reindex(methods)
            lift = "lift" if key == "part_mass" else "pointing_lift"
            # The bootstrap interval of the lift over chance, drawn around the bar's top.
            err = np.stack([rows[lift] - rows[f"{lift}_lo"], rows[f"{lift}_hi"] - rows[lift]]).clip(min=0)
            ax.bar(x + (j - 0.5) * 0.38, rows[key], width=0.36, color=color, label=f"{g} units",
                   yerr=err, error_kw={"lw": 0.8, "capsize": 2})
            ax.scatter(x + (j - 0.5) * 0.38, rows["chance"], marker="_", s=140, color="black", zorder=3,
                       label="chance (part's share)" if j == 0 else None)
        ax.set_xticks(x, methods, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set(ylim=(0, 1), ylabel=label)
    axes[0].legend(fontsize=7, loc="upper left")
    parts = list(pd.unique(by_part["part"]))
    grid = by_part.pivot(index="method", columns="part", values="lift").reindex(index=methods, columns=parts)
    v = float(np.nanmax(np.abs(grid.to_numpy()))) if np.isfinite(grid.to_numpy()).any() else 1.0
    im = axes[2].imshow(grid.to_numpy(dtype=float), cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
    for (i, j), val in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(val):
            axes[2].text(j, i, f"{val:+.2f}", ha="center", va="center", fontsize=7)
    axes[2].set_xticks(range(len(parts)), parts, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    axes[2].set_yticks(range(len(methods)), methods, fontsize=8)
    axes[2].set_title("part mass - chance, selective units", fontsize=9)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    source = "the segmenter's masks" if part_source == "segmenter" else "generator's own part maps"
    fig.suptitle(f"Does the map locate the part the unit is labelled with? ({source})")
    save_figure(fig, path, dpi)


def plot_sanity(sanity: pd.DataFrame, flagged: Sequence[str], path: str | os.PathLike,
                flag_at: Optional[float] = None, dpi: int = 120) -> None:
    """Rank correlation of each method's maps with the trained model's, as the classifier's
    layers are re-initialised from the top (Adebayo et al. 2018). Dashed: flagged methods."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.set_title("Model randomisation test (Adebayo et al. 2018)", fontsize=9)
    steps = sanity.sort_values("step").drop_duplicates("step")["randomised"].tolist()
    for m, g in sanity.groupby("method", sort=False):
        g = g.sort_values("step")
        ax.plot(g["step"], g["similarity"], marker="o", ms=3, ls="--" if m in flagged else "-",
                lw=2.2 if m == "link" else 1.3, label=m + (" (flagged)" if m in flagged else ""))
    if flag_at is not None:
        ax.axhline(flag_at, color="0.5", lw=0.8, ls=":")
    if steps:
        ax.set_xticks(range(len(steps)), ["trained"] + [f"+ {s}" for s in steps[1:]], rotation=30, ha="right",
                      fontsize=8)
    else:  # attribute_units.sanity_units: 0
        ax.text(0.5, 0.5, "not run (sanity_units: 0)", ha="center", va="center", transform=ax.transAxes)
    ax.set(ylim=(-0.2, 1.05), ylabel="rank correlation of |map| with trained",
           xlabel="layers re-initialised, cumulative from the top")
    if steps:
        ax.legend(fontsize=7)
    save_figure(fig, path, dpi)
