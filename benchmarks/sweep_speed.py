"""Unit sweep throughput: tune_units renders/s and quantify_parts images/s, with projections.

Usage: python benchmarks/sweep_speed.py [--units 32] [--seeds 20] [--steps 3]
Needs the trained default models: run `dvc repro tune_units train_segmenter` first.

Runs the library functions the stages call (`linkstyle.tuning.tune_units`,
`linkstyle.quantify.quantify_tuning`) on the first `--units` units, in one process,
timing each; then projects the whole default sweep (all units, 20 seeds, 3 steps) and
the paper's scale (2,048 units x 100 seeds x 3 steps) from the measured per-image costs
(both scale linearly in renders). Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path("data"))
    a = ap.parse_args()
    need = [a.data / p for p in ("generator.pt", "classifier.pt", "pairs.h5", "links/ridge.pt", "segmenter.pt")]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        sys.exit(f"sweep_speed: {missing[0]} not found; run `dvc repro tune_units train_segmenter` first")
    torch.set_num_threads(os.cpu_count() or 1)
    from linkstyle.cli import keep_freed_memory

    keep_freed_memory()  # as the stages do

    from linkstyle.classifier import load_classifier
    from linkstyle.link import load_link
    from linkstyle.pairs import load_pairs
    from linkstyle.quantify import QuantifyConfig, quantify_tuning
    from linkstyle.segmenter import load_segmenter
    from linkstyle.stylegen import load_stylegen
    from linkstyle.tuning import TuningConfig, pick_seeds, tune_units

    gen, clf = load_stylegen(a.data / "generator.pt"), load_classifier(a.data / "classifier.pt")
    link = load_link(a.data / "links/ridge.pt", r_dim=clf.n_units, w_dim=gen.w_dim)
    seg = load_segmenter(a.data / "segmenter.pt")
    test = load_pairs(a.data / "pairs.h5", "test", ("r", "label", "seed"))
    cfg = TuningConfig(unit_range=(0, a.units), n_seeds=a.seeds, n_steps=a.steps)
    pick = pick_seeds(test["label"], a.seeds, gen.n_classes)
    r_base = test["r"][pick]
    units = torch.arange(a.units).numpy()
    lo, hi = r_base[:, units].min(0), r_base[:, units].max(0)
    n = a.units * a.seeds * a.steps
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tuning.h5"
        t = time.perf_counter()
        tune_units(gen, clf, link, r_base, test["seed"][pick], test["label"][pick], units, lo, hi, cfg, path, {},
                   progress=False)
        t_tune = time.perf_counter() - t
        t = time.perf_counter()
        measures, _ = quantify_tuning(path, gen, seg, QuantifyConfig(), progress=False)
        t_quant = time.perf_counter() - t
    sources = measures["source"].nunique()
    per_tune, per_quant = t_tune / n, t_quant / n
    print(f"unit sweep, {a.units} units x {a.seeds} seeds x {a.steps} steps = {n} renders, "
          f"{torch.get_num_threads()} threads:")
    print(f"  tune_units       {n / t_tune:8.1f} renders/s      ({t_tune:.1f} s; render, re-encode, write)")
    print(f"  quantify_parts   {n / t_quant:8.1f} images/s       ({t_quant:.1f} s; segment + {sources} mask sources measured)")
    for name, units_, seeds in (("default sweep", clf.n_units, 20), ("paper scale", 2048, 100)):
        m = units_ * seeds * 3
        print(f"  projected {name:14s} {units_} units x {seeds} seeds x 3 steps = {m:,} renders: "
              f"tune {m * per_tune / 60:6.1f} min + quantify {m * per_quant / 60:6.1f} min "
              f"= {m * (per_tune + per_quant) / 3600:5.2f} h")


if __name__ == "__main__":
    main()
