"""Speed of the feature visualisation maps of stage attribute_units, per method.

Usage: python benchmarks/attribution_speed.py --data data --units reports/units.csv
       [--params params.yaml] [--threads 2]

On the default world's artifacts it selects the units as the stage does and times each
method's maps for all selected units and seeds (activation maximisation: the first
am_seeds seeds), wall-clock and process CPU time, with torch on `--threads` threads.
Budget: all maps in under 2 minutes on 2 CPU cores. The CPU time divided by
the threads is what the wall time would be on cores nobody else uses. Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from linkstyle.core import cli
from linkstyle.explain.attribution import make_method
from linkstyle.explain.attribution.study import AttributeUnitsConfig, select_units
from linkstyle.link.pairs import load_pairs
from linkstyle.models.attribution_ready import attribution_ready
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec, load_classifier, load_generator

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--units", default="reports/units.csv")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = cli.section(Path(a.params), "attribute_units", AttributeUnitsConfig)
    data = Path(a.data)
    gen = load_generator(GeneratorSpec(path=str(data / "generator.pt")))
    clf = load_classifier(ClassifierSpec(path=str(data / "classifier.pt")))
    with h5py.File(data / "tuning.h5") as f:
        tuned, seeds, classes = f["units"][:], f["seeds"][:], f["classes"][:]
    S = len(seeds) if cfg.n_seeds is None else cfg.n_seeds
    seeds, classes = seeds[:S], classes[:S]
    units = select_units(pd.read_csv(a.units), list(gen.part_names), tuned, cfg)["unit"].to_numpy()
    test = load_pairs(data / "pairs.h5", "test", ("w", "seed"))
    w = torch.as_tensor(test["w"][[int(np.flatnonzero(test["seed"] == s)[0]) for s in seeds]])
    x = ((gen.synthesize(w) + 1) * 0.5).clamp(0, 1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    net = attribution_ready(clf, "units", image_resolution=gen.resolution)
    rows = [("attribution-ready copy", len(units) * S, time.perf_counter() - wall0, time.process_time() - cpu0)]
    for m in cfg.methods:
        method = make_method(m, net, cfg.options(m), batch_size=cfg.batch_size, generator=gen)
        n = min(cfg.am_seeds, S) if method.family == "input reconstruction" else S
        cpu, wall = time.process_time(), time.perf_counter()
        method.grid(w[:n] if method.input_kind == "w" else x[:n], units, seeds[:n])
        rows.append((m, len(units) * n, time.perf_counter() - wall, time.process_time() - cpu))
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"{len(units)} units x {S} seeds (activation maximisation: {min(cfg.am_seeds, S)} seeds), torch threads "
          f"{a.threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':<24}{'maps':>6}{'wall s':>9}{'cpu s':>9}{'cpu/threads s':>15}")
    for name, n, wall, cpu in rows + [("all maps", sum(r[1] for r in rows[1:]), total_wall, total_cpu)]:
        print(f"{name:<24}{n:>6}{wall:>9.1f}{cpu:>9.1f}{cpu / a.threads:>15.1f}")


if __name__ == "__main__":
    main()
