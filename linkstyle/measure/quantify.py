"""Quantify tuning renders part by part (docs/method.md section 5), block of units by block.

Each render of `tuning.h5` is segmented by the few-shot segmenter (from the generator's
features of its w) and, where the generator has its own part maps, also measured on
those ("ground truth"): the two sets of changes side by side say how far the
segmenter can be trusted. Output: two tidy tables,
  measures (source, unit, seed, class, step, part, metric, value)   every step
  changes  (source, unit, seed, class, part, metric, change)        last step vs step 0
The small-part filter (mean area under `min_part_area` px) is applied once over all
units at the end, so the result does not depend on the block size.

`quantify_tuning` and `quantify_tuning_distributed` return the tables in memory;
`write_quantified` (what the stage runs, via `quantify_tuning_distributed_to`) streams
each block's rows to the parquet files as the block arrives and keeps only running sums
(the part areas) and the spooled change pairs of the agreement, so the stage's memory
does not grow with the number of units (`linkstyle.core.stream`). Both give the same
tables and agreement.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check
from linkstyle.core.distribute import BlockTask, ClusterConfig, map_blocks
from linkstyle.core.io import atomic_path, scratch_path
from linkstyle.core.runtime import resolve_device
from linkstyle.core.stream import ROW_GROUP_ROWS, Moments, Spool, TableWriter, read_row_groups
from linkstyle.measure.parts import (
    find_regions,
    local_entropy,
    match_regions,
    measure_parts,
    part_changes,
)
from linkstyle.measure.segmenter import load_segmenter, segment_w
from linkstyle.models.registry import GeneratorSpec, load_generator

TUNING_FIELDS = ("renders", "w", "units", "seeds", "classes")


@dataclass(frozen=True)
class QuantifyConfig:
    """Options of stage `quantify_parts`."""

    entropy_radius: int = 5
    min_part_area: float = 20.0
    min_region_px: int = 3
    units_per_block: int = 16
    n_jobs: int = 1
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self):
        check(self.entropy_radius >= 1, "entropy_radius", "must be >= 1")
        check(self.min_part_area >= 0, "min_part_area", "must be >= 0")
        check(self.units_per_block >= 1, "units_per_block", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.n_jobs >= 1 or self.n_jobs == -1, "n_jobs", f"must be >= 1, or -1 for every core, got {self.n_jobs}")


def _block_tables(images, masks, keys, names, cfg: QuantifyConfig, n_steps: int, entropy=None):
    kw = dict(n_jobs=cfg.n_jobs)
    meas = measure_parts(images, masks, names, entropy_radius=cfg.entropy_radius, keys=keys, entropy=entropy, **kw)
    first, last = keys["step"].to_numpy() == 0, keys["step"].to_numpy() == n_steps - 1
    item = ["unit", "seed", "class"]
    kf, kl = keys[first][item].reset_index(drop=True), keys[last][item].reset_index(drop=True)
    rk = dict(min_region_px=cfg.min_region_px, **kw)
    reg_f = find_regions(masks[first], names, keys=kf, **rk)
    reg_l = find_regions(masks[last], names, keys=kl, **rk)
    matches = match_regions(masks[first], masks[last], names, keys=kf, **rk)
    mf = meas[meas["step"] == 0].drop(columns="step")
    ml = meas[meas["step"] == n_steps - 1].drop(columns="step")
    ch = part_changes(mf, ml, regions_first=reg_f, regions_last=reg_l, matches=matches, on=item, min_part_area=0.0)
    return meas, ch


def _block_keys(units, seeds, classes, a: int, b: int, T: int) -> pd.DataFrame:
    S = len(seeds)
    return pd.DataFrame({
        "unit": np.repeat(units[a:b], S * T),
        "seed": np.tile(np.repeat(seeds, T), b - a),
        "class": np.tile(np.repeat(classes, T), b - a),
        "step": np.tile(np.arange(T), (b - a) * S),
    })


def _quantify_block(tuning_path, gen, segmenter, block: tuple[int, int], cfg: QuantifyConfig):
    """Measures and changes of the units [a, b) of the sweep, from every mask source."""
    a, b = block
    names = tuple(segmenter.label_names)
    out = []
    with h5.open_checked(tuning_path, {"": TUNING_FIELDS}, producer="tune_units") as f:
        units, seeds, classes = f["units"][:], f["seeds"][:], f["classes"][:]
        S, T = f["renders"].shape[1:3]
        n = (b - a) * S * T
        images = f["renders"][a:b].reshape(n, *f["renders"].shape[3:])
        w = torch.as_tensor(f["w"][a:b].reshape(n, -1), device=gen.device)
        keys = _block_keys(units, seeds, classes, a, b, T)
        sources = {"segmenter": segment_w(segmenter, gen, w, cfg.batch_size)}
        if "parts_gt" in f:
            sources["ground_truth"] = f["parts_gt"][a:b].reshape(n, *f["parts_gt"].shape[3:])
    entropy = local_entropy(images, cfg.entropy_radius, cfg.n_jobs)  # once for both sources
    for source, masks in sources.items():
        meas, ch = _block_tables(images, masks, keys, names, cfg, T, entropy)
        out.append((meas.assign(source=source), ch.assign(source=source)))
    return out


def _blocks(tuning_path, cfg: QuantifyConfig) -> tuple[list[tuple[int, int]], list[int], int]:
    with h5.open_checked(tuning_path, {"": TUNING_FIELDS}, producer="tune_units") as f:
        U, S, T = f["renders"].shape[:3]
    blocks = [(a, min(U, a + cfg.units_per_block)) for a in range(0, U, cfg.units_per_block)]
    return blocks, [(b - a) * S * T for a, b in blocks], T


ITEM = ["source", "unit", "seed", "class"]
MEASURE_COLUMNS = ITEM + ["step", "part", "metric", "value"]
CHANGE_COLUMNS = ITEM + ["part", "metric", "change"]


def _gather(results, T: int, cfg: QuantifyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    meas_all, ch_all = [], []
    for block in results:
        for meas, ch in block:
            meas_all.append(meas)
            ch_all.append(ch)
    measures = pd.concat(meas_all, ignore_index=True)
    changes = pd.concat(ch_all, ignore_index=True)
    # Small parts: mean area over all units, seeds and both end steps, per source.
    ends = measures[(measures["metric"] == "area") & measures["step"].isin([0, T - 1])]
    mean_area = ends.groupby(["source", "part"])["value"].mean()
    keep = mean_area[mean_area >= cfg.min_part_area].reset_index()[["source", "part"]]
    changes = changes.merge(keep, on=["source", "part"], how="inner")
    return measures[MEASURE_COLUMNS], changes[CHANGE_COLUMNS]


def _keep_mask(df: pd.DataFrame, keep: dict, always=()) -> np.ndarray:
    """Rows whose part is kept for their source (`keep`: source -> parts), or is in `always`."""
    kept = np.zeros(len(df), bool)
    for source, parts in keep.items():
        kept |= (df["source"] == source).to_numpy() & df["part"].isin([*always, *parts]).to_numpy()
    return kept


def write_quantified(results, T: int, cfg: QuantifyConfig, measures_path, changes_path,
                     row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """`_gather`'s tables written as the blocks arrive, and the stage's summary.

    Each block's measures go straight to `measures_path` and its changes, unfiltered, to a
    scratch file beside `changes_path`, while the areas of the small-part filter are summed
    per (source, part) and the block's segmenter/ground-truth change pairs are spooled
    (`AgreementStream`). At the end one pass over the scratch file, a row group at a time,
    writes the kept changes. Both outputs appear atomically, only on success. Memory: one
    block, one row group, and at the end the change pairs of one metric (for the ranks of
    Spearman's rho). Returns n_measure_rows, n_change_rows, parts_kept and
    segmenter_vs_ground_truth (as `ground_truth_agreement` of the changes table).
    """
    area: dict = {}  # (source, part) -> [sum, count]; areas are pixel counts, so the sums are exact
    with contextlib.ExitStack() as stack:
        tmp_m = stack.enter_context(atomic_path(measures_path))
        tmp_c = stack.enter_context(atomic_path(changes_path))
        raw = stack.enter_context(scratch_path(changes_path))
        agree = AgreementStream(stack.enter_context(Spool(changes_path)))
        with TableWriter(tmp_m, row_group_rows) as wm, TableWriter(raw, row_group_rows) as wr:
            for block in results:
                for meas, ch in block:
                    ends = meas[(meas["metric"] == "area") & meas["step"].isin([0, T - 1])]
                    for (source, part), (total, n) in ends.groupby(["source", "part"], sort=False)["value"].agg(
                            ["sum", "count"]).iterrows():
                        acc = area.setdefault((source, part), [0.0, 0])
                        acc[0] += float(total)
                        acc[1] += int(n)
                    wm.write(meas[MEASURE_COLUMNS])
                    wr.write(ch[CHANGE_COLUMNS])
                agree.add(pd.concat([ch for _, ch in block], ignore_index=True))
                del block  # the next block replaces it
        keep: dict = {}
        for (source, part), (total, n) in area.items():
            if n and total / n >= cfg.min_part_area:  # as pandas' mean: sum / count
                keep.setdefault(source, []).append(part)
        parts, sources = set(), set()
        with TableWriter(tmp_c, row_group_rows) as wc:
            for df in read_row_groups(raw):
                df = df[_keep_mask(df, keep)].reset_index(drop=True)
                parts.update(df["part"].unique().tolist())
                sources.update(df["source"].unique().tolist())
                wc.write(df)
        agreement = agree.result(keep, sources)
        n_measures, n_changes = wm.rows, wc.rows
    return {"n_measure_rows": n_measures, "n_change_rows": n_changes, "parts_kept": sorted(parts),
            "segmenter_vs_ground_truth": agreement}


def quantify_tuning(tuning_path, gen, segmenter, cfg: QuantifyConfig, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measures and changes of every render, from the segmenter and (if any) the generator's
    part maps, in this process with the models given."""
    blocks, sizes, T = _blocks(tuning_path, cfg)
    return _gather(_in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress), T, cfg)


def ground_truth_changes(tuning_path, cfg: QuantifyConfig, progress: bool = False) -> pd.DataFrame | None:
    """The changes of source ground_truth alone: a tuning file's renders measured on its own
    part maps (`parts_gt`), as `quantify_tuning` measures them, with no model to load; None
    where the file has no part maps (a generator that draws none).

    Only the first and the last step are measured: the changes and the small-part filter
    read no other, so the rows equal the ground-truth rows of `quantify_tuning`'s changes.
    """
    need = {"": ("renders", "units", "seeds", "classes")}
    blocks = []
    with h5.open_checked(tuning_path, need, producer="tune_units") as f:
        names = tuple(str(n) for n in h5.get_attr(f, "part_names", []) or [])
        if "parts_gt" not in f or not names:
            return None
        units, seeds, classes = f["units"][:], f["seeds"][:], f["classes"][:]
        U, S, T = f["renders"].shape[:3]
        ends = [0, T - 1]
        with tqdm(total=U * S * 2, desc="ground-truth changes", unit="img", disable=not progress) as bar:
            for a in range(0, U, cfg.units_per_block):
                b = min(U, a + cfg.units_per_block)
                n = (b - a) * S * 2
                images = f["renders"][a:b][:, :, ends].reshape(n, *f["renders"].shape[3:])
                masks = f["parts_gt"][a:b][:, :, ends].reshape(n, *f["parts_gt"].shape[3:])
                keys = _block_keys(units, seeds, classes, a, b, T)
                keys = keys[keys["step"].isin(ends)].reset_index(drop=True)
                meas, ch = _block_tables(images, masks, keys, names, cfg, T)
                blocks.append([(meas.assign(source="ground_truth"), ch.assign(source="ground_truth"))])
                bar.update(n)
    return _gather(blocks, T, cfg)[1]


def quantify_tuning_to(tuning_path, gen, segmenter, cfg: QuantifyConfig, measures_path, changes_path,
                       progress: bool = True) -> dict:
    """`quantify_tuning` streamed to the two parquet files (`write_quantified`); returns the summary."""
    blocks, sizes, T = _blocks(tuning_path, cfg)
    return write_quantified(_in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress), T, cfg,
                            measures_path, changes_path)


def _in_process(tuning_path, gen, segmenter, cfg, blocks, sizes, progress):
    with tqdm(total=sum(sizes), desc="quantify_parts", unit="img", disable=not progress) as bar:
        for block, n in zip(blocks, sizes):
            yield _quantify_block(tuning_path, gen, segmenter, block, cfg)
            bar.update(n)


def load_measuring_models(generator: GeneratorSpec, segmenter_path, device: str, where: str):
    """The generator and the segmenter trained for it, on `device` (named by param `where`):
    what the quantification stages load, in the stage to check the inputs and once per worker."""
    gen = load_generator(generator, resolve_device(device, where))
    return gen, load_segmenter(segmenter_path, expected_generator_fingerprint=gen.fingerprint, device=gen.device)


@dataclass(frozen=True)
class QuantifyBlocks(BlockTask):
    """quantify_parts' work on a Dask worker: the models load once per worker."""

    tuning_path: str
    generator: GeneratorSpec
    segmenter_path: str
    cfg: QuantifyConfig

    def load(self):
        return load_measuring_models(self.generator, self.segmenter_path, self.cfg.device, "quantify_parts.device")

    def run(self, state, block):
        return _quantify_block(self.tuning_path, *state, block, self.cfg)


def quantify_tuning_distributed(tuning_path, generator: GeneratorSpec, segmenter_path, cfg: QuantifyConfig,
                                cluster: ClusterConfig, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`quantify_tuning` with blocks of units on Dask workers (`linkstyle.core.distribute`);
    the same tables, byte for byte, for any number of workers."""
    blocks, sizes, T = _blocks(tuning_path, cfg)
    task = QuantifyBlocks(str(tuning_path), generator, str(segmenter_path), cfg)
    return _gather(map_blocks(task, blocks, cluster, sizes=sizes, desc="quantify_parts", unit="img",
                              progress=progress), T, cfg)


def quantify_tuning_distributed_to(tuning_path, generator: GeneratorSpec, segmenter_path, cfg: QuantifyConfig,
                                   cluster: ClusterConfig, measures_path, changes_path, progress: bool = True) -> dict:
    """`quantify_tuning_distributed` streamed to the two parquet files as the blocks come back
    (`write_quantified`); returns the summary. What stage quantify_parts runs."""
    blocks, sizes, T = _blocks(tuning_path, cfg)
    task = QuantifyBlocks(str(tuning_path), generator, str(segmenter_path), cfg)
    return write_quantified(map_blocks(task, blocks, cluster, sizes=sizes, desc="quantify_parts", unit="img",
                                       progress=progress), T, cfg, measures_path, changes_path)


AGREEMENT_KEY = ["unit", "seed", "class", "part", "metric"]


def _change_pairs(changes: pd.DataFrame) -> pd.DataFrame:
    """Segmenter and ground-truth change of each (unit, seed, class, part, metric), side by
    side (columns seg, gt), in the order of the segmenter's rows."""
    seg = changes[changes["source"] == "segmenter"].set_index(AGREEMENT_KEY)["change"]
    gt = changes[changes["source"] == "ground_truth"].set_index(AGREEMENT_KEY)["change"]
    return pd.concat([seg.rename("seg"), gt.rename("gt")], axis=1, join="inner")


def _metric_agreement(seg: pd.Series, gt: pd.Series):
    """Pearson, Spearman and the pair z-scored by the ground truth, of one metric's changes
    (no NaN); None where too few or constant."""
    if len(seg) > 2 and seg.std() > 0 and gt.std() > 0:
        s = gt.std()
        return (float(np.corrcoef(seg, gt)[0, 1]), float(spearmanr(seg, gt).statistic),
                ((seg - gt.mean()) / s, (gt - gt.mean()) / s))
    return None


def ground_truth_agreement(changes: pd.DataFrame, metrics=("area", "luminance", "entropy_mean")) -> dict:
    """Segmenter vs ground-truth changes: Pearson and Spearman per metric, Pearson pooled.

    Pooled: each metric z-scored by the ground truth's mean and std (so area, in relative
    units, and entropy, in bits, weigh alike), then one correlation over all (unit, seed,
    part, metric) rows: once over `metrics` ("pooled") and once over every metric
    ("pooled_all"). Spearman is reported beside Pearson because relative area changes of
    parts that start small have heavy tails, which Pearson weighs by their size.
    """
    if not {"segmenter", "ground_truth"} <= set(changes["source"].unique()):
        return {}
    both = _change_pairs(changes).dropna()
    out = {"per_metric": {}, "per_metric_spearman": {}}
    z, z_all = [], []
    for m, g in both.groupby(level="metric"):
        res = _metric_agreement(g["seg"], g["gt"])
        if res is not None:
            out["per_metric"][m], out["per_metric_spearman"][m], pair = res
            z_all.append(pair)
            if m in metrics:
                z.append(pair)
    for name, zz in (("pooled", z), ("pooled_all", z_all)):
        if zz:
            zs, zg = np.concatenate([a for a, _ in zz]), np.concatenate([b for _, b in zz])
            out[name] = float(np.corrcoef(zs, zg)[0, 1])
    if z:
        out["pooled_metrics"] = list(metrics)
    out["n_rows"] = int(len(both))
    return out


class AgreementStream:
    """`ground_truth_agreement` of a changes table that arrives block by block.

    `add` takes one block's changes, both sources (a unit is in one block only, so its
    segmenter and ground-truth rows meet there) and spools the (seg, gt, part) pairs per
    metric; `result(keep, sources)` applies the small-part filter decided at the end and
    computes every figure with one metric's pairs in memory at a time: per-metric Pearson
    and Spearman are those of `ground_truth_agreement` bit for bit (same values, same
    order); the pooled Pearson merges per-metric moments (`Moments`), equal to the
    in-memory np.corrcoef to rounding (~1e-15).
    """

    def __init__(self, spool: Spool):
        self.spool = spool
        self.metrics: list[str] = []
        self.parts: dict[str, int] = {}

    def add(self, changes: pd.DataFrame) -> None:
        if not {"segmenter", "ground_truth"} <= set(changes["source"].unique()):
            return
        pairs = _change_pairs(changes)
        for m, g in pairs.groupby(level="metric", sort=False):
            if m not in self.metrics:
                self.metrics.append(m)
            names, inverse = np.unique(np.asarray(g.index.get_level_values("part"), dtype=object), return_inverse=True)
            codes = np.array([self.parts.setdefault(p, len(self.parts)) for p in names], np.float64)[inverse]
            for k, v in (("seg", g["seg"]), ("gt", g["gt"]), ("part", codes)):
                self.spool.append(f"agreement/{m}/{k}", v)

    def result(self, keep: dict, sources, metrics=("area", "luminance", "entropy_mean")) -> dict:
        """The agreement over the parts kept for both sources (`keep`: source -> parts);
        {} unless both sources have rows left (`sources`)."""
        if not {"segmenter", "ground_truth"} <= set(sources):
            return {}
        both = set(keep.get("segmenter", ())) & set(keep.get("ground_truth", ()))
        codes = np.array([c for p, c in self.parts.items() if p in both], np.float64)
        out = {"per_metric": {}, "per_metric_spearman": {}}
        pooled, pooled_all, n_rows = Moments(), Moments(), 0
        for m in sorted(self.metrics):
            seg, gt, part = (self.spool.read(f"agreement/{m}/{k}") for k in ("seg", "gt", "part"))
            ok = np.isin(part, codes) & ~np.isnan(seg) & ~np.isnan(gt)
            del part
            seg, gt = pd.Series(seg[ok]), pd.Series(gt[ok])
            n_rows += len(seg)
            res = _metric_agreement(seg, gt)
            if res is not None:
                out["per_metric"][m], out["per_metric_spearman"][m], (zs, zg) = res
                pooled_all.add(zs, zg)
                if m in metrics:
                    pooled.add(zs, zg)
        for name, mom in (("pooled", pooled), ("pooled_all", pooled_all)):
            if mom.n:
                out[name] = mom.pearson()
        if pooled.n:
            out["pooled_metrics"] = list(metrics)
        out["n_rows"] = int(n_rows)
        return out
