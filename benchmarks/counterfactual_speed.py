"""Counterfactuals batched over trajectories against one trajectory at a time, side by side.

Usage: PYTHONPATH=. python benchmarks/counterfactual_speed.py --data data [--link ridge] [--n-seeds 2]
       [--max-steps 2000] [--geometry data] [--threads 1]

Both runs make the same counterfactuals (every ordered class pair x n_seeds test samples,
the same starts, loss, step size and stopping rule):
- batched: `linkstyle.explain.counterfactuals.search`, every trajectory in one batch,
  finished ones masked out of the batch;
- one at a time in the reference's structure: per trajectory a loop of loss (with L(r)
  recomputed, as the reference does), backward, in-place update of a leaf tensor, render
  of one image, classification of one image, stop when the target wins. The reference's
  PIL round trip per render is left out (it would only add time; docs/method.md D6),
  so both classify the same float render and take the same decisions.
Prints both times, steps per second, whether every trajectory agrees, and the ratio.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch


def reference_structure(gen, clf, link, r0, origin, target, init_seed, metric, scale, cfg) -> tuple[bool, int]:
    """One trajectory the way the reference's optimize_shift loops (batch of one everywhere)."""
    from linkstyle.explain.counterfactuals import initial_shifts

    r = torch.as_tensor(r0, dtype=torch.float32)
    M = None if metric is None else torch.as_tensor(metric)
    shift = initial_shifts([init_seed], scale)[0].clone().requires_grad_(True)
    a, b, c = cfg.weights
    steps = 0
    while True:
        r_shifted = r - shift
        pred = clf.logits_from_r(r_shifted[None])[0]
        w_cycled, w_shifted_cycled = link(r[None])[0], link(r_shifted[None])[0]
        loss = -a * pred[target] + b * pred[origin] - c * torch.cosine_similarity(w_cycled, w_shifted_cycled, dim=-1)
        loss.backward()
        with torch.no_grad():
            g = shift.grad if M is None else shift.grad @ M
            shift -= cfg.lr * g
            shift.grad.zero_()
            w = link(torch.relu(r - shift)[None])
        img, _ = gen.render(w)
        _, logits = clf.represent(img)
        steps += 1
        if int(torch.softmax(logits, 1)[0].argmax()) == target:
            return True, steps
        if steps >= cfg.max_steps:
            return False, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder with generator.pt, classifier.pt, pairs.h5, links/")
    ap.add_argument("--link", default="ridge")
    ap.add_argument("--n-seeds", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--geometry", default="data", choices=("data", "raw"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from linkstyle.explain.counterfactuals import CounterfactualConfig, geometry_of, plan_trajectories, search
    from linkstyle.link.bundle import load_linked
    from linkstyle.link.pairs import load_pairs
    from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

    d = args.data
    L = load_linked(GeneratorSpec(path=str(d / "generator.pt")), ClassifierSpec(path=str(d / "classifier.pt")),
                    d / "links" / f"{args.link}.pt", d / "pairs.h5", "test", ("r", "label", "seed"), torch.device("cpu"))
    cfg = CounterfactualConfig(n_seeds=args.n_seeds, max_steps=args.max_steps, geometry=args.geometry, batch_size=4096,
                               device="cpu")
    plan = plan_trajectories(L.pairs["label"], L.pairs["seed"], cfg, L.gen.n_classes)
    train_r = load_pairs(d / "pairs.h5", "train", ("r",))["r"] if cfg.geometry == "data" else None
    metric, scale = geometry_of(train_r, cfg.geometry, L.clf.n_units)
    r0 = L.pairs["r"][plan["pair_index"]].astype(np.float32)
    n = len(r0)
    print(f"{n} trajectories ({L.gen.n_classes} classes, every ordered pair x {args.n_seeds} samples), "
          f"geometry {cfg.geometry}, max {cfg.max_steps} steps, {args.threads} torch thread(s), {os.cpu_count()} CPUs")

    t = time.perf_counter()
    out = search(L.gen, L.clf, L.link, r0, plan["origin"], plan["target"], plan["init_seed"], metric, scale, cfg)
    t_batched = time.perf_counter() - t

    t = time.perf_counter()
    ref = [reference_structure(L.gen, L.clf, L.link, r0[i], int(plan["origin"][i]), int(plan["target"][i]),
                               int(plan["init_seed"][i]), metric, scale, cfg) for i in range(n)]
    t_single = time.perf_counter() - t

    ok_ref = np.array([s for s, _ in ref])
    steps_ref = np.array([k for _, k in ref])
    total = int(out["steps"].sum())
    agree = int(((ok_ref == out["success"]) & (steps_ref == out["steps"])).sum())
    print(f"success {out['success'].mean():.0%}, median steps {np.median(out['steps']):.0f}, "
          f"{total} trajectory-steps in all; {agree}/{n} trajectories identical in both runs")
    print(f"  batched                   {t_batched:8.2f} s   {total / t_batched:8.0f} steps/s")
    print(f"  one at a time (reference) {t_single:8.2f} s   {steps_ref.sum() / t_single:8.0f} steps/s")
    print(f"  ratio                     {t_single / t_batched:8.1f}x")

    # Where a step's time goes: per image, one at a time against a batch of 64.
    with torch.no_grad():
        w = L.link(torch.as_tensor(r0[:64]))
    images = L.gen.render(w)[0]
    for name, fn, x in (("render", L.gen.render, w), ("classify", L.clf.represent, images)):
        per = []
        for bs in (1, 64):
            t = time.perf_counter()
            for i in range(0, len(x), bs):
                fn(x[i : i + bs])
            per.append((time.perf_counter() - t) / len(x) * 1e3)
        print(f"  {name:8s} per image: {per[0]:6.2f} ms alone, {per[1]:6.2f} ms in a batch of 64")


if __name__ == "__main__":
    main()
