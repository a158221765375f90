"""Counterfactuals batched over trajectories against one trajectory at a time, side by side.

Usage: PYTHONPATH=. python benchmarks/counterfactual_speed.py --data data
       [--n-seeds 10] [--threads 2] [--batch-size 64] [--max-steps 2000] [--sizes 1,4,16,64,256]

Both runs make the same counterfactuals (every ordered class pair x n_seeds test samples,
by default the stage's 200; the same starts, loss, step size and stopping rule), with the
same number of torch threads (default 2):
- batched: `linkstyle.explain.counterfactuals.search`, a pool of `batch_size` trajectories
  stepping together, refilled as trajectories finish;
- one at a time in the reference's structure: per trajectory a loop of loss (L(r)
  recomputed, as the reference does), backward, in-place update of a leaf tensor, render
  of one image, classification of one image, stop when the target wins. The reference's
  PIL round trip per render is left out (it would only add time; docs/method.md D6), so
  both classify the same float render and take the same decisions.
Prints both times, the ms per trajectory-step of each phase (gradient, render, classify,
bookkeeping), how full the pool was, how many trajectories agree, and the ratio; then the
per-image cost of render and classify at several batch sizes (why batch_size is 64).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

PHASES = ("gradient", "render", "classify", "bookkeeping")


def reference_structure(gen, clf, link, r0, origin, target, init_seed, metric, scale, cfg, timings) -> tuple[bool, int]:
    """One trajectory the way the reference's optimize_shift loops (batch of one everywhere)."""
    from linkstyle.explain.counterfactuals import initial_shifts

    r = torch.as_tensor(r0, dtype=torch.float32)
    M = None if metric is None else torch.as_tensor(metric)
    shift = initial_shifts([init_seed], scale)[0].clone().requires_grad_(True)
    a, b, c = cfg.weights
    steps = 0
    t = time.perf_counter()

    def lap(phase):
        nonlocal t
        now = time.perf_counter()
        timings[phase] = timings.get(phase, 0.0) + now - t
        t = now

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
        lap("gradient")
        img = gen.synthesize(w)
        lap("render")
        _, logits = clf.represent(img)
        won = int(torch.softmax(logits, 1)[0].argmax()) == target
        lap("classify")
        steps += 1
        if won:
            return True, steps
        if steps >= cfg.max_steps:
            return False, steps


def per_image(fn, x, bs: int, reps: int = 3) -> float:
    """Best of `reps` ms per item of fn over 256 items (64 below batch 16) in batches of bs, after a warm-up batch."""
    n = 256 if bs >= 16 else 64
    fn(x[:bs])
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(0, n, bs):
            fn(x[i : i + bs])
        best = min(best, (time.perf_counter() - t) / n * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder with generator.pt, classifier.pt, pairs.h5, links/")
    ap.add_argument("--link", default="ridge")
    ap.add_argument("--n-seeds", type=int, default=10, help="samples per class pair (the stage's default: 10)")
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--geometry", default="data", choices=("data", "raw"))
    ap.add_argument("--batch-size", type=int, default=None, help="pool size (default: the stage's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, the same for both runs")
    ap.add_argument("--sizes", default="1,4,16,64,256", help="batch sizes of the per-image table ('' skips it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from linkstyle.explain.counterfactuals import CounterfactualConfig, geometry_of, plan_trajectories, search
    from linkstyle.link.bundle import load_linked
    from linkstyle.link.pairs import load_pairs
    from linkstyle.models.registry import ClassifierSpec, GeneratorSpec

    d = args.data
    L = load_linked(GeneratorSpec(path=str(d / "generator.pt")), ClassifierSpec(path=str(d / "classifier.pt")),
                    d / "links" / f"{args.link}.pt", d / "pairs.h5", "test", ("r", "label", "seed"), torch.device("cpu"))
    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    cfg = CounterfactualConfig(n_seeds=args.n_seeds, max_steps=args.max_steps, geometry=args.geometry, device="cpu", **extra)
    plan = plan_trajectories(L.pairs["label"], L.pairs["seed"], cfg, L.gen.n_classes)
    train_r = load_pairs(d / "pairs.h5", "train", ("r",))["r"] if cfg.geometry == "data" else None
    metric, scale = geometry_of(train_r, cfg.geometry, L.clf.n_units)
    r0 = L.pairs["r"][plan["pair_index"]].astype(np.float32)
    n = len(r0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{n} trajectories ({L.gen.n_classes} classes, every ordered pair x {args.n_seeds} samples), geometry "
          f"{cfg.geometry}, max {cfg.max_steps} steps, pool {cfg.batch_size}, {args.threads} torch thread(s) in both runs, "
          f"{os.cpu_count()} CPUs, load {load:.1f} at start")

    # Warm up both paths' kernels (first calls allocate and pick algorithms).
    with torch.no_grad():
        w_warm = L.link(torch.as_tensor(r0[: cfg.batch_size]))
    for bs in (1, cfg.batch_size):
        L.clf.represent(L.gen.synthesize(w_warm[:bs]))

    tb: dict = {}
    t = time.perf_counter()
    out = search(L.gen, L.clf, L.link, r0, plan["origin"], plan["target"], plan["init_seed"], metric, scale, cfg,
                 timings=tb)
    t_batched = time.perf_counter() - t

    ts: dict = {}
    t = time.perf_counter()
    ref = [reference_structure(L.gen, L.clf, L.link, r0[i], int(plan["origin"][i]), int(plan["target"][i]),
                               int(plan["init_seed"][i]), metric, scale, cfg, ts) for i in range(n)]
    t_single = time.perf_counter() - t

    ok_ref = np.array([s for s, _ in ref])
    steps_ref = np.array([k for _, k in ref])
    total, total_ref = int(out["steps"].sum()), int(steps_ref.sum())
    agree = int(((ok_ref == out["success"]) & (steps_ref == out["steps"])).sum())
    fails = int((~out["success"]).sum())
    print(f"success {out['success'].mean():.1%} ({fails} failed after {cfg.max_steps} steps), median steps "
          f"{np.median(out['steps']):.0f}; {total} trajectory-steps batched, {total_ref} one at a time; "
          f"{agree}/{n} trajectories identical in both runs (success and steps)")
    print(f"batched: {tb['pool_steps']} pool steps, {total / tb['pool_steps']:.1f} trajectories per step on average; "
          f"the failures' {fails * cfg.max_steps} steps run in a pool of {fails} once the others are done")
    head = "".join(f"{p:>12s}" for p in PHASES)
    print(f"  {'':27s}{'total s':>9s}{'steps/s':>9s}   ms per trajectory-step:{head}")
    for name, sec, tim, k in (("batched", t_batched, tb, total), ("one at a time (reference)", t_single, ts, total_ref)):
        cols = "".join(f"{tim.get(p, 0.0) / k * 1e3:12.3f}" for p in PHASES)
        print(f"  {name:27s}{sec:9.2f}{k / sec:9.0f}   {'':23s}{cols}")
    print(f"  ratio (one at a time / batched) {t_single / t_batched:.2f}x")
    ok = out["success"] & ok_ref
    if fails:
        # The same ratio over the trajectories that succeeded, from the per-step costs: what the
        # pool does when it stays full, without the failures' lone 2,000-step tails.
        per_ref = t_single / total_ref
        print(f"  successes only, one at a time {per_ref * steps_ref[ok].sum():.2f} s of "
              f"{ok.sum()} trajectories (estimated from the per-step cost)")

    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if sizes:
        with torch.no_grad():
            w = L.link(torch.as_tensor(np.resize(r0, (256, r0.shape[1]))))
        images = L.gen.synthesize(w)
        print("per image (ms), best of 3: " + "  ".join(f"batch {b}" for b in sizes))
        for name, fn, x in (("render", lambda v: L.gen.synthesize(v, 4096), w),
                            ("classify", lambda v: L.clf.represent(v, 4096), images)):
            print(f"  {name:9s}" + "".join(f"{per_image(fn, x, b):9.2f}" for b in sizes))


if __name__ == "__main__":
    main()
