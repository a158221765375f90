"""Systematic analysis across units (METHOD.md section 6; the paper's Fig. 4 and 5).

Input is the tidy change table of `linkstyle.quantify` (source, unit, seed, class,
part, metric, change; area change already divided by the step-0 area, luminance by
85). Per unit and (part, metric) the analysis takes the mean change over test seeds:
- selectivity: the (part, metric) with the strongest change, how strong, how
  consistent across seeds, and how sparse over parts (Hoyer, `linkstyle.sparsity`);
- semantic order: t-SNE and hierarchical clustering of the units' label vectors;
- strips: renders of the most selective units across steps, for a few seeds.
Metrics live on different scales (area is a ratio, entropy in bits), so wherever
metrics compete, each is divided by its std over all units, parts and seeds first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from .config import check
from .errors import UserError
from .io import atomic_path
from .sparsity import label_sparsity

SOURCES = ("segmenter", "ground_truth")
LINKAGES = ("ward", "average")
COLUMNS = ("source", "unit", "seed", "class", "part", "metric", "change")
KEY = ["unit", "part", "metric"]


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of stage `analyze_units`."""

    metrics: tuple[str, ...] = ("area", "luminance", "entropy_mean")  # the label vectors' metrics
    source: str = "segmenter"        # whose masks' changes: segmenter or ground_truth
    n_top_units: int = 2             # units per part shown in the strips
    n_strip_seeds: int = 4           # seeds per unit shown in the strips
    tsne_perplexity: float = 30.0    # clipped to (n_units - 1) / 3 for few units
    linkage: str = "ward"            # hierarchical clustering method: ward or average
    consistent_at: float = 0.8       # consistency that counts a unit as consistent (metrics)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        check(len(self.metrics) >= 1, "metrics", "must list at least one metric, e.g. [area, luminance, entropy_mean]")
        check(len(set(self.metrics)) == len(self.metrics), "metrics", f"has duplicates: {list(self.metrics)}")
        check(self.source in SOURCES, "source", f"must be one of {', '.join(SOURCES)}, got {self.source!r}")
        check(self.n_top_units >= 1, "n_top_units", f"must be at least 1, got {self.n_top_units}")
        check(self.n_strip_seeds >= 1, "n_strip_seeds", f"must be at least 1, got {self.n_strip_seeds}")
        check(self.tsne_perplexity > 0, "tsne_perplexity", f"must be positive, got {self.tsne_perplexity}")
        check(self.linkage in LINKAGES, "linkage", f"must be one of {', '.join(LINKAGES)}, got {self.linkage!r}")
        check(0.0 <= self.consistent_at <= 1.0, "consistent_at", f"must be in [0, 1], got {self.consistent_at}")
        check(self.seed >= 0, "seed", f"must be non-negative, got {self.seed}")


def select_changes(changes: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """The rows of `cfg.source` and `cfg.metrics`; one-line errors for what is missing."""
    missing = [c for c in COLUMNS if c not in changes.columns]
    if missing:
        raise UserError(f"analysis: changes lack column {missing[0]!r}; they need {', '.join(COLUMNS)}")
    sel = changes[changes["source"] == cfg.source]
    if sel.empty:
        raise UserError(f"analysis: no changes of source {cfg.source!r} (present: {sorted(changes['source'].unique())}); "
                        "set analyze_units.source")
    absent = [m for m in cfg.metrics if m not in set(sel["metric"].unique())]
    if absent:
        raise UserError(f"analysis: metric {absent[0]!r} is not in the changes (present: {sorted(sel['metric'].unique())}); "
                        "fix analyze_units.metrics")
    sel = sel[sel["metric"].isin(cfg.metrics)]
    return sel[list(COLUMNS)].reset_index(drop=True)


def _parts(sel: pd.DataFrame) -> list[str]:
    # Order of first appearance is the quantify stage's part_names order.
    return [str(p) for p in pd.unique(sel["part"])]


def _unit_stats(sel: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Per (unit, part, metric): mean change over seeds, n_seeds, consistency, scaled_change."""
    frame = sel[KEY + ["change"]].copy()
    frame["_mean"] = frame.groupby(KEY, sort=False)["change"].transform("mean")
    agree = np.sign(frame["change"]) == np.sign(frame["_mean"])
    frame["_agree"] = agree.astype(np.float64).where(frame["change"].notna())
    stats = frame.groupby(KEY, sort=False).agg(mean_change=("change", "mean"), n_seeds=("change", "count"),
                                               consistency=("_agree", "mean")).reset_index()
    scale = sel.groupby("metric", sort=False)["change"].std()
    scale = scale.where((scale > 0) & np.isfinite(scale), 1.0)  # a constant metric stays unscaled
    stats["scaled_change"] = stats["mean_change"] / stats["metric"].map(scale).astype(np.float64)
    stats["selectivity"] = stats["scaled_change"].abs() * stats["consistency"]
    return stats


def _vectors(stats: pd.DataFrame, parts: list[str], cfg: AnalysisConfig) -> pd.DataFrame:
    wide = stats.pivot(index="unit", columns=["metric", "part"], values="mean_change")
    cols = pd.MultiIndex.from_product([list(cfg.metrics), parts], names=["metric", "part"])
    wide = wide.reindex(columns=cols).sort_index()
    return wide.loc[:, wide.notna().any(axis=0)]


def unit_label_vectors(changes: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Units x (metric, part): mean change over seeds (NaN where a part is absent)."""
    sel = select_changes(changes, cfg)
    return _vectors(_unit_stats(sel, cfg), _parts(sel), cfg)


def _selectivity(sel: pd.DataFrame, stats: pd.DataFrame, parts: list[str], cfg: AnalysisConfig) -> pd.DataFrame:
    ranked = stats.assign(_abs=stats["scaled_change"].abs().fillna(-1.0),
                          _p=stats["part"].map({p: i for i, p in enumerate(parts)}),
                          _m=stats["metric"].map({m: i for i, m in enumerate(cfg.metrics)}))
    # Ties go to the earlier part, then the earlier metric, so reruns pick the same one.
    ranked = ranked.sort_values(["unit", "_abs", "_p", "_m"], ascending=[True, False, True, True], kind="stable")
    best = ranked.drop_duplicates("unit").rename(columns={"part": "strongest_part"})
    none = best["mean_change"].isna()
    best["strongest_part"] = best["strongest_part"].astype(object).where(~none, None)
    best["metric"] = best["metric"].astype(object).where(~none, None)
    sparse = label_sparsity(sel, by=("unit",))[["unit", "metric", "sparsity"]]
    table = best.merge(sparse, on=["unit", "metric"], how="left")
    cols = ["unit", "strongest_part", "metric", "mean_change", "consistency", "sparsity",
            "scaled_change", "selectivity", "n_seeds"]
    return table[cols].sort_values("unit", kind="stable").reset_index(drop=True)


def selectivity_table(changes: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """One row per unit: its strongest (part, metric) and how selective it is there.

    strongest = the (part, metric) with the largest |mean change over seeds| after each
    metric is divided by its std over all units, parts and seeds (metrics have unlike
    units, so raw sizes would always favour the widest one); `scaled_change` is that
    ratio. consistency = fraction of seeds whose change has the sign of the mean;
    sparsity = Hoyer sparsity over parts of the mean |change| in that metric (1: one
    part carries all). selectivity = |scaled_change| x consistency ranks the strips.
    """
    sel = select_changes(changes, cfg)
    return _selectivity(sel, _unit_stats(sel, cfg), _parts(sel), cfg)


def class_sparsity(changes: pd.DataFrame, cfg: AnalysisConfig,
                   class_names: Optional[list[str]] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label sparsity per (class, unit, metric), and its mean/median over units per (class, metric)."""
    long = label_sparsity(select_changes(changes, cfg), by=("class", "unit"))
    summary = (long.groupby(["class", "metric"], sort=False)["sparsity"]
               .agg(mean_sparsity="mean", median_sparsity="median", n_units="count").reset_index())
    names = {i: str(n) for i, n in enumerate(class_names or [])}
    for df in (long, summary):
        df.insert(1, "class_name", df["class"].map(lambda c: names.get(int(c), str(c))))
    return long, summary.sort_values(["class", "metric"], kind="stable").reset_index(drop=True)


def _standardise(vectors: pd.DataFrame) -> np.ndarray:
    x = vectors.to_numpy(dtype=np.float64)
    mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
    std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
    z = (x - mean) / np.where(std > 0, std, 1.0)
    return np.nan_to_num(z, nan=0.0)  # an absent part sits at the column mean


def effective_perplexity(n_units: int, cfg: AnalysisConfig) -> float:
    """cfg.tsne_perplexity, lowered to (n - 1) / 3 (at least 1) so few units can be embedded."""
    return float(min(cfg.tsne_perplexity, max(1.0, (n_units - 1) / 3.0)))


def tsne_embedding(vectors: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Columns unit, tsne_x, tsne_y: t-SNE of the z-scored label vectors (fewer than 3 units: all at 0)."""
    out = pd.DataFrame({"unit": vectors.index.to_numpy(), "tsne_x": 0.0, "tsne_y": 0.0})
    if len(vectors) >= 3 and vectors.shape[1]:
        from sklearn.manifold import TSNE

        z = _standardise(vectors)
        xy = TSNE(n_components=2, perplexity=effective_perplexity(len(z), cfg), init="pca",
                  random_state=cfg.seed).fit_transform(z)
        out["tsne_x"], out["tsne_y"] = xy[:, 0], xy[:, 1]
    return out


def cluster_units(vectors: pd.DataFrame, cfg: AnalysisConfig,
                  n_clusters: Optional[int] = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Hierarchical clustering of the z-scored label vectors.

    Returns (columns unit, cluster, leaf; the linkage matrix). The tree is cut into
    `n_clusters` (default: as many as there are parts, the order a semantic code would
    show); clusters are numbered from 1 in dendrogram leaf order, `leaf` is the row's
    position in that order.
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    n = len(vectors)
    k = n_clusters or vectors.columns.get_level_values("part").nunique()
    if n < 2 or not vectors.shape[1]:
        return (pd.DataFrame({"unit": vectors.index.to_numpy(), "cluster": np.ones(n, np.int64), "leaf": np.arange(n)}),
                np.zeros((0, 4)))
    z = linkage(_standardise(vectors), method=cfg.linkage, metric="euclidean")
    raw = fcluster(z, t=max(1, min(k, n)), criterion="maxclust")
    leaves = leaves_list(z)
    relabel = {c: i + 1 for i, c in enumerate(pd.unique(raw[leaves]))}
    leaf = np.empty(n, dtype=np.int64)
    leaf[leaves] = np.arange(n)
    return pd.DataFrame({"unit": vectors.index.to_numpy(), "cluster": [relabel[c] for c in raw], "leaf": leaf}), z


def strip_selection(changes: pd.DataFrame, table: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """The units and seeds of the render strips (Fig. 4), one row per (unit, seed).

    Per part, the `n_top_units` units with that strongest part and the highest
    selectivity (|scaled mean change| x consistency: strong and reliable). Per unit the
    `n_strip_seeds` seeds whose change goes furthest in the direction of the mean, so
    the strip shows the effect clearly; the row's consistency says how typical it is.
    """
    sel = select_changes(changes, cfg)
    t = table.dropna(subset=["strongest_part"])
    t = t.assign(_p=t["strongest_part"].map({p: i for i, p in enumerate(_parts(sel))}))
    t = t.sort_values(["_p", "selectivity", "unit"], ascending=[True, False, True], kind="stable")
    top = t.groupby("strongest_part", sort=False).head(cfg.n_top_units).reset_index(drop=True)
    top = top.rename(columns={"strongest_part": "part"}).assign(row=np.arange(len(top)))
    rows = sel.merge(top[["row", "unit", "part", "metric", "mean_change"]], on=KEY).dropna(subset=["change"])
    rows["_score"] = np.sign(rows["mean_change"]) * rows["change"]
    rows = rows.sort_values(["row", "_score", "seed"], ascending=[True, False, True], kind="stable")
    rows = rows.groupby("row", sort=False).head(cfg.n_strip_seeds)[["row", "seed", "class", "change"]]
    cols = ["row", "unit", "part", "metric", "mean_change", "consistency", "sparsity", "selectivity"]
    return top[cols].merge(rows.rename(columns={"change": "seed_change"}), on="row")


def _names(tuning, key: str) -> Optional[list[str]]:
    from .h5 import get_attr

    value = get_attr(tuning, key) if hasattr(tuning, "attrs") else tuning.get(key)
    return None if value is None else [str(v) for v in value]


def _index(tuning, key: str) -> dict[int, int]:
    return {int(v): i for i, v in enumerate(np.asarray(tuning[key]).tolist())}


def analyze(changes: pd.DataFrame, tuning, cfg: AnalysisConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """All of section 6 on one change table; `tuning` is the open tuning HDF5 file or a
    mapping with arrays units, seeds (and optionally class_names).

    Returns (tables, metrics). tables: units (selectivity + tsne_x, tsne_y, cluster,
    leaf), vectors (units x (metric, part) mean change), sparsity (per unit, metric),
    sparsity_by_class, class_sparsity (per class, metric), linkage, strips (with the
    renders' unit_index and seed_index in the tuning file).
    """
    sel = select_changes(changes, cfg)
    parts = _parts(sel)
    stats = _unit_stats(sel, cfg)
    vectors = _vectors(stats, parts, cfg)
    table = _selectivity(sel, stats, parts, cfg)
    # As many clusters as parts some unit prefers, so cluster_part_ari compares like with like.
    clusters, z = cluster_units(vectors, cfg, n_clusters=max(1, table["strongest_part"].nunique()))
    table = table.merge(tsne_embedding(vectors, cfg), on="unit", how="left").merge(clusters, on="unit", how="left")
    by_class, class_summary = class_sparsity(sel, cfg, _names(tuning, "class_names"))
    sparsity = label_sparsity(sel, by=("unit",))

    strips = strip_selection(sel, table, cfg)
    strips["class_name"] = strips["class"].map(dict(zip(by_class["class"], by_class["class_name"])))
    strips["unit_index"] = strips["unit"].map(_index(tuning, "units"))
    strips["seed_index"] = strips["seed"].map(_index(tuning, "seeds"))
    lost = strips[strips[["unit_index", "seed_index"]].isna().any(axis=1)]
    if len(lost):
        raise UserError(f"analysis: unit {lost['unit'].iloc[0]} / seed {lost['seed'].iloc[0]} of the changes is not in the "
                        "tuning file; the two come from different runs, recompute the changes from this tuning file")
    strips = strips.astype({"unit_index": np.int64, "seed_index": np.int64})

    tables = {"units": table, "vectors": vectors, "sparsity": sparsity, "sparsity_by_class": by_class,
              "class_sparsity": class_summary, "strips": strips,
              "linkage": pd.DataFrame(z, columns=["left", "right", "distance", "size"])}
    return tables, summarize(tables, cfg, n_seeds=int(sel["seed"].nunique()), parts=parts)


def summarize(tables: dict[str, pd.DataFrame], cfg: AnalysisConfig, n_seeds: int, parts: list[str]) -> dict:
    """The small metrics JSON of the stage."""
    from sklearn.metrics import adjusted_rand_score

    table = tables["units"]
    named = table.dropna(subset=["strongest_part"])
    clustered = named.dropna(subset=["cluster"])
    per_metric = tables["sparsity"].groupby("metric", sort=False)["sparsity"].agg(["mean", "median"])
    return {
        "source": cfg.source, "metrics": list(cfg.metrics), "parts": parts,
        "n_units": len(table), "n_units_with_change": len(named), "n_seeds": n_seeds,
        "sparsity": per_metric.to_dict(orient="index"),
        "class_sparsity": {str(n): dict(zip(g["metric"], g["mean_sparsity"]))
                           for n, g in tables["class_sparsity"].groupby("class_name", sort=False)},
        "consistent_at": cfg.consistent_at,
        "consistent_fraction": float((named["consistency"] >= cfg.consistent_at).mean()) if len(named) else None,
        "median_consistency": named["consistency"].median(), "median_abs_scaled_change": named["scaled_change"].abs().median(),
        "units_per_part": {p: int((named["strongest_part"] == p).sum()) for p in parts},
        "units_per_metric": {m: int((named["metric"] == m).sum()) for m in cfg.metrics},
        "tsne_perplexity": effective_perplexity(len(tables["vectors"]), cfg),
        "n_clusters": int(clustered["cluster"].nunique()),
        # How far the unsupervised clusters follow the parts: 1 = clusters are the parts.
        "cluster_part_ari": adjusted_rand_score(clustered["strongest_part"], clustered["cluster"]) if len(clustered) > 1 else None,
        "strip_units": sorted(set(tables["strips"]["unit"].tolist())),
    }


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    # Figures are made without pyplot (Agg, no process-wide backend). The temp path ends
    # in .tmp, so the format is named; without the Software tag the bytes are stable.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


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
    _save(fig, path, dpi)


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
    _save(fig, path, dpi)


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
    _save(fig, path, dpi)


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
    _save(fig, path, dpi)


def read_changes(path: str | os.PathLike, cfg: AnalysisConfig) -> pd.DataFrame:
    """Only the configured source's and metrics' rows: the full table holds every metric twice."""
    import pyarrow.parquet as pq

    path = Path(path)
    fix = "rerun dvc repro quantify_parts"
    if not path.exists():
        raise UserError(f"{path}: not found; run dvc repro quantify_parts first")
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: no column {missing[0]!r}; not written by this version of quantify_parts, {fix}")
        df = pd.read_parquet(path, columns=list(COLUMNS),
                             filters=[("source", "==", cfg.source), ("metric", "in", list(cfg.metrics))])
        held = None
        if df.empty or not set(cfg.metrics) <= set(df["metric"].unique()):  # say what the file does hold
            held = pd.read_parquet(path, columns=["source", "metric"]).drop_duplicates()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:120]}); delete it and {fix}") from None
    if held is not None:
        raise UserError(f"{path}: no changes of source {cfg.source!r} for every metric of {list(cfg.metrics)}; it holds "
                        f"sources {sorted(held['source'].unique())} and metrics {sorted(held['metric'].unique())}; "
                        "fix analyze_units.source or analyze_units.metrics")
    return df
