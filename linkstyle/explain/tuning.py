"""Tuning single units (docs/method.md section 4): set r_i to a few values, find w, render.

For each tuned unit i, test seed s and step t, r = r_s with r_i replaced by
v_i,t, the t-th of n_steps values spread linearly over the unit's observed [min, max]
(across the tuning seeds, as the reference does, or across the training pairs). Then
w comes from one of two modes:

- `open_loop` (the reference): the link maps r to w;
- `closed_loop`: w is solved for, from the seed's own w, so that the classifier's
  re-encoding of the render matches r in unit i while the other units stay
  (linkstyle/explain/closed_loop.py).

The generator renders w, and the classifier re-encodes the render (r~), so one can see
how far unit i really moved in the image (linkstyle/explain/faithfulness.py).

Output (HDF5, streamed unit block by unit block, renders chunked by unit):
  renders       uint8   [U, S, T, H, W, 3]
  parts_gt      uint8   [U, S, T, H, W]   the generator's own part maps, where it has them
  w             float32 [U, S, T, w_dim]
  values        float32 [U, T]            the unit's set values (same for every seed)
  r_tilde_unit  float32 [U, S, T]         unit i's value in r~ = f_R(render)
  r_tilde_corr  float32 [U, S, T]         corr(r, r~) over all units
  r_tilde       float16 [U, S, T, R]      r~ itself (half precision: for inspection)
  r_tilde_off   float32 [U, S, T]         || r~_-i(t) - r~_-i(0) ||, other units, from float32 r~
  reachable     bool    [U]               whether the sweep moved the unit (faithfulness.reachability)
  unreachable_reason str [U]              why not: "dead", "no gradient", "transfer below floor"; "" if reachable
  seed_gradient float32 [U, S]            ||d r~_i / d w|| at the seed (closed loop only; 0 = no gradient)
  units, range_min, range_max [U]; seeds, classes [S]; r_base float32 [S, R]
r of step (u, s, t) is r_base[s] with unit units[u] set to values[u, t]: stored exactly,
without repeating R for every step. Attribute `mode` says which mode wrote the file; both
write the same datasets, so quantification and analysis run unchanged on either.
"""

from __future__ import annotations

import os
import hashlib
from dataclasses import dataclass, replace
from typing import Optional

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check, to_dict
from linkstyle.core.distribute import BlockTask, ClusterConfig, map_blocks
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8
from linkstyle.core.runtime import module_device, resolve_device
from linkstyle.core.stats import rowwise_corr
from linkstyle.explain.seeds import pick_seeds as _pick_seeds
from linkstyle.explain.closed_loop import ClosedLoop, ClosedLoopConfig
from linkstyle.explain.faithfulness import (
    faithfulness_arrays,
    faithfulness_summary,
    off_target_norms,
    reachability,
    reachability_counts,
)
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

MODES = ("open_loop", "closed_loop")


@dataclass(frozen=True)
class TuningConfig:
    """Options of stage `tune_units`."""

    units: Optional[tuple[int, ...]] = None  # explicit unit ids; None = unit_range or all
    unit_range: Optional[tuple[int, ...]] = None  # [start, stop) as a two-item list
    n_seeds: int = 20  # test seeds, spread round-robin over the classes
    n_steps: int = 3
    range_source: str = "seeds"  # "seeds": [min, max] over the tuning seeds (reference); "train": over train pairs
    batch_size: int = 512  # images per forward pass
    device: str = "auto"
    mode: str = "closed_loop"  # closed_loop: solve for w (closed_loop.py); open_loop: the link maps r to w (reference)
    min_transfer: float = 0.1  # a unit whose median transfer over the seeds is below this is unreachable
    closed_loop: ClosedLoopConfig = ClosedLoopConfig()

    def __post_init__(self):
        check(self.n_seeds >= 1, "n_seeds", "must be >= 1")
        check(self.n_steps >= 2, "n_steps", "must be >= 2 (first and last step make the perturbation pair)")
        check(self.range_source in ("seeds", "train"), "range_source", "must be 'seeds' or 'train'")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        check(0.0 <= self.min_transfer <= 1.0, "min_transfer", f"must be in [0, 1] (a share of the set change), "
              f"got {self.min_transfer}")
        check(self.unit_range is None or (len(self.unit_range) == 2 and 0 <= self.unit_range[0] < self.unit_range[1]),
              "unit_range", "must be [start, stop) with 0 <= start < stop")
        check(self.units is None or self.unit_range is None, "units", "and unit_range are exclusive; set one of them")
        check(self.units is None or len(self.units) > 0, "units", "is an empty list; list unit ids, or null for all units")


def resolve_units(cfg: TuningConfig, n_units: int) -> np.ndarray:
    """The unit ids to tune; in mode closed_loop every `closed_loop.units_every`-th of them."""
    units = _selected_units(cfg, n_units)
    return units[:: cfg.closed_loop.units_every] if cfg.mode == "closed_loop" else units


def _selected_units(cfg: TuningConfig, n_units: int) -> np.ndarray:
    if cfg.units is not None:
        units = np.asarray(cfg.units, dtype=np.int64)
        bad = units[(units < 0) | (units >= n_units)]
        if len(bad):
            raise UserError(f"tune_units.units: unit ids {bad[:5].tolist()} out of range; the classifier has {n_units} units (0..{n_units - 1})")
        if len(np.unique(units)) != len(units):
            raise UserError("tune_units.units: unit ids repeat; list each unit once")
        return units
    if cfg.unit_range is not None:
        start, stop = cfg.unit_range
        if stop > n_units:
            raise UserError(f"tune_units.unit_range: stop {stop} exceeds the classifier's {n_units} units")
        return np.arange(start, stop, dtype=np.int64)
    return np.arange(n_units, dtype=np.int64)


def pick_seeds(labels: np.ndarray, n_seeds: int, n_classes: int) -> np.ndarray:
    """Indices of n_seeds test pairs, round-robin over classes (`linkstyle.explain.seeds`)."""
    return _pick_seeds(labels, n_seeds, n_classes, "tune_units.n_seeds")


def step_values(lo: np.ndarray, hi: np.ndarray, n_steps: int) -> np.ndarray:
    """[U, T] values spread linearly from lo to hi."""
    t = np.linspace(0.0, 1.0, n_steps, dtype=np.float64)
    return (lo[:, None] + (hi - lo)[:, None] * t[None]).astype(np.float32)


class _Tuner:
    """Finds w, renders and re-encodes blocks of units; the models live here, once per process."""

    def __init__(self, gen, clf, link, r_base: np.ndarray, values: np.ndarray, cfg: TuningConfig,
                 w_base: Optional[np.ndarray], progress: bool):
        self.gen, self.clf, self.link, self.cfg, self.values = gen, clf, link, cfg, values
        self.S, self.T, self.R = r_base.shape[0], cfg.n_steps, r_base.shape[1]
        self.closed = cfg.mode == "closed_loop"
        if self.closed and (w_base is None or np.shape(w_base) != (self.S, gen.w_dim)):
            raise ValueError(f"closed_loop tuning needs w_base [{self.S}, {gen.w_dim}], the seeds' w")
        self.link_dev = gen.device if self.closed else module_device(link)
        self.base = torch.as_tensor(r_base, dtype=torch.float32, device=self.link_dev)
        self.solver = ClosedLoop(gen, clf, w_base, cfg.closed_loop, cfg.batch_size, progress) if self.closed else None

    def block(self, a: int, u: np.ndarray) -> dict:
        """Everything tune_units stores for the units u (positions a, a + 1, ... of the sweep)."""
        gen, S, T, R, n = self.gen, self.S, self.T, self.R, len(u)
        with torch.inference_mode():
            r = self.base[None, :, None, :].repeat(n, 1, T, 1)  # [n, S, T, R]
            v = torch.as_tensor(self.values[a : a + n], device=self.link_dev)
            idx = torch.as_tensor(u, device=self.link_dev)
            r.scatter_(3, idx[:, None, None, None].expand(n, S, T, 1), v[:, None, :, None].expand(n, S, T, 1))
            flat = r.reshape(-1, R)
            if not self.closed:
                w = self.link(flat).to(gen.device)
        extra = {}
        if self.closed:
            seed_of, unit_of = np.tile(np.arange(S), n), np.repeat(u, S)  # (unit, seed) rows
            w = self.solver.solve(seed_of, unit_of, np.repeat(self.values[a : a + n], S, 0)).reshape(n * S * T, -1)
            extra["seed_gradient"] = self.solver.seed_gradient(seed_of, unit_of).reshape(n, S)
        with torch.inference_mode():
            img, parts = gen.render(w, self.cfg.batch_size)
            r_t, _ = self.clf.represent(img, batch_size=self.cfg.batch_size)
        res = gen.resolution
        unit_t = r_t.gather(1, torch.as_tensor(u).repeat_interleave(S * T)[:, None])[:, 0]
        r_tilde = r_t.numpy().reshape(n, S, T, R)
        out = {
            "renders": to_uint8(img).cpu().numpy().reshape(n, S, T, res, res, 3),
            "w": w.cpu().numpy().reshape(n, S, T, -1),
            "r_tilde_unit": unit_t.numpy().reshape(n, S, T),
            "r_tilde_corr": rowwise_corr(flat.cpu().numpy(), r_t.numpy()).astype(np.float32).reshape(n, S, T),
            "r_tilde": r_tilde.astype(np.float16),
            "r_tilde_off": off_target_norms(r_tilde, u),  # unit ids index r directly
        }
        if parts is not None:
            out["parts_gt"] = parts.cpu().numpy().reshape(n, S, T, res, res)
        out.update(extra)
        return out


def unit_blocks(n_units: int, cfg: TuningConfig) -> list[tuple[int, int]]:
    """[a, b) ranges of units per forward pass: batch_size images of S seeds x T steps."""
    per = max(1, cfg.batch_size // (cfg.n_seeds * cfg.n_steps))
    return [(a, min(n_units, a + per)) for a in range(0, n_units, per)]


def _write_tuning(path, gen, units, seeds, classes, lo, hi, values, r_base, cfg: TuningConfig, attrs: dict,
                  results) -> dict:
    """Create the tuning file and stream the blocks of `results` into it, in order."""
    S, T, R = len(seeds), cfg.n_steps, r_base.shape[1]
    unit_t_all, off_all, grad_all = [], [], []
    with h5.create(path) as f:
        recorded = to_dict(cfg)
        if cfg.mode != "closed_loop":  # the closed loop's options do not touch an open-loop sweep
            recorded.pop("closed_loop")
        h5.set_attrs(f, params=recorded, class_names=list(gen.class_names),
                     part_names=list(gen.part_names) if gen.part_names else [], mode=cfg.mode, **attrs)
        for name, arr in (("units", units), ("seeds", seeds), ("classes", classes), ("range_min", lo.astype(np.float32)),
                          ("range_max", hi.astype(np.float32)), ("values", values), ("r_base", r_base.astype(np.float32))):
            f.create_dataset(name, data=arr, track_times=False)
        res = gen.resolution
        ds = {
            "renders": f.create_dataset("renders", (len(units), S, T, res, res, 3), np.uint8, chunks=(1, S, T, res, res, 3),
                                        compression="gzip", shuffle=True, track_times=False),
            "w": f.create_dataset("w", (len(units), S, T, gen.w_dim), np.float32, chunks=(1, S, T, gen.w_dim), track_times=False),
            "r_tilde_unit": f.create_dataset("r_tilde_unit", (len(units), S, T), np.float32, track_times=False),
            "r_tilde_corr": f.create_dataset("r_tilde_corr", (len(units), S, T), np.float32, track_times=False),
            # Half precision: r~ of every render for inspection at a quarter of float32's
            # size; the metrics use r_tilde_unit and r_tilde_off, computed in float32.
            "r_tilde": f.create_dataset("r_tilde", (len(units), S, T, R), np.float16, chunks=(1, S, T, R),
                                        compression="gzip", shuffle=True, track_times=False),
            "r_tilde_off": f.create_dataset("r_tilde_off", (len(units), S, T), np.float32, track_times=False),
        }
        if gen.part_names is not None:
            ds["parts_gt"] = f.create_dataset("parts_gt", (len(units), S, T, res, res), np.uint8, chunks=(1, S, T, res, res),
                                              compression="gzip", shuffle=True, track_times=False)
        a = 0
        for out in results:
            n = len(out["w"])
            h5.ensure_block(f, *out.values())
            for name, d in ds.items():
                d[a : a + n] = out[name]
            unit_t_all.append(out["r_tilde_unit"])
            off_all.append(out["r_tilde_off"])
            if "seed_gradient" in out:  # the closed loop's solver supplies it; the open loop has no gradient to report
                grad_all.append(np.asarray(out["seed_gradient"], dtype=np.float32))
            a += n
        arrays = faithfulness_arrays(np.concatenate(unit_t_all), np.concatenate(off_all), values)
        if grad_all and len(grad_all) != len(unit_t_all):
            raise ValueError("seed_gradient came with some blocks of the sweep only")
        grad = np.concatenate(grad_all) if grad_all else None
        reach = reachability(arrays, grad, cfg.min_transfer)
        f.create_dataset("reachable", data=reach["reachable"], track_times=False)
        f.create_dataset("unreachable_reason", data=reach["unreachable_reason"], dtype=h5py.string_dtype("utf-8"),
                         track_times=False)
        if grad is not None:
            f.create_dataset("seed_gradient", data=grad, track_times=False)
    return {
        "mode": cfg.mode,
        "n_units": int(len(units)), "n_seeds": int(S), "n_steps": int(T), "n_renders": int(len(units) * S * T),
        "dead_units": int((hi - lo <= 1e-6).sum()),
        **faithfulness_summary(arrays),
        "min_transfer": cfg.min_transfer,
        **reachability_counts(reach),
    }


def tune_units(gen, clf, link, r_base: np.ndarray, seeds: np.ndarray, classes: np.ndarray, units: np.ndarray,
               lo: np.ndarray, hi: np.ndarray, cfg: TuningConfig, path: str | os.PathLike, attrs: dict,
               progress: bool = True, w_base: Optional[np.ndarray] = None) -> dict:
    """Render every (unit, seed, step), stream to `path`; return summary metrics. In this
    process, with the models given.

    `link` maps r to w in mode open_loop; mode closed_loop ignores it and starts from
    `w_base` [S, w_dim], the seeds' own w (whose renders re-encode to r_base).
    """
    values = step_values(lo, hi, cfg.n_steps)
    tuner = _Tuner(gen, clf, link, r_base, values, cfg, w_base, progress)
    S, T = len(seeds), cfg.n_steps

    def results():
        with tqdm(total=len(units) * S * T, desc=f"tune_units/{cfg.mode}", unit="img", disable=not progress) as bar:
            for a, b in unit_blocks(len(units), replace(cfg, n_seeds=S)):
                yield tuner.block(a, units[a:b])
                bar.update((b - a) * S * T)

    return _write_tuning(path, gen, units, seeds, classes, lo, hi, values, r_base, cfg, attrs, results())


@dataclass(frozen=True, eq=False)
class TuneBlocks(BlockTask):
    """tune_units' work on a Dask worker: models, link and the seeds' r load once per worker."""

    generator: GeneratorSpec
    classifier: ClassifierSpec
    link_path: str
    pairs_path: str
    cfg: TuningConfig
    units: np.ndarray
    r_base: np.ndarray
    values: np.ndarray
    w_base: Optional[np.ndarray]

    def cache_key(self):
        arrays = [self.units, self.r_base, self.values] + ([self.w_base] if self.w_base is not None else [])
        digest = hashlib.md5(b"".join(np.ascontiguousarray(x).tobytes() for x in arrays)).hexdigest()
        return (self.generator, self.classifier, self.link_path, self.pairs_path, self.cfg, digest)

    def load(self):
        from linkstyle.link.bundle import load_linked

        dev = resolve_device(self.cfg.device, "tune_units.device")
        L = load_linked(self.generator, self.classifier, self.link_path, self.pairs_path, "test", ("label",), dev)
        return _Tuner(L.gen, L.clf, L.link, self.r_base, self.values, self.cfg, self.w_base, progress=False)

    def run(self, state, block):
        a, b = block
        return state.block(a, self.units[a:b])


def tune_units_distributed(gen, generator: GeneratorSpec, classifier: ClassifierSpec, link_path, pairs_path,
                           r_base: np.ndarray, seeds: np.ndarray, classes: np.ndarray, units: np.ndarray,
                           lo: np.ndarray, hi: np.ndarray, cfg: TuningConfig, path: str | os.PathLike, attrs: dict,
                           cluster: ClusterConfig, progress: bool = True,
                           w_base: Optional[np.ndarray] = None) -> dict:
    """`tune_units` with blocks of units on Dask workers (`linkstyle.core.distribute`), each
    worker loading the models itself; `gen` (loaded here) only shapes the output file. The
    same file, byte for byte, for any number of workers."""
    values = step_values(lo, hi, cfg.n_steps)
    S, T = len(seeds), cfg.n_steps
    blocks = unit_blocks(len(units), replace(cfg, n_seeds=S))
    task = TuneBlocks(generator, classifier, str(link_path), str(pairs_path), cfg, np.asarray(units),
                      np.asarray(r_base, np.float32), values, None if w_base is None else np.asarray(w_base))
    results = map_blocks(task, blocks, cluster, sizes=[(b - a) * S * T for a, b in blocks],
                         desc=f"tune_units/{cfg.mode}", unit="img", progress=progress)
    return _write_tuning(path, gen, units, seeds, classes, lo, hi, values, r_base, cfg, attrs, results)
