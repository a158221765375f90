"""Unsupervised motion of every perturbation pair of a tuning sweep (docs/method.md section 7).

For each (unit, seed), the first and last render of `tuning.h5` go through
`linkstyle.measure.motion.estimate_motion` (global affine + residual flow), and the
motion is summarised per part of the FIRST render, as segmented by the few-shot
segmenter ("segmenter", exactly as `quantify_parts` does) and by the generator's own
part maps where it has them ("ground_truth"). Output: one tidy table in the change
format of `quantify_parts` (source, unit, seed, class, part, metric, change), whole-image
metrics under part "image" (repeated for each source, so either can be analysed alone).

Checks against the generator's part maps: each part's centroid shift between the first
and last map is what the part "moved"; the mean whole displacement (affine + residual)
the flow finds for the part's pixels should agree (`centroid_agreement`). And an affine
fitted to the foreground parts' centroids should agree with the flow's (`centroid_affine`).

`quantify_motion` and `quantify_motion_distributed` return the table in memory;
`write_motion` (what the stage runs, via `quantify_motion_distributed_to`) streams each
block to scratch files as it arrives and writes the table at the end in row groups,
with the same rows, so the stage's memory does not grow with the number of units.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check
from linkstyle.core.distribute import BlockTask, ClusterConfig, map_blocks
from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path, scratch_path
from linkstyle.core.stream import ROW_GROUP_ROWS, Spool, TableWriter, read_row_groups
from linkstyle.measure.motion import (
    IMAGE_METRICS,
    IMAGE_PART,
    PART_METRICS,
    MotionConfig,
    decompose_affine,
    estimate_motion,
    motion_values,
    tidy,
)
from linkstyle.measure.quantify import AgreementStream, _keep_mask, ground_truth_agreement, load_measuring_models
from linkstyle.measure.segmenter import segment_w
from linkstyle.models.registry import GeneratorSpec

TUNING_FIELDS = ("renders", "w", "units", "seeds", "classes")
UNITS_COLUMNS = ("unit", "strongest_part", "selectivity")
CENTROID_MIN_PX = 5  # parts smaller than this in either part map have too unsteady a centroid


@dataclass(frozen=True)
class QuantifyMotionConfig:
    """Options of stage `quantify_motion`."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    min_part_area: float = 20.0   # parts whose mean first-render area is smaller are dropped (as quantify_parts)
    units_per_block: int = 32     # units read, segmented and matched at a time
    batch_size: int = 256         # segmenter batch (masks do not depend on it)
    device: str = "auto"          # segmenter (and the generator features it reads)

    def __post_init__(self):
        check(self.min_part_area >= 0, "min_part_area", f"must be >= 0, got {self.min_part_area}")
        check(self.units_per_block >= 1, "units_per_block", f"must be >= 1, got {self.units_per_block}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class MotionFieldsConfig:
    """Options of stage `motion_fields` (the motion itself is re-estimated with `quantify_motion.motion`)."""

    n_units: int = 6  # most selective units (reports/units_motion.csv) drawn as residual vector fields

    def __post_init__(self):
        check(self.n_units >= 0, "n_units", f"must be >= 0, got {self.n_units}")


def part_counts(masks: np.ndarray, n_parts: int) -> np.ndarray:
    """Pixels of each part in each image, [N, P]."""
    idx = (np.arange(len(masks))[:, None, None] * n_parts + masks.astype(np.int64)).ravel()
    return np.bincount(idx, minlength=len(masks) * n_parts).reshape(len(masks), n_parts)


def centroids(masks: np.ndarray, n_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image and part: pixel count [N, P] and centroid [N, P, 2] (x, y; NaN where absent)."""
    n, h, w = masks.shape
    idx = (np.arange(n)[:, None, None] * n_parts + masks.astype(np.int64)).ravel()
    yy, xx = np.mgrid[0:h, 0:w]
    count = np.bincount(idx, minlength=n * n_parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(idx, weights=np.broadcast_to(xx, masks.shape).ravel(), minlength=n * n_parts) / count
        cy = np.bincount(idx, weights=np.broadcast_to(yy, masks.shape).ravel(), minlength=n * n_parts) / count
    return count.reshape(n, n_parts), np.stack([cx, cy], -1).reshape(n, n_parts, 2)


def _correlation(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return {"pearson": None, "spearman": None, "n": int(len(a))}
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": float(spearmanr(a, b).statistic), "n": int(len(a)),
            "mean_abs_difference": float(np.abs(a - b).mean())}


def centroid_agreement(shift: np.ndarray, centroid_shift: np.ndarray, residual: np.ndarray,
                       centroid_residual: np.ndarray, part_names) -> dict:
    """Flow vs part-map motion: Pearson/Spearman over every (pair, part, axis).

    `shift` [M, P, 2]: mean whole displacement of each part's pixels by the flow;
    `centroid_shift`: the part's centroid shift between the first and last part map.
    `residual` and `centroid_residual` are the same with the affine's displacement of the
    first centroid taken off, i.e. the local motion alone. Pooled figures leave out the
    part "background": its centroid moves opposite to the growth of everything in front
    of it, which is no motion of its pixels (its own correlation is under `per_part`).
    """
    out = _shift_agreement(shift, centroid_shift, part_names)
    out["residual"] = _residual_agreement(residual, centroid_residual, part_names)
    return out


def _foreground(part_names) -> tuple[list[str], np.ndarray]:
    names = [str(p) for p in part_names]
    return names, np.array([p != "background" for p in names])


def _shift_agreement(shift: np.ndarray, centroid_shift: np.ndarray, part_names) -> dict:
    """`centroid_agreement`'s figures of the whole displacement (all but "residual")."""
    names, fg = _foreground(part_names)
    out = {"whole": _correlation(shift[:, fg].ravel(), centroid_shift[:, fg].ravel()),
           "whole_with_background": _correlation(shift.ravel(), centroid_shift.ravel())}
    for i, axis in enumerate("xy"):
        out[f"whole_{axis}"] = _correlation(shift[:, fg, i].ravel(), centroid_shift[:, fg, i].ravel())
    out["per_part"] = {p: _correlation(shift[:, j].ravel(), centroid_shift[:, j].ravel())["pearson"]
                       for j, p in enumerate(names)}
    return out


def _residual_agreement(residual: np.ndarray, centroid_residual: np.ndarray, part_names) -> dict:
    _, fg = _foreground(part_names)
    return _correlation(residual[:, fg].ravel(), centroid_residual[:, fg].ravel())


def _motion_block(tuning_path, gen, segmenter, block: tuple[int, int], cfg: QuantifyMotionConfig) -> dict:
    """Motion of the (unit, seed) pairs of units [a, b): table rows, part areas and agreement arrays."""
    a, b = block
    names = tuple(segmenter.label_names)
    n_parts = len(names)
    with h5.open_checked(tuning_path, {"": TUNING_FIELDS}, producer="tune_units") as f:
        units, seeds, classes = f["units"][:], f["seeds"][:], f["classes"][:]
        S, T = f["renders"].shape[1:3]
        n = (b - a) * S
        renders = f["renders"][a:b]
        w = f["w"][a:b, :, 0].reshape(n, -1)
        gt = f["parts_gt"][a:b] if "parts_gt" in f else None
    first = renders[:, :, 0].reshape(n, *renders.shape[3:])
    last = renders[:, :, T - 1].reshape(n, *renders.shape[3:])
    keys = pd.DataFrame({"unit": np.repeat(units[a:b], S), "seed": np.tile(seeds, b - a),
                         "class": np.tile(classes, b - a)})
    motion = estimate_motion(first, last, cfg.motion)
    sources = {"segmenter": segment_w(segmenter, gen, torch.as_tensor(w, device=gen.device), cfg.batch_size)}
    if gt is not None:
        sources["ground_truth"] = gt[:, :, 0].reshape(n, *gt.shape[3:])
    out = {"n": n, "tables": {}, "areas": {}, "agree": None}
    for source, masks in sources.items():
        image, per_part = motion_values(motion, masks, n_parts)
        out["tables"][source] = tidy(image, per_part, names, keys, source)
        out["areas"][source] = part_counts(masks, n_parts).sum(0)
    if gt is not None:
        out["agree"] = {k: [] for k in AGREEMENT_KEYS}
        _collect_agreement(out["agree"], motion, per_part, sources["ground_truth"],
                           gt[:, :, T - 1].reshape(n, *gt.shape[3:]), names)
    return out


AGREEMENT_KEYS = ("shift", "c_shift", "resid", "c_resid", "flow_affine", "flow_affine_t", "part_affine", "part_affine_t")


def _motion_blocks(tuning_path, cfg: QuantifyMotionConfig) -> tuple[list[tuple[int, int]], list[int], int]:
    with h5.open_checked(tuning_path, {"": TUNING_FIELDS}, producer="tune_units") as f:
        U, S = f["renders"].shape[:2]
    blocks = [(a, min(U, a + cfg.units_per_block)) for a in range(0, U, cfg.units_per_block)]
    return blocks, [(b - a) * S for a, b in blocks], U * S


def _gather_motion(results, names, cfg: QuantifyMotionConfig, n_pairs: int) -> tuple[pd.DataFrame, dict]:
    tables, areas, n_area = {}, {}, 0  # per source, so rows come out in the same order for any block size
    agree = {k: [] for k in AGREEMENT_KEYS}
    for out in results:
        for source, t in out["tables"].items():
            tables.setdefault(source, []).append(t)
            areas[source] = areas.get(source, 0) + out["areas"][source]
        n_area += out["n"]
        if out["agree"] is not None:
            for k, v in out["agree"].items():
                agree[k].extend(v)
    table = pd.concat([t for parts in tables.values() for t in parts], ignore_index=True)
    keep = _keep_parts(areas, n_area, names, cfg)
    kept = np.zeros(len(table), bool)
    for source, parts in keep.items():
        kept |= (table["source"] == source).to_numpy() & table["part"].isin([IMAGE_PART, *parts]).to_numpy()
    table = table[kept].reset_index(drop=True)
    return table, _summary(table, keep, agree, names, cfg, n_pairs)


def _keep_parts(areas: dict, n_area: int, names, cfg: QuantifyMotionConfig) -> dict:
    return {s: [p for p, a in zip(names, area / max(n_area, 1)) if a >= cfg.min_part_area] for s, area in areas.items()}


def write_motion(results, names, cfg: QuantifyMotionConfig, n_pairs: int, out_path,
                 row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """`_gather_motion`'s table written to `out_path` (atomically, only on success) from
    blocks as they arrive; returns its summary.

    Each block's rows go, unfiltered, to one scratch parquet file per source (the table is
    source by source, so its rows do not depend on the block size); the part areas of
    the small-part filter are summed; the whole-image values (for the medians), the
    segmenter/ground-truth change pairs (`AgreementStream`) and the centroid arrays are
    spooled. At the end one pass over the scratch files, a row group at a time, writes
    the kept rows, and the summary reads the spooled values back one statistic at a time.
    Memory: one block, one row group, and at the end the values of one statistic (the
    largest: the centroid shifts, pairs x parts x 2 x 8 bytes, twice).
    """
    n_parts = len(names)
    areas, n_area = {}, 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_path))
        spool = stack.enter_context(Spool(out_path))
        agree = AgreementStream(spool)
        raw: dict = {}  # source -> (scratch path, TableWriter)
        for out in results:
            for source, t in out["tables"].items():
                if source not in raw:
                    path = stack.enter_context(scratch_path(out_path))
                    raw[source] = (path, stack.enter_context(TableWriter(path, row_group_rows)))
                raw[source][1].write(t)
                areas[source] = areas.get(source, 0) + out["areas"][source]
                img = t[t["part"] == IMAGE_PART]
                for m, g in img.groupby("metric", sort=False):
                    spool.append(f"image/{source}/{m}", g["change"].to_numpy())
            n_area += out["n"]
            agree.add(pd.concat([t[t["part"] != IMAGE_PART] for t in out["tables"].values()], ignore_index=True))
            if out["agree"] is not None:
                for k, v in out["agree"].items():
                    for a in v:
                        spool.append(f"centroid/{k}", a)
            del out  # the next block replaces it
        for _, w in raw.values():
            w.close()
        keep = _keep_parts(areas, n_area, names, cfg)
        part_sources = set()
        with TableWriter(tmp, row_group_rows) as writer:
            for source, (path, _) in raw.items():
                for df in read_row_groups(path):
                    df = df[_keep_mask(df, {source: keep[source]}, always=(IMAGE_PART,))].reset_index(drop=True)
                    if (df["part"] != IMAGE_PART).any():
                        part_sources.add(source)
                    writer.write(df)
            n_rows = writer.rows
        summary = _summary_streamed(spool, agree, part_sources, keep, names, cfg, n_pairs, n_rows, n_parts)
    return summary


def quantify_motion(tuning_path: str | os.PathLike, gen, segmenter, cfg: QuantifyMotionConfig,
                    progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Motion of every (unit, seed) pair of `tuning_path`: the tidy table and summary metrics,
    in this process with the models given."""
    blocks, sizes, n_pairs = _motion_blocks(tuning_path, cfg)
    results = _in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress)
    return _gather_motion(results, tuple(segmenter.label_names), cfg, n_pairs)


def quantify_motion_to(tuning_path: str | os.PathLike, gen, segmenter, cfg: QuantifyMotionConfig, out_path,
                       progress: bool = True) -> dict:
    """`quantify_motion` streamed to the parquet file `out_path` (`write_motion`); returns the summary."""
    blocks, sizes, n_pairs = _motion_blocks(tuning_path, cfg)
    results = _in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress)
    return write_motion(results, tuple(segmenter.label_names), cfg, n_pairs, out_path)


def _in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress):
    with tqdm(total=sum(sizes), desc="quantify_motion", unit="pair", disable=not progress) as bar:
        for block, n in zip(blocks, sizes):
            yield _motion_block(tuning_path, gen, segmenter, block, cfg)
            bar.update(n)


@dataclass(frozen=True)
class MotionBlocks(BlockTask):
    """quantify_motion's work on a Dask worker: the models load once per worker."""

    tuning_path: str
    generator: GeneratorSpec
    segmenter_path: str
    cfg: QuantifyMotionConfig

    def load(self):
        return load_measuring_models(self.generator, self.segmenter_path, self.cfg.device, "quantify_motion.device")

    def run(self, state, block):
        return _motion_block(self.tuning_path, *state, block, self.cfg)


def quantify_motion_distributed(tuning_path, generator: GeneratorSpec, segmenter_path, names: tuple[str, ...],
                                cfg: QuantifyMotionConfig, cluster: ClusterConfig,
                                progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """`quantify_motion` with blocks of units on Dask workers; the same table for any number of workers."""
    blocks, sizes, n_pairs = _motion_blocks(tuning_path, cfg)
    task = MotionBlocks(str(tuning_path), generator, str(segmenter_path), cfg)
    results = map_blocks(task, blocks, cluster, sizes=sizes, desc="quantify_motion", unit="pair", progress=progress)
    return _gather_motion(results, names, cfg, n_pairs)


def quantify_motion_distributed_to(tuning_path, generator: GeneratorSpec, segmenter_path, names: tuple[str, ...],
                                   cfg: QuantifyMotionConfig, cluster: ClusterConfig, out_path,
                                   progress: bool = True) -> dict:
    """`quantify_motion_distributed` streamed to `out_path` as the blocks come back (`write_motion`);
    returns the summary. What stage quantify_motion runs."""
    blocks, sizes, n_pairs = _motion_blocks(tuning_path, cfg)
    task = MotionBlocks(str(tuning_path), generator, str(segmenter_path), cfg)
    results = map_blocks(task, blocks, cluster, sizes=sizes, desc="quantify_motion", unit="pair", progress=progress)
    return write_motion(results, names, cfg, n_pairs, out_path)


def centroid_affine(c0: np.ndarray, c1: np.ndarray, use: np.ndarray) -> np.ndarray:
    """[N, 2, 3] least-squares affine taking the part centroids c0 [N, P, 2] to c1, over the parts in
    `use` [N, P]; NaN for pairs with fewer than 4 parts (an affine has 6 unknowns)."""
    x = np.concatenate([np.nan_to_num(c0), np.ones((*c0.shape[:2], 1))], -1)
    w = use.astype(np.float64)
    xtx = np.einsum("np,npi,npj->nij", w, x, x)
    xty = np.einsum("np,npi,npk->nik", w, x, np.nan_to_num(c1))
    enough = (use.sum(1) >= 4) & (np.abs(np.linalg.det(xtx)) > 1e-9)
    a = np.full((len(c0), 2, 3), np.nan)
    if enough.any():
        a[enough] = np.linalg.solve(xtx[enough], xty[enough]).transpose(0, 2, 1)
    return a


def _collect_agreement(agree: dict, motion, per_part: np.ndarray, masks_first: np.ndarray, masks_last: np.ndarray,
                       names) -> None:
    n_parts = len(names)
    fg = np.array([p != "background" for p in names])
    count0, c0 = centroids(masks_first, n_parts)
    count1, c1 = centroids(masks_last, n_parts)
    ok = (count0 >= CENTROID_MIN_PX) & (count1 >= CENTROID_MIN_PX)
    shift = per_part[..., [PART_METRICS.index("shift_x"), PART_METRICS.index("shift_y")]]
    resid = per_part[..., [PART_METRICS.index("motion_x"), PART_METRICS.index("motion_y")]]
    c_shift = c1 - c0
    # The affine's displacement of the first centroid: A c0 - c0.
    lin = motion.affine[:, None, :, :2]
    moved = np.einsum("npij,npj->npi", np.broadcast_to(lin, (*c0.shape[:2], 2, 2)), np.nan_to_num(c0))
    c_resid = c_shift - (moved + motion.affine[:, None, :, 2] - np.nan_to_num(c0))
    for k, v in (("shift", shift), ("c_shift", c_shift), ("resid", resid), ("c_resid", c_resid)):
        agree[k].append(np.where(ok[..., None], v, np.nan))
    agree["flow_affine"].append(np.stack(decompose_affine(motion.affine, masks_first.shape[1:])[1:], -1))
    agree["flow_affine_t"].append(motion.translation)
    t, s, r, k = decompose_affine(centroid_affine(c0, c1, ok & fg), masks_first.shape[1:])
    agree["part_affine"].append(np.stack([s, r, k], -1))
    agree["part_affine_t"].append(t)


def _image_medians(values_of) -> dict:
    """median |value| of each whole-image metric; `values_of(m)`: its values, or None if absent."""
    image = {}
    for m in IMAGE_METRICS:
        v = values_of(m)
        if v is not None:
            image[f"median_abs_{m}"] = float(np.nanmedian(np.abs(v))) if np.isfinite(v).any() else None
    return image


AFFINE_FIGURES = ("translation_x", "translation_y", "scale", "rotation", "shear")


def _summary(table: pd.DataFrame, keep: dict, agree: dict, names, cfg: QuantifyMotionConfig, n_pairs: int) -> dict:
    src = "segmenter" if "segmenter" in keep else next(iter(keep), None)
    img = table[(table["source"] == src) & (table["part"] == IMAGE_PART)]
    med = img.pivot_table(index=["unit", "seed"], columns="metric", values="change", aggfunc="first", dropna=False)
    out = {"backend": cfg.motion.backend, "n_pairs": int(n_pairs), "n_rows": int(len(table)),
           "parts_kept": {s: p for s, p in keep.items()},
           "image": _image_medians(lambda m: med[m].to_numpy(dtype=np.float64) if m in med else None),
           # Whole-image rows are the same for both sources: only the parts can disagree.
           "segmenter_vs_ground_truth": ground_truth_agreement(table[table["part"] != IMAGE_PART],
                                                               metrics=("motion", "shift_x", "shift_y"))}
    if agree["shift"]:
        cat = {k: np.concatenate(v) for k, v in agree.items()}
        out["centroid_agreement"] = centroid_agreement(cat["shift"], cat["c_shift"], cat["resid"], cat["c_resid"], names)
        # The flow's affine against one fitted to the foreground parts' centroids (>= 4 parts).
        flow = np.concatenate([cat["flow_affine_t"], cat["flow_affine"]], 1)
        parts = np.concatenate([cat["part_affine_t"], cat["part_affine"]], 1)
        out["affine_agreement"] = {m: _correlation(flow[:, i], parts[:, i]) for i, m in enumerate(AFFINE_FIGURES)}
    return out


def _summary_streamed(spool: Spool, agree: AgreementStream, part_sources: set, keep: dict, names,
                      cfg: QuantifyMotionConfig, n_pairs: int, n_rows: int, n_parts: int) -> dict:
    """`_summary` from what `write_motion` spooled, one statistic's values in memory at a time."""
    src = "segmenter" if "segmenter" in keep else next(iter(keep), None)
    out = {"backend": cfg.motion.backend, "n_pairs": int(n_pairs), "n_rows": int(n_rows),
           "parts_kept": {s: p for s, p in keep.items()},
           "image": _image_medians(lambda m: spool.read(f"image/{src}/{m}") if f"image/{src}/{m}" in spool else None),
           "segmenter_vs_ground_truth": agree.result(keep, part_sources, metrics=("motion", "shift_x", "shift_y"))}
    if "centroid/shift" in spool:
        def read(k, *shape):
            return spool.read(f"centroid/{k}").reshape(-1, *shape)

        out["centroid_agreement"] = _shift_agreement(read("shift", n_parts, 2), read("c_shift", n_parts, 2), names)
        out["centroid_agreement"]["residual"] = _residual_agreement(read("resid", n_parts, 2),
                                                                    read("c_resid", n_parts, 2), names)
        flow = np.concatenate([read("flow_affine_t", 2), read("flow_affine", 3)], 1)
        parts = np.concatenate([read("part_affine_t", 2), read("part_affine", 3)], 1)
        out["affine_agreement"] = {m: _correlation(flow[:, i], parts[:, i]) for i, m in enumerate(AFFINE_FIGURES)}
    return out


# ------------------------------------------------------------------------------ figure


def read_units(path: str | os.PathLike) -> pd.DataFrame:
    """A selectivity table of analyze_units (reports/units_motion.csv or units.csv), checked."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; run stage 'analyze_units' first (dvc repro analyze_units)")
    try:
        units = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0][:100]}); rerun dvc repro analyze_units") from None
    missing = [c for c in UNITS_COLUMNS if c not in units.columns]
    if missing:
        raise UserError(f"{path}: lacks column {missing[0]!r} (needs {', '.join(UNITS_COLUMNS)}); "
                        "it was not written by this version of analyze_units, rerun dvc repro analyze_units")
    return units


MOTION_COLUMNS = ("source", "unit", "seed", "class", "part", "metric", "change")


def read_motion_rows(path: str | os.PathLike, metrics: tuple[str, ...] = ("motion",)) -> pd.DataFrame:
    """The rows of `metrics` of a motion table (data/motion.parquet), checked."""
    import pyarrow.parquet as pq

    path = Path(path)
    fix = "rerun dvc repro quantify_motion"
    if not path.is_file():
        raise UserError(f"{path}: not found; run stage 'quantify_motion' first (dvc repro quantify_motion)")
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in MOTION_COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: no column {missing[0]!r}; not written by this version of quantify_motion, {fix}")
        return pd.read_parquet(path, columns=list(MOTION_COLUMNS), filters=[("metric", "in", list(metrics))])
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:120]}); delete it and {fix}") from None


def _median_seed(rows: pd.DataFrame) -> int:
    """The seed at the (lower) median of `change`; ties go to the smaller seed."""
    r = rows.dropna(subset=["change"]).sort_values(["change", "seed"], kind="stable")
    return int(r["seed"].iloc[(len(r) - 1) // 2])


def field_panels(tuning_path: str | os.PathLike, table: pd.DataFrame, units: pd.DataFrame,
                 motion: MotionConfig, n_units: int) -> dict:
    """The pairs the vector-field figure shows, with their motion.

    The `n_units` most selective reachable units of `units` (an analyze_units table), each
    with its typical seed: the one at the median of the residual motion in the unit's
    strongest part (whole image where the part is missing; the largest picked the pairs
    whose renders changed most, where the flow is least reliable), re-estimated exactly
    as in the sweep.
    """
    src = "segmenter" if (table["source"] == "segmenter").any() else "ground_truth"
    motion_rows = table[(table["source"] == src) & (table["metric"] == "motion")]
    if "reachable" in units:  # an unreachable unit's renders do not show it: nothing to show of its motion
        units = units[units["reachable"].astype(bool)]
    with h5.open_checked(tuning_path, {"": TUNING_FIELDS}, producer="tune_units") as f:
        tuned = {int(u): i for i, u in enumerate(f["units"][:])}
        seeds, classes = f["seeds"][:], f["classes"][:]
        class_names = h5.get_attr(f, "class_names", [])
        ranked = units[units["unit"].isin(list(tuned))].sort_values(["selectivity", "unit"], ascending=[False, True],
                                                                     na_position="last", kind="stable")
        picks = []
        for row in ranked.head(n_units).itertuples(index=False):
            part = row.strongest_part if isinstance(row.strongest_part, str) else IMAGE_PART
            cand = motion_rows[(motion_rows["unit"] == row.unit) & (motion_rows["part"] == part)]
            if not cand["change"].notna().any():
                part = IMAGE_PART
                cand = motion_rows[(motion_rows["unit"] == row.unit) & (motion_rows["part"] == part)]
            seed = _median_seed(cand) if cand["change"].notna().any() else int(seeds[0])
            s = int(np.flatnonzero(seeds == seed)[0])
            r = f["renders"][tuned[int(row.unit)], s]
            name = class_names[classes[s]] if len(class_names) else classes[s]
            picks.append(dict(unit=int(row.unit), seed=seed, class_name=str(name), part=part,
                              metric=row.metric if isinstance(getattr(row, "metric", None), str) else "",
                              selectivity=float(row.selectivity),
                              first=r[0], last=r[-1]))
    if not picks:
        return {"panels": [], "reference_size": motion.reference_size}
    first = np.stack([p.pop("first") for p in picks])
    last = np.stack([p.pop("last") for p in picks])
    m = estimate_motion(first, last, motion)
    for i, p in enumerate(picks):
        p.update(first=first[i], last=last[i], flow=m.flow[i], valid=m.valid[i], translation=m.translation[i],
                 scale=float(m.scale[i]), rotation_deg=float(m.rotation_deg[i]))
    return {"panels": picks, "reference_size": motion.reference_size}
