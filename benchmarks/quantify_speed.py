"""Throughput of linkstyle.parts on world renders: images per second for each step.

Usage: PYTHONPATH=. python benchmarks/quantify_speed.py [--n 6000] [--resolution 32] [--n-jobs 1 2]

The images come from `linkstyle.world` (real 7-part label maps); the first half plays
step 0 and the second half the last step, so matching and changes see realistic
numbers of regions. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def world_images(n: int, resolution: int):
    from linkstyle.world.procedural import (
        CLASS_NAMES,
        PART_NAMES,
        WorldConfig,
        make_split,
    )

    per_class = -(-n // len(CLASS_NAMES))
    cfg = WorldConfig(resolution=resolution, n_train_per_class=per_class, n_test_per_class=1, chunk=2048)
    images, labels = zip(*((img, lab) for _, _, _, img, lab in make_split(cfg, "train")))
    return np.concatenate(images)[:n], np.concatenate(labels)[:n], PART_NAMES


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6000, help="images (even; half step 0, half last step)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    from linkstyle.measure.parts import (
        find_regions,
        match_regions,
        measure_parts,
        pair_changes,
        part_changes,
    )

    images, labels, names = world_images(args.n, args.resolution)
    n = len(images) - len(images) % 2
    half = n // 2
    print(f"{n} world images {args.resolution}x{args.resolution}, {len(names)} parts, {os.cpu_count()} CPUs")
    for n_jobs in args.n_jobs:
        kw = dict(n_jobs=n_jobs)
        if n_jobs != 1:  # start the loky workers outside the timings
            measure_parts(images[:64], labels[:64], names, chunk_size=32, **kw)
        measures, t_measure = timed(measure_parts, images[:n], labels[:n], names, **kw)
        regions, t_regions = timed(find_regions, labels[:n], names, **kw)
        matches, t_match = timed(match_regions, labels[:half], labels[half:n], names, **kw)
        first = measures[measures.image < half]
        last = measures[measures.image >= half].assign(image=lambda f: f.image - half)
        rf = regions[regions.image < half]
        rl = regions[regions.image >= half].assign(image=lambda f: f.image - half)
        changes, t_changes = timed(part_changes, first, last, regions_first=rf, regions_last=rl, matches=matches)
        _, t_pair = timed(pair_changes, images[:half], labels[:half], images[half:n], labels[half:n], names, **kw)
        print(f"n_jobs={n_jobs}")
        print(f"  measure_parts          {n / t_measure:9.0f} images/s   ({t_measure:.2f} s, {len(measures)} rows)")
        print(f"  find_regions           {n / t_regions:9.0f} images/s   ({t_regions:.2f} s, {len(regions)} regions)")
        print(f"  measure + regions      {n / (t_measure + t_regions):9.0f} images/s")
        print(f"  match_regions          {n / t_match:9.0f} images/s   ({t_match:.2f} s, {len(matches)} pairs)")
        print(f"  part_changes (tables)  {n / t_changes:9.0f} images/s   ({t_changes:.2f} s, {len(changes)} rows)")
        print(f"  pair_changes (all)     {n / t_pair:9.0f} images/s   ({t_pair:.2f} s)")
        print(f"  -> 15,000 images end to end: about {15000 / (n / t_pair):.0f} s")


if __name__ == "__main__":
    main()
