"""What a counterfactual changed: its first and last render measured part by part, and its motion.

The first render of a trajectory is step 0, L(r) (the origin as the link renders it);
the last is the render at which the target won (or the last step of a failed
trajectory). Each pair is measured like a tuning pair (docs/method.md sections 5 and 7):
`linkstyle.measure.parts.pair_changes` on the few-shot segmenter's masks (from each
render's own w, as `linkstyle.measure.quantify` does) and on the generator's part maps
where it has them, and `linkstyle.measure.motion` (affine + residual motion, per part of
the first render's masks). Output: one long table

  family, source, trajectory, origin, target, seed, success, part, metric, change

with family "parts" (metrics of `parts.CHANGE_METRICS`) or "motion" (`motion.IMAGE_METRICS`
on part "image", `motion.PART_METRICS` per part). Parts whose mean area over all
trajectories and both renders is under `min_part_area` px are left out of the part rows,
once over all trajectories, so nothing depends on batching.

`shifted_units` lists, per class pair, the units whose r moved most on the way, with the
labels `analyze_units` gave them (reports/units.csv).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from linkstyle.core import h5
from linkstyle.core.errors import UserError
from linkstyle.explain.counterfactuals import FRAME_FIELDS, CounterfactualConfig
from linkstyle.measure.motion import estimate_motion, motion_table
from linkstyle.measure.parts import pair_changes
from linkstyle.measure.segmenter import segment_w

KEY_COLUMNS = ("trajectory", "origin", "target", "seed", "success")
CHANGE_COLUMNS = ("family", "source") + KEY_COLUMNS + ("part", "metric", "change")
UNIT_LABEL_COLUMNS = ("unit", "strongest_part", "metric")


def first_last(f) -> dict:
    """First and last frame of every trajectory: images, w, generator part maps (if stored), and keys."""
    steps = f["frames/steps"][:]
    n = len(steps)
    last = (steps >= 0).sum(1) - 1
    rows = np.arange(n)

    def ends(name):
        a = f[f"frames/{name}"][:]  # frames are small (n_frames per trajectory); read once
        return a[:, 0], a[rows, last]

    out = {"images": ends("images"), "w": ends("w"), "parts": ends("parts") if "parts" in f["frames"] else None}
    t = f["trajectories"]
    out["keys"] = pd.DataFrame({"trajectory": rows.astype(np.int64), "origin": t["origin"][:].astype(np.int64),
                                "target": t["target"][:].astype(np.int64), "seed": t["sample_seed"][:].astype(np.int64),
                                "success": t["success"][:].astype(bool)})
    return out


def quantify_counterfactuals(path: str | os.PathLike, gen, segmenter, cfg: CounterfactualConfig) -> pd.DataFrame:
    """The long change table (see the module docstring) of every trajectory in `path`."""
    with h5.open_checked(path, {"frames": FRAME_FIELDS, "trajectories": ("origin", "target", "sample_seed", "success")},
                         producer="counterfactuals") as f:
        ends = first_last(f)
    names = tuple(segmenter.label_names)
    keys = ends["keys"]
    if not len(keys):
        return pd.DataFrame({c: [] for c in CHANGE_COLUMNS})
    (img_f, img_l), (w_f, w_l) = ends["images"], ends["w"]
    sources = {"segmenter": tuple(segment_w(segmenter, gen, torch.as_tensor(w, device=gen.device), cfg.batch_size)
                                  for w in (w_f, w_l))}
    if ends["parts"] is not None:
        if gen.part_names is not None and tuple(gen.part_names) != names:
            raise UserError(f"segmenter labels {list(names)} differ from the generator's parts {list(gen.part_names)}; "
                            "retrain the segmenter for this generator (dvc repro train_segmenter)")
        sources["ground_truth"] = ends["parts"]
    motion = estimate_motion(img_f, img_l, cfg.motion)
    # motion_table names its item columns unit/seed/class: the trajectory stands in for the unit.
    mkeys = pd.DataFrame({"unit": keys["trajectory"], "seed": keys["seed"], "class": keys["origin"]})
    tables = []
    for source, (m_first, m_last) in sources.items():
        parts = pair_changes(img_f, m_first, img_l, m_last, names, keys=keys, entropy_radius=cfg.entropy_radius,
                             min_region_px=cfg.min_region_px, min_part_area=cfg.min_part_area)
        tables.append(parts.assign(family="parts", source=source))
        mot = motion_table(motion, m_first, names, mkeys, source).drop(columns=["unit", "seed", "class", "source"])
        per_row = len(mot) // len(keys)
        mot = pd.concat([keys.iloc[np.repeat(np.arange(len(keys)), per_row)].reset_index(drop=True), mot], axis=1)
        tables.append(mot.assign(family="motion", source=source))
    out = pd.concat(tables, ignore_index=True)
    return out[list(CHANGE_COLUMNS)]


def read_unit_labels(path: str | os.PathLike) -> pd.DataFrame:
    """The analyze_units table (unit, strongest_part, metric, ...), checked."""
    if not os.path.exists(path):
        raise UserError(f"{path}: not found; run stage 'analyze_units' first (dvc repro analyze_units)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a CSV table ({str(e).splitlines()[0][:80]}); rerun dvc repro analyze_units") from None
    missing = [c for c in UNIT_LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column {missing[0]!r}; it needs {', '.join(UNIT_LABEL_COLUMNS)} "
                        "(rerun dvc repro analyze_units)")
    # analyze_units writes a row for every tuned unit; a table without rows would label every
    # moved unit "unlabelled" and still end in success.
    if table.empty:
        raise UserError(f"{path}: the table has its header but no units; rerun dvc repro analyze_units")
    return table


def shifted_units(f, labels: pd.DataFrame, n_top: int) -> pd.DataFrame:
    """Per class pair, the n_top units with the largest mean |delta_r| over its successful trajectories.

    Columns: origin, target, origin_name, target_name, rank, unit, mean_delta (signed mean
    of relu(r - s) - r), mean_abs_delta, top_share (share of the pair's successful
    trajectories that have the unit among their own top units), n_success, then the
    unit's label from analyze_units (strongest_part, metric; empty if not in the table).
    """
    t = f["trajectories"]
    origin, target, ok = t["origin"][:], t["target"][:], t["success"][:].astype(bool)
    delta, tops = t["delta_r"][:], t["top_units"][:]
    names = h5.get_attr(f, "class_names")
    rows = []
    for o, tt in np.unique(np.stack([origin, target], 1), axis=0):
        sel = np.flatnonzero((origin == o) & (target == tt) & ok)
        if not len(sel):
            continue
        d = delta[sel]
        mean_abs = np.abs(d).mean(0)
        best = np.argsort(-mean_abs, kind="stable")[:n_top]
        share = np.array([(tops[sel] == u).any(1).mean() for u in best])
        for rank, (u, sh) in enumerate(zip(best, share)):
            rows.append({"origin": int(o), "target": int(tt), "origin_name": names[o], "target_name": names[tt],
                         "rank": rank, "unit": int(u), "mean_delta": float(d[:, u].mean()),
                         "mean_abs_delta": float(mean_abs[u]), "top_share": float(sh), "n_success": len(sel)})
    table = pd.DataFrame(rows, columns=["origin", "target", "origin_name", "target_name", "rank", "unit", "mean_delta",
                                        "mean_abs_delta", "top_share", "n_success"])
    lab = labels[list(UNIT_LABEL_COLUMNS)].drop_duplicates("unit")
    return table.merge(lab, on="unit", how="left").fillna({"strongest_part": "", "metric": ""})
