"""Systematic analysis across units (docs/method.md section 6; the paper's Fig. 4 and 5).

Input is the tidy change table of `linkstyle.quantify` (source, unit, seed, class,
part, metric, change; area change already divided by the step-0 area, luminance by
85). Per unit and (part, metric) the analysis takes the mean change over test seeds:
- selectivity: the (part, metric) with the strongest change, how strong, how
  consistent across seeds, and how sparse over parts (Hoyer, `linkstyle.sparsity`);
- semantic order: t-SNE and hierarchical clustering of the units' label vectors;
- strips: renders of the most selective units across steps, for a few seeds.
Metrics live on different scales (area is a ratio, entropy in bits), so wherever
metrics compete, each is divided by its std over all units, parts and seeds first.

Motion metrics (`quantify_motion`'s table, same format) are treated like part metrics:
`metrics` may name them, and `motion_metrics` get a selectivity table of their own
(`motion_tables`): per unit the (part, motion metric) that moves most, as consistently.
Whole-image motion (affine translation, rotation, scale, shear) has the one part "image".

Units the sweep could not move (unreachable: dead, no gradient, transfer below the floor;
`linkstyle.explain.faithfulness.reachability`) have renders that do not show the unit, so
their changes are left out before anything is computed: they get no label, count in no
summary, cluster or strip, and keep a row in the unit tables that says why
(`reachable`, `unreachable_reason`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from linkstyle.analyze.sparsity import label_sparsity
from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.explain.faithfulness import UNREACHABLE_REASONS, read_reachability
from linkstyle.measure.motion import IMAGE_METRICS, IMAGE_PART, PART_METRICS

MOTION_METRICS = tuple(dict.fromkeys(IMAGE_METRICS + PART_METRICS))  # the metrics read from the motion table

SOURCES = ("segmenter", "ground_truth")
LINKAGES = ("ward", "average")
COLUMNS = ("source", "unit", "seed", "class", "part", "metric", "change")
KEY = ["unit", "part", "metric"]


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of stage `analyze_units`."""

    metrics: tuple[str, ...] = ("area", "luminance", "entropy_mean")  # the label vectors' metrics (part or motion)
    # Motion metrics of the second selectivity table (reports/units_motion.csv).
    motion_metrics: tuple[str, ...] = ("motion", "shift_x", "shift_y", "translation_x", "translation_y", "rotation", "scale")
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
        object.__setattr__(self, "motion_metrics", tuple(self.motion_metrics))
        check(len(self.motion_metrics) >= 1, "motion_metrics", "must list at least one motion metric, e.g. [motion, rotation]")
        check(len(set(self.motion_metrics)) == len(self.motion_metrics), "motion_metrics",
              f"has duplicates: {list(self.motion_metrics)}")
        unknown = [m for m in self.motion_metrics if m not in MOTION_METRICS]
        check(not unknown, "motion_metrics", f"{unknown[0] if unknown else ''!r} is no motion metric; "
              f"choose from {', '.join(MOTION_METRICS)}")
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


def unit_tables(sel: pd.DataFrame, cfg: AnalysisConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label vectors, selectivity table) of the selected changes (`select_changes`).

    vectors: units x (metric, part), the mean change over seeds (NaN where a part is absent).
    selectivity: one row per unit, its strongest (part, metric) and how selective it is
    there. strongest = the (part, metric) with the largest |mean change over seeds| after
    each metric is divided by its std over all units, parts and seeds (metrics have unlike
    units, so raw sizes would always favour the widest one); `scaled_change` is that
    ratio. consistency = fraction of seeds whose change has the sign of the mean;
    sparsity = Hoyer sparsity over parts of the mean |change| in that metric (1: one
    part carries all). selectivity = |scaled_change| x consistency ranks the strips.
    """
    parts = _parts(sel)
    stats = _unit_stats(sel, cfg)
    return _vectors(stats, parts, cfg), _selectivity(sel, stats, parts, cfg)


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
    from linkstyle.core.h5 import get_attr

    value = get_attr(tuning, key) if hasattr(tuning, "attrs") else tuning.get(key)
    return None if value is None else [str(v) for v in value]


def _index(tuning, key: str) -> dict[int, int]:
    return {int(v): i for i, v in enumerate(np.asarray(tuning[key]).tolist())}


def analyze(changes: pd.DataFrame, tuning, cfg: AnalysisConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """All of section 6 on one change table; `tuning` is the open tuning HDF5 file or a
    mapping with arrays units, seeds (and optionally class_names, reachable and
    unreachable_reason; without them every unit counts as reachable).

    Returns (tables, metrics). tables: units (selectivity + tsne_x, tsne_y, cluster,
    leaf, reachable, unreachable_reason; unreachable units with no label), vectors (units x
    (metric, part) mean change), sparsity (per unit, metric), sparsity_by_class,
    class_sparsity (per class, metric), linkage, strips (with the renders' unit_index and
    seed_index in the tuning file). Everything but the units table's rows is of the
    reachable units only.
    """
    reach = read_reachability(tuning)
    sel = leave_out_unreachable(select_changes(changes, cfg), reach)
    parts = _parts(sel)
    vectors, table = unit_tables(sel, cfg)
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

    tables = {"units": mark_reachability(table, reach), "vectors": vectors, "sparsity": sparsity,
              "sparsity_by_class": by_class, "class_sparsity": class_summary, "strips": strips,
              "linkage": pd.DataFrame(z, columns=["left", "right", "distance", "size"])}
    return tables, {**summarize(tables, cfg, n_seeds=int(sel["seed"].nunique()), parts=parts),
                    **unreachable_summary(reach, changes)}


def leave_out_unreachable(changes: pd.DataFrame, reach: pd.DataFrame) -> pd.DataFrame:
    """The change rows of the reachable units (`read_reachability`): an unreachable unit's
    renders do not show it, so what they change is no finding."""
    gone = reach.loc[~reach["reachable"], "unit"].to_numpy()
    kept = changes[~changes["unit"].isin(gone)].reset_index(drop=True)
    if len(changes) and kept.empty:
        why = reach.loc[~reach["reachable"], "unreachable_reason"].value_counts().to_dict()
        raise UserError(f"analysis: every tuned unit is unreachable ({why}), so no unit has a label; "
                        "check the tuning run's transfer (reports/tuning.json) or lower tune_units.min_transfer")
    return kept


def mark_reachability(table: pd.DataFrame, reach: pd.DataFrame) -> pd.DataFrame:
    """A unit table with columns reachable and unreachable_reason, and a row (no label) for
    each unreachable unit, so the table says why that unit has none."""
    bad = reach[~reach["reachable"]]
    why = {int(u): str(r) for u, r in zip(bad["unit"], bad["unreachable_reason"])}
    extra = bad.loc[~bad["unit"].isin(table["unit"]), ["unit"]]
    out = table.copy()
    if len(extra):
        out = pd.concat([out, extra], ignore_index=True)
        for c in table.columns:  # integer columns (cluster, leaf, n_seeds) stay integers, empty where no label
            if c != "unit" and pd.api.types.is_integer_dtype(table[c]):
                out[c] = out[c].astype("Int64")
    out["reachable"] = ~out["unit"].isin(list(why))
    out["unreachable_reason"] = [why.get(int(u), "") for u in out["unit"]]
    return out.sort_values("unit", kind="stable").reset_index(drop=True)


def unreachable_summary(reach: pd.DataFrame, changes: pd.DataFrame) -> dict:
    """How many units were left out of the label statistics, and why (reports/analysis.json)."""
    gone = reach[~reach["reachable"]]
    return {"unreachable_units": int(len(gone)),
            "unreachable_by_reason": {r: int((gone["unreachable_reason"] == r).sum()) for r in UNREACHABLE_REASONS},
            "unreachable_units_left_out": int(gone["unit"].isin(changes["unit"]).sum())}


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


def _read_rows(path: str | os.PathLike, source: str, metrics: list[str], stage: str, param: str) -> pd.DataFrame:
    """The rows of one source and these metrics of a change table written by `stage`, checked."""
    import pyarrow.parquet as pq

    path = Path(path)
    fix = f"rerun dvc repro {stage}"
    if not path.exists():
        raise UserError(f"{path}: not found; run dvc repro {stage} first")
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: no column {missing[0]!r}; not written by this version of {stage}, {fix}")
        df = pd.read_parquet(path, columns=list(COLUMNS), filters=[("source", "==", source), ("metric", "in", metrics)])
        held = None
        if df.empty or not set(metrics) <= set(df["metric"].unique()):  # say what the file does hold
            held = pd.read_parquet(path, columns=["source", "metric"]).drop_duplicates()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:120]}); delete it and {fix}") from None
    if held is not None:
        raise UserError(f"{path}: no changes of source {source!r} for every metric of {metrics}; it holds "
                        f"sources {sorted(held['source'].unique())} and metrics {sorted(held['metric'].unique())}; "
                        f"fix analyze_units.source or analyze_units.{param}")
    return df


def read_changes(path: str | os.PathLike, cfg: AnalysisConfig) -> pd.DataFrame:
    """The configured source's rows of the part metrics in `cfg.metrics` (the full table holds every metric twice)."""
    metrics = [m for m in cfg.metrics if m not in MOTION_METRICS]
    if not metrics:
        return pd.DataFrame({c: [] for c in COLUMNS})
    return _read_rows(path, cfg.source, metrics, "quantify_parts", "metrics")


def read_motion(path: str | os.PathLike, cfg: AnalysisConfig) -> pd.DataFrame:
    """The configured source's rows of the motion metrics in `cfg.metrics` and `cfg.motion_metrics`.

    A per-part metric (e.g. `motion`) also has a whole-image row; that row is dropped,
    so the metric competes over the parts only, like a part metric.
    """
    metrics = list(dict.fromkeys([m for m in cfg.metrics if m in MOTION_METRICS] + list(cfg.motion_metrics)))
    df = _read_rows(path, cfg.source, metrics, "quantify_motion", "motion_metrics")
    drop = df["metric"].isin(PART_METRICS) & (df["part"] == IMAGE_PART)
    return df[~drop].reset_index(drop=True)


def combine(changes: pd.DataFrame, motion: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Part-metric changes plus the motion rows that `cfg.metrics` names: the input of `analyze`."""
    extra = motion[motion["metric"].isin([m for m in cfg.metrics if m in MOTION_METRICS])]
    frames = [f for f in (changes, extra) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else changes


def motion_tables(motion: pd.DataFrame, cfg: AnalysisConfig,
                  reach: Optional[pd.DataFrame] = None) -> tuple[pd.DataFrame, dict]:
    """Selectivity table of `cfg.motion_metrics` (the columns of the units table's selectivity part) and its summary.

    `reach` (`read_reachability` of the tuning file): unreachable units are left out and
    marked, as in `analyze`; None counts every unit as reachable.
    """
    mcfg = replace(cfg, metrics=cfg.motion_metrics)
    sel = select_changes(motion, mcfg)
    if reach is not None:
        sel = leave_out_unreachable(sel, reach)
    _, table = unit_tables(sel, mcfg)
    if reach is not None:
        table = mark_reachability(table, reach)
    named = table.dropna(subset=["strongest_part"])
    parts = _parts(sel)
    summary = {
        "metrics": list(cfg.motion_metrics), "n_units_with_change": len(named),
        "units_per_part": {p: int((named["strongest_part"] == p).sum()) for p in parts},
        "units_per_metric": {m: int((named["metric"] == m).sum()) for m in cfg.motion_metrics},
        "consistent_fraction": float((named["consistency"] >= cfg.consistent_at).mean()) if len(named) else None,
        "median_selectivity": float(named["selectivity"].median()) if len(named) else None,
    }
    return table, summary
