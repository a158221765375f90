"""Scores of heat maps on the generator's own part maps, and the similarity of two maps.

For a map h [H, W] and the mask M of the part a unit is labelled with:
- part mass: the share of the positive heat inside the part, sum(h+ M) / sum(h+);
  its chance level is the part's share of the image, mean(M) (a map spread evenly, or
  placed at random, scores that on average);
- pointing game (Zhang et al. 2016): 1 if the pixel of largest heat lies in the part;
  chance is again mean(M);
- a map without positive heat is "empty" and scores NaN (it points nowhere).
Similarity of two maps (the randomisation test): Spearman's rank correlation of |h|.
Everything works on stacks [N, H, W] at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from linkstyle.core.stats import rowwise_corr


def part_scores(heat: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """heat [N, H, W] float, mask [N, H, W] bool -> mass, chance, hit, empty, each [N]."""
    h = np.asarray(heat, dtype=np.float64).reshape(len(heat), -1)
    m = np.asarray(mask, dtype=bool).reshape(len(mask), -1)
    pos = np.clip(h, 0.0, None)
    total = pos.sum(1)
    empty = ~(total > 0) | ~np.isfinite(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        mass = np.where(empty, np.nan, (pos * m).sum(1) / np.where(empty, 1.0, total))
    top = np.argmax(np.nan_to_num(h, nan=-np.inf), axis=1)  # ties: the first pixel in row-major order
    hit = np.where(empty, np.nan, m[np.arange(len(m)), top].astype(np.float64))
    return {"mass": mass, "chance": m.mean(1), "hit": hit, "empty": empty}


def rank_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of |a_i| and |b_i| per map [N]; NaN where either is constant."""
    a = np.abs(np.asarray(a, dtype=np.float64).reshape(len(a), -1))
    b = np.abs(np.asarray(b, dtype=np.float64).reshape(len(b), -1))
    flat = (a.max(1) == a.min(1)) | (b.max(1) == b.min(1)) | ~np.isfinite(a).all(1) | ~np.isfinite(b).all(1)
    rho = rowwise_corr(rankdata(np.nan_to_num(a), axis=1), rankdata(np.nan_to_num(b), axis=1))
    return np.where(flat, np.nan, rho)


def unit_similarity(heat: np.ndarray, valid: np.ndarray) -> float:
    """How alike a method's maps of different units on the same image are: Spearman's
    correlation of |heat| between every two units, over the pairs where both maps are valid
    (`valid` [U, S]: the unit is active and the map not constant), averaged over images.
    Near 1: the map is the same whatever the unit, so it cannot point at a unit's own part."""
    U, S = heat.shape[:2]
    flat = np.abs(np.nan_to_num(np.asarray(heat, dtype=np.float64).reshape(U, S, -1)))
    ok = np.asarray(valid, dtype=bool) & (flat.max(2) > flat.min(2))
    z = rankdata(flat, axis=2)
    z = (z - z.mean(2, keepdims=True)) / z.std(2, keepdims=True).clip(min=1e-12)
    corr = np.einsum("usp,vsp->suv", z, z) / z.shape[2]  # [S, U, U]
    both = ok.T[:, :, None] & ok.T[:, None, :] & ~np.eye(U, dtype=bool)[None]
    return float(corr[both].mean()) if both.any() else float("nan")


def summarize(scores: pd.DataFrame, by: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per group: mean part mass and its chance, pointing-game accuracy (hits over the maps
    that point), pairs, empty maps, units whose mean mass beats their mean chance, and 95%
    bootstrap intervals (over units, `n_boot` resamples) of the two lifts over chance.

    Units are weighted equally: each unit's mean over its seeds first, then the mean over
    units, so a unit with more seeds does not count more.
    """
    per_unit = (scores.groupby(by + ["unit"], sort=False)
                .agg(mass=("mass", "mean"), chance=("chance", "mean"), hit=("hit", "mean"),
                     n_pairs=("mass", "size"), n_empty=("empty", "sum")).reset_index())
    per_unit["above"] = per_unit["mass"] > per_unit["chance"]
    out = (per_unit.groupby(by, sort=False)
           .agg(part_mass=("mass", "mean"), chance=("chance", "mean"), pointing=("hit", "mean"),
                n_units=("unit", "size"), units_above_chance=("above", "sum"), n_pairs=("n_pairs", "sum"),
                n_empty=("n_empty", "sum")).reset_index())
    out["lift"] = out["part_mass"] - out["chance"]
    out["pointing_lift"] = out["pointing"] - out["chance"]
    intervals = []
    for _, g in per_unit.groupby(by, sort=False):
        row = {}
        for key, value in (("lift", g["mass"] - g["chance"]), ("pointing_lift", g["hit"] - g["chance"])):
            v = value.to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v):
                means = v[np.random.RandomState(seed).randint(0, len(v), (n_boot, len(v)))].mean(1)
                row[f"{key}_lo"], row[f"{key}_hi"] = np.percentile(means, [2.5, 97.5])
            else:
                row[f"{key}_lo"] = row[f"{key}_hi"] = np.nan
        intervals.append(row)
    return pd.concat([out, pd.DataFrame(intervals, index=out.index)], axis=1)
