"""Closed-loop solver settings side by side: transfer, off-target and cost per render against the open loop.

Usage: python benchmarks/closed_loop_frontier.py [--every 8] [--offset 0] [--settings "walk_steps=12,ridge=0.005;..."]
Needs a full pipeline's data/pairs.h5, data/links/ridge.pt and the models (`dvc repro fit_link@ridge`).

Tuning sets unit i of a seed's r to n_steps values over its [min, max] across the tuning
seeds; the closed loop solves for the w of each (linkstyle/explain/closed_loop.py), the
render is re-encoded, and (docs/method.md D39)

- transfer = (r~_i(max) - r~_i(min)) / (max - min), 1 = the whole set change arrived;
- off-target = ||r~_-i(max) - r~_-i(min)|| / (max - min), the other units' movement.

First the open loop (the link, render, re-encode) is timed on the same renders, then
every setting (params.yaml's tune_units.closed_loop with the named keys replaced) on
units offset::every, the stage's seeds and steps, seeds' Jacobians included. Prints the
medians over (unit, seed) and over units (median over seeds first), the ratio of the two
medians off / transfer, the seconds, the milliseconds per render and the cost per render
as a multiple of the open loop's. The faithfulness target: transfer >= 0.5 at off-target
no larger than the open loop's. Prints figures only; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from linkstyle.core import cli
from linkstyle.core.errors import UserError
from linkstyle.explain.closed_loop import ClosedLoop, ClosedLoopConfig
from linkstyle.explain.faithfulness import faithfulness_arrays, off_target_norms
from linkstyle.explain.tuning import TuningConfig, pick_seeds, step_values
from linkstyle.link.bundle import load_linked
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

DEFAULT_SETTINGS = (";walk_steps=6;walk_steps=8,polish_steps=6,ridge=0.005;walk_steps=12,polish_steps=8,ridge=0.005,max_step=2"
                    ";walk_steps=20,polish_steps=16,ridge=0.002,max_step=2,tolerance=0.05;walk_steps=20,polish_steps=16,ridge=0.002,max_step=2,tolerance=0")


def _parse(setting: str) -> dict:
    """"n_iter=36,ridge=0.002" -> {"n_iter": 36, "ridge": 0.002}, typed as ClosedLoopConfig's fields."""
    types = {f.name: type(getattr(ClosedLoopConfig(), f.name)) for f in fields(ClosedLoopConfig)}
    out = {}
    for kv in filter(None, setting.split(",")):
        k, _, v = (x.strip() for x in kv.partition("="))
        if k not in types or not v:
            raise UserError(f"--settings: {kv!r} is not key=value with a key of tune_units.closed_loop "
                            f"({', '.join(types)})")
        try:
            out[k] = types[k](v)
        except ValueError:
            raise UserError(f"--settings: {k}={v!r} is not a {types[k].__name__}") from None
    return out


def _summary(f: dict) -> dict:
    """Medians over (unit, seed) and over units (median over seeds first) of faithfulness_arrays."""
    transfer, off = f["transfer"][f["live"]], f["off_target"][f["live"]]
    t, o = np.median(transfer), np.median(off)
    return {"transfer": t, "off": o, "unit_transfer": np.median(np.median(transfer, 1)),
            "unit_off": np.median(np.median(off, 1)), "ratio": o / t, "half": np.mean(transfer >= 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--pairs", type=Path, default=Path("data/pairs.h5"))
    ap.add_argument("--link", type=Path, default=Path("data/links/ridge.pt"), help="only for the fingerprint checks")
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--offset", type=int, default=0, help="units offset::every; 4 with --every 8: units the defaults were not chosen on")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="';'-separated settings of key=value,...")
    a = ap.parse_args()

    settings = [_parse(x) for x in a.settings.split(";")]  # an empty setting: params.yaml as it is
    cfg = cli.section(a.params, "tune_units", TuningConfig)
    specs = cli.section(a.params, "models.generator", GeneratorSpec), cli.section(a.params, "models.classifier", ClassifierSpec)
    L = load_linked(*specs, a.link, a.pairs, "test", ("r", "w", "label", "seed"), "cpu")
    test = L.pairs
    pick = pick_seeds(test["label"], cfg.n_seeds, L.gen.n_classes)
    r_base, w_base = test["r"][pick], test["w"][pick]
    units = np.arange(L.clf.n_units)[a.offset :: a.every]
    T = cfg.n_steps
    values = step_values(r_base[:, units].min(0), r_base[:, units].max(0), T)  # [unit, step]: the stage's range
    n, S = len(units), len(pick)
    target = np.repeat(r_base[None, :, None, :], T, 2).repeat(n, 0)  # [unit, seed, step, R]
    target[np.arange(n), :, :, units] = values[:, None, :]
    seed_of, unit_of = np.tile(np.arange(S), n), np.repeat(units, S)  # (unit, seed) rows, T renders each

    flat = torch.as_tensor(target.reshape(-1, target.shape[-1]))
    n_renders = len(flat)

    def measure(w):
        with torch.inference_mode():
            img, _ = L.gen.render(w, cfg.batch_size)
            rt, _ = L.clf.represent(img, batch_size=cfg.batch_size)
        rt = rt.numpy().reshape(n, S, T, -1)
        return _summary(faithfulness_arrays(rt[np.arange(n), :, :, units], off_target_norms(rt, units), values))

    # The open loop, timed the same way: link, render, re-encode of the same targets, after
    # one untimed pass (its first call sets up the convolution kernels, a second of noise).
    with torch.inference_mode():
        L.clf.represent(L.gen.render(L.link(flat[: cfg.batch_size]), cfg.batch_size)[0], batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    with torch.inference_mode():
        w_open = L.link(flat)
    rows = [("open loop (the link)", measure(w_open), time.perf_counter() - t0)]
    print(f"{n} units ({a.offset}::{a.every}) x {S} seeds x {T} steps = {n_renders} renders, "
          f"{torch.get_num_threads()} threads; params {a.params}: tune_units.closed_loop with", flush=True)
    for setting, keys in zip(a.settings.split(";"), settings):
        cl = replace(cfg.closed_loop, **keys)
        t0 = time.perf_counter()  # the seeds' Jacobians included: their cost is shared by the renders
        w = ClosedLoop(L.gen, L.clf, w_base, cl, cfg.batch_size).solve(seed_of, unit_of, np.repeat(values, S, 0))
        rows.append((setting or "params.yaml", measure(w.reshape(n_renders, -1)), time.perf_counter() - t0))
        print(f"  done: {setting} ({rows[-1][2]:.0f} s)", flush=True)

    base = rows[0][2] / n_renders
    print(f"\n{'solver':<52} {'transfer':>8} {'off':>6} {'off/tr':>6} {'>=0.5':>6} | {'per unit: tr':>12} {'off':>6} | "
          f"{'s':>5} {'ms/render':>9} {'x open':>6}")
    for name, m, sec in rows:
        print(f"{name:<52} {m['transfer']:8.3f} {m['off']:6.3f} {m['ratio']:6.2f} {m['half']:6.1%} | "
              f"{m['unit_transfer']:12.3f} {m['unit_off']:6.3f} | {sec:5.0f} {1e3 * sec / n_renders:9.2f} "
              f"{sec / n_renders / base:6.1f}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
