"""Closed-loop solver settings side by side: transfer against off-target on the same units and seeds.

Usage: python benchmarks/closed_loop_frontier.py [--every 8] [--offset 0] [--settings "n_iter=20,ridge=0.01;..."]
Needs a full pipeline's data/pairs.h5, data/tuning.h5 and the models (`dvc repro tune_units`).

Tuning sets unit i of a seed's r to its minimum and its maximum over the tuning seeds;
the closed loop solves for the w of each (linkstyle/explain/closed_loop.py), the render
is re-encoded, and (docs/method.md section 9)

- transfer = (r~_i(max) - r~_i(min)) / (max - min), 1 = the whole set change arrived;
- off-target = ||r~_-i(max) - r~_-i(min)|| / (max - min), the other units' movement.

For every setting (params.yaml's tune_units.closed_loop with the named keys replaced) it
solves the two end steps of every (unit, seed) of units offset::every, the stage's seeds,
and prints the medians over (unit, seed) and over units (median over seeds first), the
ratio of the two medians off / transfer, and the seconds. The open loop's figures for the same units and
seeds come from data/tuning.h5. The issue's target: transfer >= 0.5 at off-target no
larger than the open loop's. Prints figures only; about 4 min per setting for 32 units on
2 cores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

from linkstyle.core import cli
from linkstyle.explain.closed_loop import ClosedLoop
from linkstyle.explain.tuning import TuningConfig, pick_seeds
from linkstyle.link.bundle import load_linked
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

DEFAULT_SETTINGS = "n_iter=20,n_polish=0,ridge=0.01;n_iter=30,n_polish=0,ridge=0.01;n_iter=30,n_polish=10,ridge=0.005"


def _parse(setting: str) -> dict:
    out = {}
    for kv in filter(None, setting.split(",")):
        k, v = kv.split("=")
        out[k.strip()] = type(getattr(TuningConfig().closed_loop, k.strip()))(v)
    return out


def _summary(transfer: np.ndarray, off: np.ndarray) -> dict:
    """Medians over (unit, seed) and over units; dead units (NaN) left out."""
    per_unit_t, per_unit_o = np.nanmedian(transfer, 1), np.nanmedian(off, 1)
    t, o = np.nanmedian(transfer), np.nanmedian(off)
    return {"transfer": t, "off": o, "unit_transfer": np.nanmedian(per_unit_t), "unit_off": np.nanmedian(per_unit_o),
            "ratio": o / t, "half": np.mean(transfer[np.isfinite(transfer)] >= 0.5)}


def _open_loop(tuning: Path, units: np.ndarray) -> dict:
    with h5py.File(tuning) as f:
        have = f["units"][:]
        sel = np.isin(have, units)
        v, ut, off = f["values"][:][sel], f["r_tilde_unit"][:][sel], f["r_tilde_off"][:][sel]
    d = v[:, -1] - v[:, 0]
    d = np.where(d > 1e-6, d, np.nan)[:, None]
    return _summary((ut[:, :, -1] - ut[:, :, 0]) / d, off[:, :, -1] / d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--pairs", type=Path, default=Path("data/pairs.h5"))
    ap.add_argument("--link", type=Path, default=Path("data/links/ridge.pt"), help="only for the fingerprint checks")
    ap.add_argument("--tuning", type=Path, default=Path("data/tuning.h5"), help="the open loop's sweep")
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--offset", type=int, default=0, help="units offset::every; 4 with --every 8: units the defaults were not chosen on")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="';'-separated settings of key=value,...")
    a = ap.parse_args()

    cfg = cli.section(a.params, "tune_units", TuningConfig)
    specs = cli.section(a.params, "models.generator", GeneratorSpec), cli.section(a.params, "models.classifier", ClassifierSpec)
    L = load_linked(*specs, a.link, a.pairs, "test", ("r", "w", "label", "seed"), "cpu")
    test = L.pairs
    pick = pick_seeds(test["label"], cfg.n_seeds, L.gen.n_classes)
    r_base, w_base = test["r"][pick], test["w"][pick]
    units = np.arange(L.clf.n_units)[a.offset :: a.every]
    lo, hi = r_base[:, units].min(0), r_base[:, units].max(0)
    delta = np.where(hi - lo > 1e-6, hi - lo, np.nan)
    n, S = len(units), len(pick)
    target = np.repeat(r_base[None, :, None, :], 2, 2).repeat(n, 0)  # [unit, seed, end, R]
    target[np.arange(n), :, 0, units] = lo[:, None]
    target[np.arange(n), :, 1, units] = hi[:, None]
    seed_of, unit_of = np.tile(np.repeat(np.arange(S), 2), n), np.repeat(units, S * 2)

    rows = [("open loop (data/tuning.h5)", _open_loop(a.tuning, units), float("nan"))]
    print(f"{n} units ({a.offset}::{a.every}) x {S} seeds x 2 end steps; params {a.params}: tune_units.closed_loop with")
    for setting in filter(None, a.settings.split(";")):
        cl = replace(cfg.closed_loop, **_parse(setting))
        t0 = time.perf_counter()
        w = ClosedLoop(L.gen, L.clf, w_base, cl, cfg.batch_size).solve(seed_of, unit_of, torch.as_tensor(target.reshape(-1, target.shape[-1])))
        with torch.inference_mode():
            img, _ = L.gen.render(w, cfg.batch_size)
            rt, _ = L.clf.represent(img, batch_size=cfg.batch_size)
        rt = rt.numpy().reshape(n, S, 2, -1)
        moved = rt[np.arange(n), :, :, units]  # [n, S, 2]
        d = rt[:, :, 1] - rt[:, :, 0]
        d[np.arange(n), :, units] = 0.0
        rows.append((f"{cl.method} {setting}", _summary((moved[:, :, 1] - moved[:, :, 0]) / delta[:, None],
                                                        np.linalg.norm(d, axis=-1) / delta[:, None]), time.perf_counter() - t0))
        print(f"  done: {setting} ({rows[-1][2]:.0f} s)", flush=True)

    print(f"\n{'solver':<44} {'transfer':>8} {'off':>6} {'off/tr':>6} {'>=0.5':>6} | {'per unit: transfer':>18} {'off':>6} | {'s':>5}")
    for name, m, sec in rows:
        print(f"{name:<44} {m['transfer']:8.3f} {m['off']:6.3f} {m['ratio']:6.2f} {m['half']:6.1%} | "
              f"{m['unit_transfer']:18.3f} {m['unit_off']:6.3f} | {sec:5.0f}")


if __name__ == "__main__":
    main()
