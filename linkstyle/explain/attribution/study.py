"""Stage attribute_units (docs/method.md section 11): FeatureVis's methods beside the link,
scored on the generator's own part maps, or, for a generator without them, on the masks of
the few-shot segmenter trained for it (stage train_segmenter).

Units: per part, the `n_per_part` most selective units of analyze_units' table (units
whose strongest part is that part, by selectivity), and `n_control` other units drawn at
random (the control set); every unit is scored against the part it is labelled with.
Images: the tuning seeds' test images, rendered again from their w in the pairs file.

For every method, every (unit, seed) pair gets a heat map (`base.heat`); activation
maximisation only on the first `am_seeds` seeds (it optimises, so it costs a hundred
times more). The link's map is the per-pixel change between the first and last render
of the tuned unit (tune_units' renders). Scores (`scores`): part mass against the part's
share of the image, and the pointing game. The part mask is the image's part for the
methods that explain the image; for the two that change it (latent maximisation and the
link), the union of the part in the first and the last render, and chance is that
union's share. Then the randomisation test (`sanity`) on `sanity_units` x `sanity_seeds`
pairs.

Output HDF5 (the figures read it):
  heat            float32 [M, U, S, H, W]  per method (attrs methods), NaN where not run
  units, unit_part, unit_group, selectivity [U]; seeds, classes [S]; active uint8 [U, S] (unit > 0 on the image)
  images uint8 [S, H, W, 3]; parts uint8 [S, H, W]  the test images and their part maps (attrs part_source)
  am_pixel_result, am_latent_start, am_latent_result uint8 [U, A, H, W, 3]
  am_latent_parts_start, am_latent_parts_result uint8 [U, A, H, W]
  link_first, link_last uint8 [U, S, H, W, 3]; link_parts_first, link_parts_last [U, S, H, W]
  sanity_similarity float32 [M + 1, K, P] (attrs sanity_methods, sanity_steps); sanity_pairs [P, 2]
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check, to_dict
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8
from linkstyle.explain.attribution.am_latent import LatentMaximisation
from linkstyle.explain.attribution.am_pixel import PixelMaximisation
from linkstyle.explain.attribution.base import METHODS, make_method, method_class, pair_seed
from linkstyle.explain.attribution.lrp import LRPEpsilon
from linkstyle.explain.attribution.occlusion import Occlusion
from linkstyle.explain.attribution.sanity import LinkRefit, randomisation_test
from linkstyle.explain.attribution.scores import part_scores, summarize, unit_similarity
from linkstyle.measure.segmenter import segment_w
from linkstyle.models.attribution_ready import attribution_ready

OcclusionOptions = Occlusion.Options
LRPOptions = LRPEpsilon.Options
PixelOptions = PixelMaximisation.Options
LatentOptions = LatentMaximisation.Options
GROUPS = ("selective", "control")
TABLE_COLUMNS = ("unit", "strongest_part", "selectivity")


@dataclass(frozen=True)
class AttributeUnitsConfig:
    """Options of stage `attribute_units`."""

    methods: tuple[str, ...] = ("occlusion", "deconvnet", "guided_backprop", "lrp", "am_pixel", "am_latent")
    n_per_part: int = 2  # most selective units per part (analyze_units' table)
    n_control: int = 6  # random other units, the control set
    n_seeds: Optional[int] = None  # first n tuning seeds; null = all
    am_seeds: int = 4  # of those, the first am_seeds start activation maximisation
    seed: int = 0  # control draw, jitter, random weights
    occlusion: OcclusionOptions = field(default_factory=OcclusionOptions)
    lrp: LRPOptions = field(default_factory=LRPOptions)
    am_pixel: PixelOptions = field(default_factory=PixelOptions)
    am_latent: LatentOptions = field(default_factory=LatentOptions)
    sanity_units: int = 7  # randomisation test: the most selective unit of the first sanity_units parts ...
    sanity_seeds: int = 2  # ... on its first sanity_seeds seeds where it is active
    sanity_link_pairs: int = 1000  # training pairs the link is refitted on per step; 0 = leave the link out
    sanity_flag_at: float = 0.5  # flag a method whose mean similarity with every layer random is >= this
    batch_size: int = 64  # (image, unit) pairs per pass
    device: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        for m in self.methods:
            method_class(m, "methods")
        check(len(set(self.methods)) == len(self.methods), "methods", f"has duplicates: {list(self.methods)}")
        check(self.n_per_part >= 1, "n_per_part", f"must be >= 1, got {self.n_per_part}")
        check(self.n_control >= 0, "n_control", f"must be >= 0, got {self.n_control}")
        check(self.n_seeds is None or self.n_seeds >= 1, "n_seeds", f"must be >= 1 or null, got {self.n_seeds}")
        check(self.am_seeds >= 1, "am_seeds", f"must be >= 1, got {self.am_seeds}")
        check(self.sanity_units >= 0, "sanity_units", f"must be >= 0 (0 skips the test), got {self.sanity_units}")
        check(self.sanity_seeds >= 1, "sanity_seeds", f"must be >= 1, got {self.sanity_seeds}")
        check(self.sanity_link_pairs == 0 or self.sanity_link_pairs >= 20, "sanity_link_pairs",
              f"must be 0 (no link test) or >= 20, got {self.sanity_link_pairs}")
        check(-1.0 <= self.sanity_flag_at <= 1.0, "sanity_flag_at", f"must be in [-1, 1], got {self.sanity_flag_at}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")

    def options(self, method: str) -> Any:
        return getattr(self, method, None)


# ---------------------------------------------------------------------------- inputs


def select_units(table: pd.DataFrame, part_names: list[str], available: np.ndarray,
                 cfg: AttributeUnitsConfig, source: str = "units.csv") -> pd.DataFrame:
    """Rows unit, part, part_index, group, selectivity, rank: the selective units, part by
    part in the generator's part order, then the control units in unit order."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{source}: no column {missing[0]!r}; it must be analyze_units' unit table, "
                        "rerun dvc repro analyze_units")
    t = table.dropna(subset=["strongest_part"])
    t = t[t["unit"].isin(np.asarray(available))]
    unknown = sorted(set(t["strongest_part"].astype(str)) - set(part_names))
    if unknown:
        raise UserError(f"{source}: part {unknown[0]!r} is not one of the generator's parts {part_names}; "
                        "the table comes from another generator, rerun dvc repro analyze_units")
    if t.empty:
        raise UserError(f"{source}: no unit of the tuning file has a strongest part; rerun dvc repro analyze_units")
    t = t.assign(part=t["strongest_part"].astype(str), part_index=t["strongest_part"].map(part_names.index))
    t = t.sort_values(["part_index", "selectivity", "unit"], ascending=[True, False, True], kind="stable")
    top = t.groupby("part", sort=False).head(cfg.n_per_part).assign(group="selective")
    rest = np.sort(t.loc[~t["unit"].isin(top["unit"]), "unit"].to_numpy())
    pick = np.sort(np.random.RandomState(cfg.seed).choice(rest, min(cfg.n_control, len(rest)), replace=False))
    control = t[t["unit"].isin(pick)].sort_values("unit", kind="stable").assign(group="control")
    out = pd.concat([top, control], ignore_index=True)
    out["rank"] = out.groupby(["group", "part"], sort=False).cumcount()
    return out[["unit", "part", "part_index", "group", "selectivity", "rank"]].astype({"unit": np.int64})


def _test_latents(test: dict[str, np.ndarray], seeds: np.ndarray, classes: np.ndarray, source: str) -> np.ndarray:
    where = {int(s): i for i, s in enumerate(test["seed"].tolist())}
    rows = [where.get(int(s), -1) for s in seeds]
    for s, c, i in zip(seeds, classes, rows):
        if i < 0 or int(test["label"][i]) != int(c):
            raise UserError(f"{source}: tuning seed {int(s)} (class {int(c)}) is not a test pair of the pairs file; "
                            "the two come from different runs, rerun dvc repro tune_units")
    return test["w"][rows]


# ---------------------------------------------------------------------------- the stage

def attribute_units(gen, clf, test: dict[str, np.ndarray], train_w: np.ndarray, table: pd.DataFrame, tuning,
                    cfg: AttributeUnitsConfig, link_fit: Optional[tuple[str, Any]], path: str | os.PathLike,
                    attrs: dict, progress: bool = True, table_name: str = "units.csv",
                    segmenter=None) -> dict[str, Any]:
    """Everything of the stage; writes the maps to `path` and returns the tables and metrics.

    test: the pairs file's test split (w, seed, label); train_w: its training latents (the
    link's refit in the randomisation test); tuning: the open tuning HDF5 file; link_fit:
    (kind, options) of the pipeline's link, or None to leave the link out of the test;
    table_name: how errors name the unit table; segmenter: the one trained for gen, whose
    masks stand in for part maps where gen has none (unused where it has them).
    """
    own = gen.part_names is not None
    if own and "parts_gt" not in tuning:
        raise UserError("attribute_units: the tuning file has no parts_gt although the generator draws part maps; "
                        "it was written for another generator, rerun dvc repro tune_units")
    if not own and segmenter is None:
        raise UserError("attribute_units: the generator has no part maps of its own; pass the segmenter trained "
                        "for it (--segmenter data/segmenter.pt, from dvc repro train_segmenter) to score on its masks")
    part_names = list(gen.part_names) if own else list(segmenter.label_names)
    all_seeds = np.asarray(tuning["seeds"][:])
    S = len(all_seeds) if cfg.n_seeds is None else cfg.n_seeds
    if S > len(all_seeds):
        raise UserError(f"attribute_units.n_seeds: {S} seeds asked but the tuning file holds {len(all_seeds)}; "
                        "lower it or raise tune_units.n_seeds")
    seeds, classes = all_seeds[:S], np.asarray(tuning["classes"][:S])
    A = min(cfg.am_seeds, S)
    tuned = np.asarray(tuning["units"][:])
    sel = select_units(table, part_names, tuned, cfg, source=table_name)
    units = sel["unit"].to_numpy()
    U, T = len(units), tuning["renders"].shape[2]
    dev = gen.device

    w_test = torch.as_tensor(_test_latents(test, seeds, classes, "pairs test split"), device=dev)
    img, parts = gen.render(w_test)
    x = ((img + 1.0) * 0.5).clamp(0.0, 1.0)  # as the classifier's to_unit
    parts = parts.cpu().numpy() if own else segment_w(segmenter, gen, w_test, cfg.batch_size)
    net = attribution_ready(clf, "units", image_resolution=gen.resolution)
    if "occlusion" in cfg.methods:  # fail before any map is computed, naming the param
        try:
            Occlusion(net, cfg.occlusion)._check_cover()
        except UserError as e:
            raise UserError(f"attribute_units.{e}") from None
    with torch.no_grad():
        active = (net(x)[:, torch.as_tensor(units, device=x.device)] > 0).T.cpu().numpy()  # [U, S]
    H = gen.resolution
    clock = time.perf_counter()

    methods = list(cfg.methods)
    heat = np.full((len(methods) + 1, U, S, H, H), np.nan, dtype=np.float32)
    am: dict[str, Any] = {}
    for i, m in enumerate(tqdm(methods, desc="attribute_units", unit="method", disable=not progress)):
        method = make_method(m, net, cfg.options(m), batch_size=cfg.batch_size, progress=progress, generator=gen)
        n = A if method.family == "input reconstruction" else S
        inputs = w_test[:n] if method.input_kind == "w" else x[:n]
        maps = method.grid(inputs, units, seeds[:n])
        heat[i, :, :n] = maps.heat.numpy()
        if maps.result is not None:
            am[m] = maps
    ui = {int(u): k for k, u in enumerate(tuned.tolist())}
    link_img = np.stack([tuning["renders"][ui[int(u)], :S][:, [0, T - 1]] for u in units])  # [U, S, 2, H, W, 3]
    if own:
        link_parts = np.stack([tuning["parts_gt"][ui[int(u)], :S][:, [0, T - 1]] for u in units])
    else:
        link_w = np.stack([tuning["w"][ui[int(u)], :S][:, [0, T - 1]] for u in units])  # [U, S, 2, D]
        link_parts = _segmented(segmenter, gen, link_w, cfg.batch_size)
        for m, maps in am.items():
            if maps.w is not None:  # the latent method's renders: the segmenter labels them too
                n = maps.w.shape[1]
                start = np.broadcast_to(parts[:n], (U, *parts[:n].shape))
                am[m] = dataclasses.replace(maps, parts_start=torch.from_numpy(np.ascontiguousarray(start)),
                                            parts_result=torch.from_numpy(_segmented(segmenter, gen, maps.w.numpy(),
                                                                                     cfg.batch_size)))
    diff = link_img[:, :, 1].astype(np.float32) - link_img[:, :, 0].astype(np.float32)
    heat[-1] = np.abs(diff / 255.0).sum(-1)

    timing = {"maps_s": time.perf_counter() - clock}
    scores = _score(methods, heat, sel, seeds, classes, parts, am, link_parts, active)
    steps, sims, pairs = [], {}, np.zeros((0, 2), np.int64)
    clock = time.perf_counter()
    if cfg.sanity_units:
        steps, sims, pairs = _sanity(gen, clf, x, w_test, img, sel, seeds, active, train_w, cfg, link_fit, methods,
                                     progress)
    timing["randomisation_s"] = time.perf_counter() - clock
    tables = _tables(scores, steps, sims, cfg)
    tables["summary"]["unit_similarity"] = tables["summary"]["method"].map(
        {m: unit_similarity(heat[i], active) for i, m in enumerate(methods + ["link"])})
    with h5.create(path) as f:
        h5.set_attrs(f, params=to_dict(cfg), methods=methods + ["link"], families=[METHODS[m].family for m in methods]
                     + ["link"], part_names=part_names, part_source="generator" if own else "segmenter",
                     class_names=list(gen.class_names), sanity_steps=steps,
                     sanity_methods=list(sims), **attrs)
        h5.ensure_block(f, heat, link_img)
        for name, arr in (("units", units), ("unit_part", sel["part_index"].to_numpy(np.int64)),
                          ("unit_group", (sel["group"] == "control").to_numpy(np.int64)),
                          ("selectivity", sel["selectivity"].to_numpy(np.float32)), ("seeds", seeds),
                          ("classes", classes), ("sanity_pairs", pairs), ("active", active.astype(np.uint8))):
            f.create_dataset(name, data=arr, track_times=False)
        big = {"heat": heat, "images": to_uint8(img).cpu().numpy(), "parts": parts,
               "link_first": link_img[:, :, 0], "link_last": link_img[:, :, 1],
               "link_parts_first": link_parts[:, :, 0], "link_parts_last": link_parts[:, :, 1]}
        for m, maps in am.items():
            big[f"{m}_result"] = _u8(maps.result)
            if m == "am_latent":
                big.update(am_latent_start=_u8(maps.start), am_latent_parts_start=maps.parts_start.numpy(),
                           am_latent_parts_result=maps.parts_result.numpy())
        if sims:
            big["sanity_similarity"] = np.stack([sims[m] for m in sims]).astype(np.float32)
        for name, arr in big.items():
            f.create_dataset(name, data=arr, chunks=True if arr.ndim > 1 else None, compression="gzip",
                             shuffle=True, track_times=False)
    # Wall-clock seconds: reported by the stage, kept out of the outputs (they would differ per run).
    metrics = {**_metrics(tables, methods, sel, S, A, cfg), "part_source": "generator" if own else "segmenter"}
    return {**tables, "metrics": metrics, "timing": timing}


def _segmented(segmenter, gen, w: np.ndarray, batch_size: int) -> np.ndarray:
    """The segmenter's masks uint8 [..., H, W] of the renders of w [..., D]."""
    flat = torch.as_tensor(np.asarray(w, dtype=np.float32).reshape(-1, w.shape[-1]), device=gen.device)
    return segment_w(segmenter, gen, flat, batch_size).reshape(*w.shape[:-1], gen.resolution, gen.resolution)


def _u8(x01: torch.Tensor) -> np.ndarray:
    """[U, A, 3, H, W] in [0, 1] -> uint8 [U, A, H, W, 3]."""
    lead = x01.shape[:2]
    return to_uint8(x01.reshape(-1, *x01.shape[2:]) * 2.0 - 1.0).numpy().reshape(*lead, *x01.shape[3:], 3)


def _score(methods, heat, sel, seeds, classes, parts, am, link_parts, active) -> pd.DataFrame:
    U = heat.shape[1]
    pid = sel["part_index"].to_numpy()[:, None, None, None]
    rows = []
    for i, m in enumerate(methods + ["link"]):
        if m == "link":
            mask = (link_parts[:, :, 0] == pid) | (link_parts[:, :, 1] == pid)
        elif m == "am_latent":
            mask = (am[m].parts_start.numpy() == pid) | (am[m].parts_result.numpy() == pid)
        else:
            n = am[m].result.shape[1] if m in am else heat.shape[2]
            mask = np.broadcast_to(parts[None, :n] == pid, (U, n, *parts.shape[1:]))
        n = mask.shape[1]
        s = part_scores(heat[i, :, :n].reshape(U * n, *heat.shape[3:]), mask.reshape(U * n, *mask.shape[2:]))
        rows.append(pd.DataFrame({
            "method": m, "family": "link" if m == "link" else METHODS[m].family,
            "unit": np.repeat(sel["unit"].to_numpy(), n), "group": np.repeat(sel["group"].to_numpy(), n),
            "part": np.repeat(sel["part"].to_numpy(), n), "seed": np.tile(seeds[:n], U), "class": np.tile(classes[:n], U),
            "active": active[:, :n].reshape(-1), **s}))
    return pd.concat(rows, ignore_index=True)


def _sanity(gen, clf, x, w_test, img, sel, seeds, active, train_w, cfg, link_fit, methods, progress):
    """The randomisation test on the most selective unit of the first `sanity_units` parts,
    each on the first `sanity_seeds` seeds where it is active (a unit that is 0 on an image
    has an empty map, which no randomisation can change)."""
    top = sel[(sel["group"] == "selective") & (sel["rank"] == 0)].head(cfg.sanity_units)
    pick = [(int(sel.at[i, "unit"]), int(s)) for i in top.index
            for s in np.flatnonzero(active[i])[:cfg.sanity_seeds]]
    units = np.asarray([u for u, _ in pick], dtype=np.int64)
    pos = np.asarray([s for _, s in pick], dtype=np.int64)
    pairs = np.stack([units, seeds[pos]], 1) if len(pick) else np.zeros((0, 2), np.int64)
    if not len(pick):
        return [], {}, pairs
    pair_seeds = [pair_seed(int(seeds[s]), int(u)) for u, s in pick]

    def method_heat(net):
        out = {}
        for m in methods:
            method = make_method(m, net, cfg.options(m), batch_size=cfg.batch_size, generator=gen)
            inputs = w_test[pos] if method.input_kind == "w" else x[pos]
            out[m] = method.attribute(inputs, units, pair_seeds).heat.numpy()
        return out

    link = None
    if link_fit is not None and cfg.sanity_link_pairs and train_w is not None:
        rows = np.unique(np.linspace(0, len(train_w) - 1, min(cfg.sanity_link_pairs, len(train_w))).round().astype(int))
        refit = LinkRefit(gen, link_fit[0], link_fit[1], train_w[rows], img, batch_size=max(cfg.batch_size, 256))
        link = (refit, units, pos)
    steps, sims = randomisation_test(clf, method_heat, gen.resolution, cfg.seed, link, progress)
    return steps, sims, pairs


def _tables(scores: pd.DataFrame, steps: list[str], sims: dict[str, np.ndarray],
            cfg: AttributeUnitsConfig) -> dict[str, pd.DataFrame]:
    live = scores[scores["active"]]  # every method on the same pairs: those where the unit is active
    summary = summarize(live, ["method", "family", "group"])
    by_part = summarize(live[live["group"] == "selective"], ["method", "part"])
    rows = [{"method": m, "step": k, "randomised": name, "similarity": float(np.nanmean(v[k])) if np.isfinite(v[k]).any()
             else float("nan"), "n_pairs": int(np.isfinite(v[k]).sum())}
            for m, v in sims.items() for k, name in enumerate(steps)]
    sanity = pd.DataFrame(rows, columns=["method", "step", "randomised", "similarity", "n_pairs"])
    return {"scores": scores, "summary": summary, "by_part": by_part, "sanity": sanity}


def _metrics(tables: dict[str, pd.DataFrame], methods: list[str], sel: pd.DataFrame, S: int, A: int,
             cfg: AttributeUnitsConfig) -> dict:
    summary, sanity = tables["summary"], tables["sanity"]
    out: dict[str, Any] = {"n_units": {g: int((sel["group"] == g).sum()) for g in GROUPS}, "n_seeds": S, "am_seeds": A,
                           "methods": {}}
    for m in methods + ["link"]:
        entry: dict[str, Any] = {}
        for g in GROUPS:
            r = summary[(summary["method"] == m) & (summary["group"] == g)]
            if len(r):
                r = r.iloc[0]
                entry[g] = {k: r[k] for k in ("part_mass", "chance", "lift", "lift_lo", "lift_hi", "pointing",
                                              "pointing_lift", "pointing_lift_lo", "pointing_lift_hi",
                                              "units_above_chance", "n_units", "n_pairs", "n_empty")}
                entry["unit_similarity"] = r["unit_similarity"]
        curve = sanity[sanity["method"] == m].sort_values("step")
        if len(curve):
            final = float(curve["similarity"].iloc[-1])
            entry["sanity"] = {"similarity_all_random": final, "similarity_top_random": float(curve["similarity"].iloc[1])
                               if len(curve) > 1 else None, "flagged": bool(np.isfinite(final) and final >= cfg.sanity_flag_at)}
        out["methods"][m] = entry
    sel_rows = summary[summary["group"] == "selective"].set_index("method")
    out["best_part_mass"] = str(sel_rows["lift"].idxmax()) if sel_rows["lift"].notna().any() else None
    out["best_pointing"] = str(sel_rows["pointing_lift"].idxmax()) if sel_rows["pointing_lift"].notna().any() else None
    out["flagged"] = [m for m, e in out["methods"].items() if e.get("sanity", {}).get("flagged")]
    return out
