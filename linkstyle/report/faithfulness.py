"""Figure of the two tuning modes side by side: faithfulness per unit, and render strips.

Reads the table of `linkstyle.explain.faithfulness.compare_modes` and the renders of the
two tuning files; computes nothing new.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from linkstyle.core import h5
from linkstyle.report.figures import save_figure
from linkstyle.report.units import _strip_canvas

MODE_COLORS = ("tab:gray", "tab:orange")


def _modes(table: pd.DataFrame) -> list[str]:
    return [c[len("transfer_"):] for c in table.columns if c.startswith("transfer_")]


def plot_tuning_modes(table: pd.DataFrame, tuning_files: Sequence[str | os.PathLike], path: str | os.PathLike,
                      units: Sequence[int], n_seeds: int = 4, dpi: int = 120) -> None:
    """Top: per-unit transfer and off-target of each mode; below: for `units`, the first
    `n_seeds` seeds' renders across steps, one row per (unit, mode), the modes in the
    order of `tuning_files` (the order of `table`'s columns)."""
    from matplotlib.figure import Figure

    modes = _modes(table)
    frames, values, seeds, index = [], None, None, None
    for p in tuning_files:
        with h5.open_checked(p, {"": ("renders", "units", "seeds", "values")}, producer="tune_units") as f:
            all_units = f["units"][:]
            pos = {int(u): i for i, u in enumerate(all_units)}
            index = [pos[int(u)] for u in units]
            k = min(n_seeds, f["seeds"].shape[0])
            frames.append([f["renders"][i, :k] for i in index])
            values, seeds = f["values"][:], f["seeds"][:k]
    n_rows = len(units) * len(modes)
    steps = frames[0][0].shape[1] if n_rows else 1
    width = max(9.0, 1.6 + 0.85 * len(seeds if seeds is not None else [0]) * steps)
    fig = Figure(figsize=(width, 3.6 + 1.25 * max(1, n_rows)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.4, 1.25 * max(1, n_rows)])
    ax_tr, ax_off, ax_sc = top.subplots(1, 3)
    jitter = np.random.default_rng(0)  # fixed: the same table gives the same picture
    for k, (mode, color) in enumerate(zip(modes, MODE_COLORS)):
        for ax, col in ((ax_tr, "transfer"), (ax_off, "off_target")):
            v = table[f"{col}_{mode}"].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v):
                ax.boxplot([v], positions=[k], widths=0.55, showfliers=False, medianprops={"color": "black"})
                ax.scatter(k + jitter.uniform(-0.18, 0.18, len(v)), v, s=5, color=color, alpha=0.5, lw=0)
                ax.text(k, np.max(v), f"median\n{np.median(v):.3f}", ha="center", va="bottom", fontsize=7)
        ax_sc.scatter(table[f"off_target_{mode}"], table[f"transfer_{mode}"], s=7, color=color, alpha=0.6, lw=0,
                      label=mode.replace("_", " "))
    for ax, title in ((ax_tr, "transfer: moved r~_i / set change"),
                      (ax_off, "off-target: ||change of r~ without i|| / set change")):
        ax.set_xticks(range(len(modes)), [m.replace("_", " ") for m in modes])
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
    ax_tr.axhline(1.0, color="0.6", lw=0.6, ls=":")
    ax_tr.axhline(0.0, color="0.6", lw=0.6)
    ax_sc.set(xlabel="off-target", ylabel="transfer")
    ax_sc.set_title("per unit (median over seeds)", fontsize=9)
    ax_sc.legend(frameon=False, fontsize=8)
    top.suptitle(f"Tuning {len(table)} units: how much of the set change reaches the render's re-encoding", fontsize=10)

    axes = bottom.subplots(max(1, n_rows), 1, squeeze=False)[:, 0]
    row = 0
    for j, unit in enumerate(units):
        for m, mode in enumerate(modes):
            ax = axes[row]
            canvas, tiles, _ = _strip_canvas(frames[m][j], len(seeds))
            ax.imshow(canvas, interpolation="nearest")
            ax.set(yticks=[], frame_on=False)
            ax.set_xticks(tiles, [f"{v:.2g}" for v in np.tile(values[index[j]], len(seeds))], fontsize=6)
            t = table.loc[table["unit"] == unit]
            tr, off = t[f"transfer_{mode}"].iloc[0], t[f"off_target_{mode}"].iloc[0]
            ax.set_title(f"unit {unit}, {mode.replace('_', ' ')}: transfer {tr:.2f}, off-target {off:.2f}",
                         loc="left", fontsize=8, color=MODE_COLORS[m] if m else "0.2")
            row += 1
    if not n_rows:
        axes[0].set_axis_off()
    axes[-1].set_xlabel(f"set value of the unit at each step, seeds {', '.join(str(s) for s in seeds)} left to right",
                        fontsize=8)
    save_figure(fig, path, dpi)
