"""Accuracy and speed of the motion backends on pairs with known warps, and agreement with part maps.

Usage: PYTHONPATH=. python benchmarks/motion_accuracy.py [--n 400] [--tuning data/tuning.h5]
           [--pump-code PATH [--pump-checkpoint FILE]] [--threads 1 2]

1. Synthetic pairs: a 32 px image, and the same image moved by
   a known affine (rotation up to 6 degrees, zoom up to 3%, shift up to 1.5 px) plus a
   local Gaussian bump of motion (up to 1.5 px, sigma 3-5 px). Images are procedural
   world renders and, with --tuning, the generator's own first-step renders (blurrier,
   like the ones the stage sees). Per backend: affine errors, end-point errors (EPE) of
   the whole displacement and of the residual (in the bump, where |bump| > 0.25 px),
   the EPE of zero motion and of one raw DIS pass for scale, valid share, time per pair.
2. With --tuning (and its `parts_gt`): flow vs the generator's part maps on the real
   perturbation pairs: each part's mean displacement against its centroid shift between
   the first and last part map (Pearson r over parts except background, x and y pooled).
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np


def world_images(n: int, res: int = 32) -> np.ndarray:
    from linkstyle.world.procedural import CLASS_NAMES, render, sample_factors

    seeds = 7_000_000 + np.arange(n)
    return render(sample_factors(seeds, seeds % len(CLASS_NAMES)), res)[0]


def tuning_images(path: str, n: int) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        r = f["renders"]
        per_unit = r.shape[1]
        return r[: -(-n // per_unit), :, 0].reshape(-1, *r.shape[3:])[:n]


def known_warp(img: np.ndarray, seed: int):
    """(moved image, true displacement [H, W, 2], affine [2, 3], bump [H, W, 2]) for one image."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    a, s = np.radians(rng.uniform(-6, 6)), rng.uniform(0.97, 1.03)
    lin = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = c + rng.uniform(-1.5, 1.5, 2) - lin @ c
    bc, amp, sig = rng.uniform(0.25, 0.75, 2) * [w, h], rng.uniform(-1.5, 1.5, 2), rng.uniform(3, 5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xx, yy], -1)

    def bump(p):
        g = np.exp(-((p[..., 0] - bc[0]) ** 2 + (p[..., 1] - bc[1]) ** 2) / (2 * sig ** 2))
        return g[..., None] * amp

    inv = np.linalg.inv(lin)
    p = (grid - t) @ inv.T
    for _ in range(40):  # the pixel that lands on each q: fixed point of A p + bump(p) = q
        p = (grid - t - bump(p)) @ inv.T
    moved = cv2.remap(img, p[..., 0].astype(np.float32), p[..., 1].astype(np.float32), cv2.INTER_CUBIC,
                      borderMode=cv2.BORDER_REPLICATE)
    return moved, grid @ lin.T + t + bump(grid) - grid, np.concatenate([lin, t[:, None]], 1), bump(grid)


def raw_dis_epe(first, last, truth, cfg) -> float:
    """EPE of a single DIS pass (no alignment), for comparison."""
    import cv2

    from linkstyle.measure.motion import _dis

    dis = _dis(cfg)
    flows = np.stack([dis.calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
                      for a, b in zip(first, last)])
    return float(np.linalg.norm(flows - truth, axis=-1).mean())


def synthetic(name: str, images: np.ndarray, cfgs: dict, threads: list[int]) -> None:
    from linkstyle.measure.motion import decompose_affine, estimate_motion

    pairs = [known_warp(img, 1000 + i) for i, img in enumerate(images)]
    last, truth, affine, bump = (np.stack(x) for x in zip(*pairs))
    t_true, s_true, r_true, k_true = decompose_affine(affine, images.shape[1:3])
    in_bump = np.linalg.norm(bump, axis=-1) > 0.25
    print(f"\n{name}: {len(images)} pairs of {images.shape[1]} px; zero motion: EPE "
          f"{np.linalg.norm(truth, axis=-1).mean():.3f} px (residual in bump {np.linalg.norm(bump, axis=-1)[in_bump].mean():.3f})")
    for label, cfg in cfgs.items():
        for n_threads in threads if label == "dis" else [1]:
            c = dataclasses.replace(cfg, n_threads=n_threads)
            wall, cpu = time.perf_counter(), time.process_time()
            m = estimate_motion(images, last, c)
            wall, cpu = (time.perf_counter() - wall) / len(images), (time.process_time() - cpu) / len(images)
            print(f"  {label:5s} {n_threads} thread(s): {wall * 1e3:.1f} ms/pair wall, {cpu * 1e3:.1f} ms CPU")
        print(f"    affine errors (mean abs): translation {np.linalg.norm(m.translation - t_true, axis=1).mean():.3f} px, "
              f"rotation {np.abs(m.rotation_deg - r_true).mean():.3f} deg, scale {np.abs(m.scale - s_true).mean():.4f}, "
              f"shear {np.abs(m.shear - k_true).mean():.4f}")
        epe = np.linalg.norm(m.total() - truth, axis=-1)
        res = np.linalg.norm(m.flow - bump, axis=-1)
        print(f"    EPE whole displacement {epe.mean():.3f} px (valid pixels {epe[m.valid].mean():.3f}); residual in bump "
              f"{res[in_bump].mean():.3f}, elsewhere {res[~in_bump].mean():.3f}; valid {m.valid.mean():.2f}")
        if label == "dis":
            print(f"    one raw DIS pass, no alignment: EPE {raw_dis_epe(images, last, truth, cfg):.3f} px")


def part_map_agreement(path: str, cfg) -> None:
    import h5py

    from linkstyle.measure.motion import PART_METRICS, estimate_motion, motion_values
    from linkstyle.measure.quantify_motion import CENTROID_MIN_PX, centroids

    with h5py.File(path, "r") as f:
        if "parts_gt" not in f:
            print(f"\n{path}: no parts_gt, no part-map agreement")
            return
        r, g = f["renders"][:], f["parts_gt"][:]
        names = __import__("json").loads(f.attrs["part_names"])
    n, res = r.shape[0] * r.shape[1], r.shape[3]
    first, last = r[:, :, 0].reshape(n, res, res, 3), r[:, :, -1].reshape(n, res, res, 3)
    g0, g1 = g[:, :, 0].reshape(n, res, res), g[:, :, -1].reshape(n, res, res)
    t = time.perf_counter()
    m = estimate_motion(first, last, cfg)
    t = time.perf_counter() - t
    _, per_part = motion_values(m, g0, len(names))
    shift = per_part[..., [PART_METRICS.index("shift_x"), PART_METRICS.index("shift_y")]]
    (n0, c0), (n1, c1) = centroids(g0, len(names)), centroids(g1, len(names))
    ok = (n0 >= CENTROID_MIN_PX) & (n1 >= CENTROID_MIN_PX)
    print(f"\n{path}: {n} perturbation pairs, motion in {t:.1f} s ({t / n * 1e3:.1f} ms/pair, "
          f"{cfg.threads()} threads); flow vs part-map centroid shift, Pearson r:")
    a, b = [], []
    for j, p in enumerate(names):
        sel = ok[:, j] & np.isfinite(shift[:, j]).all(1)
        r_p = np.corrcoef(shift[sel, j].ravel(), (c1 - c0)[sel, j].ravel())[0, 1]
        print(f"    {p:12s} r = {r_p:.3f} (n = {sel.sum()})")
        if p != "background":
            a.append(shift[sel, j].ravel()), b.append((c1 - c0)[sel, j].ravel())
    a, b = np.concatenate(a), np.concatenate(b)
    print(f"  pooled over parts but background: r = {np.corrcoef(a, b)[0, 1]:.3f} (n = {len(a)}), "
          f"slope {np.polyfit(b, a, 1)[0]:.2f}, mean |difference| {np.abs(a - b).mean():.3f} px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="synthetic pairs per image source")
    ap.add_argument("--tuning", default=None, help="tuning.h5: generator renders, and the part-map agreement")
    ap.add_argument("--pump-code", default=None, help="a naver/pump checkout: also benchmark backend pump")
    ap.add_argument("--pump-checkpoint", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import torch

    from linkstyle.measure.motion import MotionConfig

    torch.set_num_threads(1)
    cfgs = {"dis": MotionConfig()}
    if args.pump_code:
        cfgs["pump"] = MotionConfig(backend="pump", pump_code=args.pump_code, pump_checkpoint=args.pump_checkpoint)
    print(f"DIS: preset {cfgs['dis'].dis_preset}, patch {cfgs['dis'].patch_size}, stride {cfgs['dis'].patch_stride}, "
          f"finest scale {cfgs['dis'].finest_scale}; RANSAC {cfgs['dis'].ransac_threshold} px at 256 px")
    synthetic("world renders", world_images(args.n), cfgs, args.threads)
    if args.tuning:
        synthetic("generator renders (tuning step 0)", tuning_images(args.tuning, args.n), cfgs, args.threads)
        part_map_agreement(args.tuning, dataclasses.replace(cfgs["dis"], n_threads=max(args.threads)))


if __name__ == "__main__":
    main()
