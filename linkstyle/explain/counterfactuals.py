"""Counterfactual explanations through the link (docs/method.md section 8), batched over trajectories.

A trajectory takes the r of a test sample of class `origin` and searches for a shift s
in R that makes the classifier call the render of the shifted r class `target`, while
the linked w keeps its direction. With l = `Classifier.logits_from_r` and L the link,
it minimises (weights a, b, c = 1, 0.6, 10 as in the reference)

    loss(s) = -a l_target(r - s) + b l_origin(r - s) - c cos(L(r), L(r - s))

by plain gradient steps s <- s - lr M grad (lr 0.5). After every step it renders
L(relu(r - s)) with the generator, classifies the render, and stops the trajectory once
the target class wins; a trajectory that has not flipped after `max_steps` steps is a
failure (recorded, never raised). Every trajectory of a batch steps together; one that
has succeeded stops changing while the others go on.

`geometry` says in which units the search runs:
- "raw", the reference: M = I and s starts uniform in [0, 1) in r's own units. The step
  size is then in units of r squared, so lr 0.5 means different things for different
  classifiers; on the built-in world it overshoots and w leaves the generator's range.
- "data" (default): M = Sigma_R, the covariance of r over the training pairs, and the start
  is uniform in [0, 1) times each unit's std. Preconditioned this way the step is the
  same whatever the units of r (s scales as r), it follows the directions in which r
  actually varies, and for a linear read-out l = W r it turns the logit gradient W_t
  into Sigma_R W_t, the class-mean direction for a discriminant-like classifier.

Every trajectory has its own start, drawn from its own torch.Generator seeded with
`seed_base + k n_classes^2 + origin n_classes + target` (k: the base sample's index
within its class), so a trajectory never depends on which others share its batch (up to
float rounding of batched matrix products, which can move a near-tie by a step).

Output HDF5 (streamed batch of trajectories by batch):
  trajectories/  one row per trajectory: origin, target, k, pair_index, sample_seed,
                 init_seed, success, steps (updates made; max_steps on failure),
                 path_start, r [R], shift [R] (final s), delta_r [R] = relu(r - s) - r,
                 top_units / top_delta [n_top_units] (largest |delta_r|), p_final [C],
                 w_origin [w_dim] = L(r), w_final [w_dim]
  path/          one row per trajectory and step 0..steps (step 0 is L(r), the unshifted
                 origin): trajectory, step, probs [C] of the render, w [w_dim] rendered,
                 cos = cos(L(r), w)
  frames/        n_frames steps per trajectory, evenly spaced over 0..steps (first and
                 last included): steps [F] (-1 pads a short trajectory), images
                 [F, H, W, 3] uint8, w [F, w_dim], parts [F, H, W] (generator part maps)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check, to_dict
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8
from linkstyle.measure.motion import MotionConfig

GEOMETRIES = ("data", "raw")
TRAJECTORY_FIELDS = ("origin", "target", "k", "pair_index", "sample_seed", "init_seed", "success", "steps",
                     "path_start", "r", "shift", "delta_r", "top_units", "top_delta", "p_final", "w_origin", "w_final")
PATH_FIELDS = ("trajectory", "step", "probs", "w", "cos")
FRAME_FIELDS = ("steps", "images", "w")
SEARCH_BLOCK = 4096  # trajectories searched before their rows are written


@dataclass(frozen=True)
class CounterfactualConfig:
    """Options of stage `counterfactuals`."""

    class_pairs: Optional[tuple[tuple[int, ...], ...]] = None  # [[origin, target], ...]; None = every ordered pair
    n_seeds: int = 10  # base samples per pair: the first test pairs of the origin class
    lr: float = 0.5
    weights: tuple[float, ...] = (1.0, 0.6, 10.0)  # target logit, origin logit, cosine of w
    max_steps: int = 2000
    geometry: str = "data"  # "data": steps in R's covariance metric, start scaled by unit std; "raw": the reference
    seed_base: int = 0
    n_frames: int = 8  # renders kept per trajectory, evenly spaced over its steps (first and last included)
    n_top_units: int = 10  # units that moved most, per trajectory
    batch_size: int = 64  # trajectories stepping together = images per render (64: fastest per image on CPU)
    device: str = "auto"
    # Quantification of first vs last render (docs/method.md sections 5 and 7).
    entropy_radius: int = 5
    min_region_px: int = 3
    min_part_area: float = 20.0
    motion: MotionConfig = field(default_factory=MotionConfig)
    n_strips: int = 20  # trajectories in the strip figure (one per class pair first)

    def __post_init__(self):
        check(self.n_seeds >= 1, "n_seeds", f"must be >= 1, got {self.n_seeds}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(len(self.weights) == 3, "weights", f"must be three numbers [target, origin, cosine], got {list(self.weights)}")
        check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        check(self.geometry in GEOMETRIES, "geometry", f"must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}")
        check(self.seed_base >= 0, "seed_base", f"must be >= 0, got {self.seed_base}")
        check(self.n_frames >= 2, "n_frames", f"must be >= 2 (first and last render), got {self.n_frames}")
        check(self.n_top_units >= 1, "n_top_units", f"must be >= 1, got {self.n_top_units}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.entropy_radius >= 1, "entropy_radius", f"must be >= 1, got {self.entropy_radius}")
        check(self.min_region_px >= 1, "min_region_px", f"must be >= 1, got {self.min_region_px}")
        check(self.min_part_area >= 0, "min_part_area", f"must be >= 0, got {self.min_part_area}")
        check(self.n_strips >= 1, "n_strips", f"must be >= 1, got {self.n_strips}")
        check(self.class_pairs is None or len(self.class_pairs) > 0, "class_pairs",
              "is an empty list; list [origin, target] pairs, or null for every ordered pair")
        check(self.class_pairs is None or all(len(p) == 2 for p in self.class_pairs), "class_pairs",
              "must be a list of [origin, target] pairs of class ids")


# ----------------------------------------------------------------------------- planning


def resolve_pairs(cfg: CounterfactualConfig, n_classes: int, where: str = "counterfactuals") -> np.ndarray:
    """[P, 2] (origin, target) class ids: cfg.class_pairs checked, or every ordered pair."""
    if n_classes < 2:
        raise UserError(f"{where}: counterfactuals need at least 2 classes, the classifier has {n_classes}")
    if cfg.class_pairs is None:
        return np.array([(o, t) for o in range(n_classes) for t in range(n_classes) if o != t], dtype=np.int64).reshape(-1, 2)
    pairs = np.asarray(cfg.class_pairs, dtype=np.int64).reshape(-1, 2)
    bad = pairs[(pairs < 0) | (pairs >= n_classes)]
    if len(bad):
        raise UserError(f"{where}.class_pairs: class id {int(bad[0])} out of range; the classifier has {n_classes} "
                        f"classes (0..{n_classes - 1})")
    same = pairs[pairs[:, 0] == pairs[:, 1]]
    if len(same):
        raise UserError(f"{where}.class_pairs: [{same[0, 0]}, {same[0, 1]}] has origin = target; a counterfactual "
                        "needs two different classes")
    if len(np.unique(pairs, axis=0)) != len(pairs):
        raise UserError(f"{where}.class_pairs: a pair repeats; list each [origin, target] once (n_seeds sets repeats)")
    return pairs


def plan_trajectories(labels: np.ndarray, sample_seeds: np.ndarray, cfg: CounterfactualConfig, n_classes: int,
                      where: str = "counterfactuals") -> dict[str, np.ndarray]:
    """Every trajectory's origin, target, k, pair_index (into the test pairs), sample_seed and init_seed.

    Order: class pair by class pair (as resolved), then k; base sample k of class c is
    the k-th test pair of class c in file order.
    """
    pairs = resolve_pairs(cfg, n_classes, where)
    per_class = {c: np.flatnonzero(labels == c) for c in np.unique(pairs[:, 0])}
    short = [c for c, ix in per_class.items() if len(ix) < cfg.n_seeds]
    if short:
        c = short[0]
        raise UserError(f"{where}.n_seeds: {cfg.n_seeds} base samples per pair, but class {c} has only "
                        f"{len(per_class[c])} test pairs; lower n_seeds or sample more test pairs")
    origin = np.repeat(pairs[:, 0], cfg.n_seeds)
    target = np.repeat(pairs[:, 1], cfg.n_seeds)
    k = np.tile(np.arange(cfg.n_seeds, dtype=np.int64), len(pairs))
    pair_index = np.array([per_class[o][i] for o, i in zip(origin, k)], dtype=np.int64)
    init_seed = cfg.seed_base + k * n_classes**2 + origin * n_classes + target
    return {"origin": origin, "target": target, "k": k, "pair_index": pair_index,
            "sample_seed": np.asarray(sample_seeds, dtype=np.int64)[pair_index], "init_seed": init_seed.astype(np.int64)}


def geometry_of(train_r: Optional[np.ndarray], geometry: str, n_units: int) -> tuple[Optional[np.ndarray], np.ndarray]:
    """(metric M [R, R], None for the identity; start scale [R]) of a geometry."""
    if geometry == "raw":
        return None, np.ones(n_units, dtype=np.float32)
    if train_r is None or len(train_r) < 2 or train_r.shape[1] != n_units:
        raise UserError("counterfactuals.geometry: 'data' needs the r of at least 2 training pairs of this classifier; "
                        "rerun dvc repro sample_pairs, or set geometry: raw")
    cov = np.cov(np.asarray(train_r, dtype=np.float64), rowvar=False)
    return cov.astype(np.float32), np.sqrt(np.diag(cov)).astype(np.float32)


def initial_shifts(init_seeds: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """[B, R] float32: uniform [0, 1) per trajectory from its own generator, times `scale`."""
    n_units = len(scale)
    rows = [torch.rand(n_units, generator=torch.Generator().manual_seed(int(s))) for s in init_seeds]
    out = torch.stack(rows) if rows else torch.zeros(0, n_units)
    return out * torch.as_tensor(scale, dtype=torch.float32)


def frame_steps(n_steps: int, n_frames: int) -> np.ndarray:
    """Up to n_frames steps evenly spaced over 0..n_steps, both ends included, -1 padded to n_frames."""
    s = np.unique(np.round(np.linspace(0, n_steps, n_frames)).astype(np.int64))
    return np.concatenate([s, np.full(n_frames - len(s), -1, dtype=np.int64)])


# ----------------------------------------------------------------------------- search


def _loss(clf, link, r0, s, w0, origin, target, weights):
    rs = r0 - s
    logits = clf.logits_from_r(rs)
    cos = torch.cosine_similarity(w0, link(rs), dim=-1)
    a, b, c = weights
    return -a * logits.gather(1, target[:, None])[:, 0] + b * logits.gather(1, origin[:, None])[:, 0] - c * cos


def _classify(gen, clf, w: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class probabilities [N, C] (CPU) of the renders of w, classified the way tune_units does.

    Images only (`synthesize`): the search needs no part maps; the kept frames get theirs
    from one `render` at the end.
    """
    img = gen.synthesize(w, batch_size)
    _, logits = clf.represent(img, batch_size=batch_size)
    return torch.softmax(logits, dim=1)


class _Clock:
    """Seconds per phase of a search step (`search(timings=...)`); a no-op when not asked for."""

    def __init__(self, into: Optional[dict], device: torch.device):
        self.into, self.sync = into, device.type == "cuda"
        self.t = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.into is None:
            return
        if self.sync:  # asynchronous kernels would be charged to the next phase otherwise
            torch.cuda.synchronize()
        t = time.perf_counter()
        self.into[phase] = self.into.get(phase, 0.0) + t - self.t
        self.t = t


def search(gen, clf, link, r0: np.ndarray, origin: np.ndarray, target: np.ndarray, init_seeds: np.ndarray,
           metric: Optional[np.ndarray], scale: np.ndarray, cfg: CounterfactualConfig,
           bar: Optional[tqdm] = None, timings: Optional[dict] = None) -> dict:
    """Optimise the shifts of many trajectories, `cfg.batch_size` of them stepping together.

    A pool: up to batch_size unfinished trajectories step together, and each place a
    trajectory frees (target won, or max_steps reached) is taken by the next waiting one
    at once, so every step renders a full batch until the queue runs dry. Which
    trajectories share a step never enters the maths of any one of them (its own start,
    its own rows of every product), so the results do not depend on the pool's size or
    order beyond float rounding. `timings`, if given, accumulates seconds per phase
    (gradient, render, classify, bookkeeping).

    Returns per-trajectory arrays (success, steps, shift, p_final, w_origin, w_final) and
    the path rows (trajectory positions, step, probs, w, cos), in trajectory-then-step order.
    """
    dev = gen.device
    n = len(r0)
    r0_t = torch.as_tensor(r0, dtype=torch.float32, device=dev)
    o_t = torch.as_tensor(origin, device=dev)
    t_t = torch.as_tensor(target, device=dev)
    M = None if metric is None else torch.as_tensor(metric, device=dev)
    s = initial_shifts(init_seeds, scale).to(dev)
    weights = tuple(float(x) for x in cfg.weights)
    clock = _Clock(timings, dev)
    with torch.no_grad():
        w0 = link(r0_t).to(dev)
    probs0 = _classify(gen, clf, w0, cfg.batch_size)
    rows = [(torch.arange(n), torch.zeros(n, dtype=torch.long), probs0, w0.cpu(), torch.ones(n))]
    steps = np.zeros(n, dtype=np.int64)
    success = np.zeros(n, dtype=bool)
    target_np = np.asarray(target, dtype=np.int64)
    active = np.zeros(0, dtype=np.int64)
    queued = 0
    clock.lap("bookkeeping")
    while queued < n or len(active):
        take = min(cfg.batch_size - len(active), n - queued)
        if take > 0:
            active = np.concatenate([active, np.arange(queued, queued + take)])
            queued += take
        ix = torch.as_tensor(active, device=dev)
        sa = s[ix].requires_grad_(True)
        r_a = r0_t[ix]
        # Only the loss (link + logits from r, both small) goes through autograd; the render never does.
        with torch.enable_grad():
            loss = _loss(clf, link, r_a, sa, w0[ix], o_t[ix], t_t[ix], weights)
            (grad,) = torch.autograd.grad(loss.sum(), sa)
        with torch.no_grad():
            if M is not None:
                grad = grad @ M
            s_new = sa.detach() - cfg.lr * grad
            s[ix] = s_new
            w = link(torch.relu(r_a - s_new))
            cos = torch.cosine_similarity(w0[ix], w, dim=-1)
        clock.lap("gradient")
        img = gen.synthesize(w, cfg.batch_size)
        clock.lap("render")
        _, logits = clf.represent(img, batch_size=cfg.batch_size)
        probs = torch.softmax(logits, dim=1)
        clock.lap("classify")
        steps[active] += 1
        if timings is not None:
            timings["pool_steps"] = timings.get("pool_steps", 0) + 1
        rows.append((torch.as_tensor(active), torch.as_tensor(steps[active]), probs, w.cpu(), cos.cpu()))
        won = probs.argmax(1).numpy() == target_np[active]
        success[active[won]] = True
        done = won | (steps[active] >= cfg.max_steps)
        if bar is not None and done.any():
            bar.update(int(done.sum()))
        active = active[~done]
        clock.lap("bookkeeping")
    traj = torch.cat([r[0] for r in rows]).numpy()
    step = torch.cat([r[1] for r in rows]).numpy()
    order = np.lexsort((step, traj))  # trajectory, then step
    path = {"trajectory": traj[order].astype(np.int64),
            "step": step[order].astype(np.int32),
            "probs": torch.cat([r[2] for r in rows]).numpy()[order].astype(np.float32),
            "w": torch.cat([r[3] for r in rows]).numpy()[order].astype(np.float32),
            "cos": torch.cat([r[4] for r in rows]).numpy()[order].astype(np.float32)}
    last = np.r_[np.flatnonzero(np.diff(path["trajectory"])), len(order) - 1] if n else np.zeros(0, dtype=np.int64)
    clock.lap("bookkeeping")
    return {"success": success, "steps": steps, "shift": s.cpu().numpy().astype(np.float32),
            "p_final": path["probs"][last], "w_origin": w0.cpu().numpy().astype(np.float32),
            "w_final": path["w"][last], "path": path}


def top_units(delta_r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit ids [B, n], their delta_r) by decreasing |delta_r|; ties to the lower unit id."""
    n = min(n, delta_r.shape[1])
    order = np.argsort(-np.abs(delta_r), axis=1, kind="stable")[:, :n]
    return order.astype(np.int64), np.take_along_axis(delta_r, order, 1)


# ----------------------------------------------------------------------------- the run


def run_counterfactuals(gen, clf, link, test_r: np.ndarray, train_r: Optional[np.ndarray], plan: dict,
                        cfg: CounterfactualConfig, path: str | os.PathLike, attrs: dict,
                        progress: bool = True) -> dict:
    """Run every planned trajectory (`search`), stream them to `path` in plan order; return summary metrics."""
    metric, scale = geometry_of(train_r, cfg.geometry, test_r.shape[1])
    B, F = len(plan["origin"]), cfg.n_frames
    res = gen.resolution
    bar = tqdm(total=B, desc="counterfactuals", unit="traj", disable=not progress)
    path_rows = 0
    with h5.create(path) as f:
        h5.set_attrs(f, params=to_dict(cfg), class_names=list(gen.class_names),
                     part_names=list(gen.part_names) if gen.part_names else [], n_units=int(test_r.shape[1]),
                     w_dim=int(gen.w_dim), **attrs)
        traj_out = h5.Appender(f.create_group("trajectories"))
        path_out = h5.Appender(f.create_group("path"), chunk_rows=4096)
        frame_out = h5.Appender(f.create_group("frames"), chunk_rows=1)
        # Blocks of trajectories are searched (a pool of batch_size inside) and then written
        # in chunks of batch_size; a block bounds the path rows held in memory.
        block = max(cfg.batch_size, SEARCH_BLOCK)
        for a in range(0, B, block):
            sl = slice(a, min(B, a + block))
            r0 = test_r[plan["pair_index"][sl]].astype(np.float32)
            out = search(gen, clf, link, r0, plan["origin"][sl], plan["target"][sl], plan["init_seed"][sl],
                         metric, scale, cfg, bar)
            delta = np.maximum(r0 - out["shift"], 0.0) - r0
            units, values = top_units(delta, cfg.n_top_units)
            p = out["path"]
            offset = np.r_[0, np.cumsum(out["steps"] + 1)[:-1]]  # each trajectory's first path row in this block
            traj_out.append(**{k: plan[k][sl] for k in ("origin", "target", "k", "pair_index", "sample_seed", "init_seed")},
                            success=out["success"].astype(np.uint8), steps=out["steps"],
                            path_start=(path_rows + offset).astype(np.int64),
                            r=r0, shift=out["shift"], delta_r=delta.astype(np.float32), top_units=units,
                            top_delta=values.astype(np.float32), p_final=out["p_final"], w_origin=out["w_origin"],
                            w_final=out["w_final"])
            path_out.append(trajectory=(p["trajectory"] + a).astype(np.int64), step=p["step"], probs=p["probs"],
                            w=p["w"], cos=p["cos"])
            path_rows += len(p["step"])
            # Frames: chosen once each trajectory's length is known, rendered batch_size trajectories at a time.
            for c in range(0, len(r0), cfg.batch_size):
                cs = slice(c, min(len(r0), c + cfg.batch_size))
                n = cs.stop - cs.start
                fsteps = np.stack([frame_steps(int(k), F) for k in out["steps"][cs]])
                rows_of = offset[cs, None] + np.maximum(fsteps, 0)  # padding repeats step 0, marked -1 in steps
                fw = p["w"][rows_of.ravel()]
                img, parts = gen.render(torch.as_tensor(fw, device=gen.device), cfg.batch_size)
                frames = {"steps": fsteps.astype(np.int32), "images": to_uint8(img).cpu().numpy().reshape(n, F, res, res, 3),
                          "w": fw.reshape(n, F, -1)}
                if parts is not None:
                    frames["parts"] = parts.cpu().numpy().reshape(n, F, res, res)
                frame_out.append(**frames)
        bar.close()
        return summarize(f)


# ----------------------------------------------------------------------------- summaries


def read_trajectories(f, fields: tuple[str, ...] = ("origin", "target", "k", "success", "steps", "p_final")) -> dict:
    g = f["trajectories"]
    return {k: g[k][:] for k in fields}


def summarize(f) -> dict:
    """Success rate and steps over all trajectories and per class pair, from an open counterfactuals file."""
    t = read_trajectories(f, ("origin", "target", "success", "steps", "p_final", "delta_r", "r"))
    names = h5.get_attr(f, "class_names")
    ok = t["success"].astype(bool)
    p_target = t["p_final"][np.arange(len(ok)), t["target"]]
    rel = np.linalg.norm(t["delta_r"], axis=1) / np.maximum(np.linalg.norm(t["r"], axis=1), 1e-12)
    cos = f["path/cos"][:][f["trajectories/path_start"][:] + t["steps"]] if len(ok) else np.zeros(0)

    def stats(sel):
        okk = ok[sel]
        st = t["steps"][sel][okk]
        return {"n": int(sel.sum()), "success_rate": float(okk.mean()) if sel.any() else None,
                "median_steps": float(np.median(st)) if len(st) else None}

    per_pair = {}
    for o, tt in np.unique(np.stack([t["origin"], t["target"]], 1), axis=0):
        per_pair[f"{names[o]}->{names[tt]}"] = stats((t["origin"] == o) & (t["target"] == tt))
    steps_ok = t["steps"][ok]
    return {
        "n_trajectories": int(len(ok)), "n_class_pairs": len(per_pair), "geometry": h5.get_attr(f, "params")["geometry"],
        "success_rate": float(ok.mean()) if len(ok) else None,
        "median_steps": float(np.median(steps_ok)) if len(steps_ok) else None,
        "steps_p90": float(np.percentile(steps_ok, 90)) if len(steps_ok) else None,
        "max_steps_taken": int(steps_ok.max()) if len(steps_ok) else None,
        "final_target_probability_median": float(np.median(p_target[ok])) if ok.any() else None,
        # How far the counterfactual r is from r (|relu(r - s) - r| / |r|) and how well w kept its direction.
        "relative_r_change_median": float(np.median(rel[ok])) if ok.any() else None,
        "w_cosine_median": float(np.median(cos[ok])) if ok.any() else None,
        "per_pair": per_pair,
    }


def strip_selection(f, n: int) -> np.ndarray:
    """Trajectories for the strip figure: the first success of each class pair, then further ones, up to n."""
    t = read_trajectories(f, ("origin", "target", "k", "success"))
    ok = np.flatnonzero(t["success"].astype(bool))
    if not len(ok):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((t["target"][ok], t["origin"][ok], t["k"][ok]))  # by k, then class pair
    ranked = ok[order]
    pair = t["origin"][ranked] * 10**6 + t["target"][ranked]
    _, first = np.unique(pair, return_index=True)
    rest = np.setdiff1d(np.arange(len(ranked)), first, assume_unique=True)
    picks = ranked[np.r_[np.sort(first), rest]][:n]
    return np.sort(picks)
