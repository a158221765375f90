"""Unit sweep throughput: tune_units renders/s and quantify_parts images/s, with projections.

Usage: python benchmarks/sweep_speed.py [--units 32] [--seeds N] [--steps N] [--params params.yaml] [--workers 1,2]
Needs the trained default models: run `dvc repro tune_units train_segmenter` first.

Runs the library functions the stages call (`linkstyle.explain.tuning.tune_units`,
`linkstyle.measure.quantify.quantify_tuning`) on the first `--units` units, in one process,
with the tune_units and quantify_parts options of params.yaml, timing each; then
projects the whole default sweep (all units, the params' seeds and steps) and
the paper's scale (2,048 units x 100 seeds x 3 steps) from the measured per-image costs
(both scale linearly in renders). With `--workers 1,2` it also runs quantify_parts on Dask
local clusters of each size on the same renders, side by side (1 torch thread per worker),
and prints the speedup and a projection of the paper's scale on N workers. Prints figures
only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=None, help="default: tune_units.n_seeds of --params")
    ap.add_argument("--steps", type=int, default=None, help="default: tune_units.n_steps of --params")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--workers", default="", help="comma-separated Dask worker counts for quantify_parts, e.g. 1,2")
    a = ap.parse_args()
    from linkstyle.core import cli
    from linkstyle.core.io import read_params
    from linkstyle.core.runtime import resolve_device
    from linkstyle.explain.tuning import (
        TuningConfig,
        pick_seeds,
        resolve_units,
        tune_units,
    )
    from linkstyle.link.bundle import load_linked
    from linkstyle.core.distribute import ClusterConfig
    from linkstyle.measure.quantify import QuantifyConfig, quantify_tuning, quantify_tuning_distributed
    from linkstyle.measure.segmenter import load_segmenter
    from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

    # The stages' own options, so the figures are those of `dvc repro`; only the units,
    # seeds and steps are overridden.
    tcfg = cli.section(a.params, "tune_units", TuningConfig)
    tcfg = replace(tcfg, units=None, unit_range=(0, a.units), n_seeds=a.seeds or tcfg.n_seeds,
                   n_steps=a.steps or tcfg.n_steps, range_source="seeds")
    qcfg = cli.section(a.params, "quantify_parts", QuantifyConfig)
    dev = resolve_device(tcfg.device)  # also sets threads and keep_freed_memory, as the stages do
    use = read_params(a.params, "fit_link").get("use", "ridge")
    L = load_linked(cli.section(a.params, "models.generator", GeneratorSpec),
                    cli.section(a.params, "models.classifier", ClassifierSpec), a.data / f"links/{use}.pt",
                    a.data / "pairs.h5", "test", ("r", "label", "seed"), dev)
    gen, clf, link, test = L.gen, L.clf, L.link, L.pairs
    seg = load_segmenter(a.data / "segmenter.pt", gen.fingerprint, device=dev)
    units = resolve_units(tcfg, clf.n_units)
    pick = pick_seeds(test["label"], tcfg.n_seeds, gen.n_classes)
    r_base = test["r"][pick]
    lo, hi = r_base[:, units].min(0), r_base[:, units].max(0)
    n = len(units) * tcfg.n_seeds * tcfg.n_steps
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tuning.h5"
        t = time.perf_counter()
        tune_units(gen, clf, link, r_base, test["seed"][pick], test["label"][pick], units, lo, hi, tcfg, path, {},
                   progress=False)
        t_tune = time.perf_counter() - t
        t = time.perf_counter()
        measures, _ = quantify_tuning(path, gen, seg, qcfg, progress=False)
        t_quant = time.perf_counter() - t
        scaling = []
        for k in [int(x) for x in a.workers.split(",") if x.strip()]:
            cluster = ClusterConfig(n_workers=k, threads_per_worker=1)
            t = time.perf_counter()
            m_k, _ = quantify_tuning_distributed(path, cli.section(a.params, "models.generator", GeneratorSpec),
                                                 a.data / "segmenter.pt", qcfg, cluster, progress=False)
            scaling.append((k, time.perf_counter() - t, m_k.equals(measures)))
    sources = measures["source"].nunique()
    per_tune, per_quant = t_tune / n, t_quant / n
    print(f"unit sweep, {len(units)} units x {tcfg.n_seeds} seeds x {tcfg.n_steps} steps = {n} renders, "
          f"device {dev}, {torch.get_num_threads()} threads:")
    print(f"  tune_units       {n / t_tune:8.1f} renders/s      ({t_tune:.1f} s; render, re-encode, write)")
    print(f"  quantify_parts   {n / t_quant:8.1f} images/s       ({t_quant:.1f} s; segment + {sources} mask sources measured)")
    for name, units_, seeds in (("default sweep", clf.n_units, tcfg.n_seeds), ("paper scale", 2048, 100)):
        m = units_ * seeds * tcfg.n_steps
        print(f"  projected {name:14s} {units_} units x {seeds} seeds x {tcfg.n_steps} steps = {m:,} renders: "
              f"tune {m * per_tune / 60:6.1f} min + quantify {m * per_quant / 60:6.1f} min "
              f"= {m * (per_tune + per_quant) / 3600:5.2f} h")
    if scaling:
        print(f"quantify_parts on Dask local clusters (1 torch thread per worker; times include starting the "
              f"workers and loading the models once per worker), {n} images:")
        base = scaling[0][1]
        for k, t_k, same in scaling:
            print(f"  {k} worker(s): {t_k:6.1f} s  {n / t_k:7.1f} images/s  {1e3 * t_k / n:6.2f} ms/image  "
                  f"speedup vs {scaling[0][0]}: {base / t_k:4.2f}x  tables identical to in-process: {same}")
        k_max, t_max = scaling[-1][0], scaling[-1][1]
        eff = (base * scaling[0][0]) / (t_max * k_max)  # parallel efficiency at the largest measured size
        m = 2048 * 100 * tcfg.n_steps
        for n_w in (k_max, 8, 32, 128):
            per = (t_max * k_max / n) / (n_w * eff) if n_w != k_max else t_max / n
            print(f"  paper scale (2,048 units x 100 seeds x {tcfg.n_steps} steps = {m:,} images) quantify_parts "
                  f"on {n_w:3d} workers: {m * per / 3600:6.2f} h"
                  + ("" if n_w == k_max else f"  (projected at the measured efficiency {eff:.2f})"))


if __name__ == "__main__":
    from linkstyle.core.errors import UserError

    try:
        main()
    except UserError as e:  # a bad params file or mismatched models: one line, as the stages say it
        sys.exit(f"error: {e}")
