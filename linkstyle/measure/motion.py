"""Unsupervised motion between the two renders of a perturbation pair (docs/method.md section 7).

For each pair (first, last), uint8 [N, H, W, 3], a matching backend finds where every
pixel of `first` went in `last`, a global affine transform A is fitted robustly to those
correspondences, `last` is warped back onto `first` by A, and the backend matches again
on the aligned pair. What that second pass finds is the *residual* flow: the local
motion left once the global shift, zoom, rotation and shear are removed. (The reference
drew its field from the first, unaligned matches, so its arrows still held the global
motion the alignment was meant to remove.)

Conventions. Pixel coordinates are pixel centres, x = column, y = row (down). `affine`
[N, 2, 3] maps first-image coordinates to last-image ones: p -> L p + t. `flow`
[N, H, W, 2] (dx, dy) float32 lives on the first image's pixel grid and is the residual
in last-image pixels: pixel p of `first` lies at A p + flow(p) in `last`, so
`Motion.total()` = A p - p + flow(p) is the whole displacement. `valid` marks pixels
whose correspondence passed the backend's check and whose A p lies inside the image.
The affine parameters: `translation` = A c - c for the image centre c (px; x right,
y down); L = R(rotation) [[sx, k], [0, sy]] (QR), `scale` = sqrt(sx sy), `shear` = k / sy
(x' = x + shear y in the rotated frame), `rotation_deg` positive from +x towards +y.

Backends (`BACKENDS`, chosen by `MotionConfig.backend`):
- "dis" (default): OpenCV's DIS optical flow, forward and backward; pixels whose forward
  and backward flows disagree by more than `fb_threshold` are invalid and left out of the
  affine fit (cv2.estimateAffine2D, RANSAC). Three flows per pair, all on grey images.
- "pump": naver/pump's matcher from a user's own checkout (`motion_pump`; never shipped).
Thresholds are given in pixels at `reference_size` (256 px, the paper's resolution) and
scaled to the images at hand. Pairs run on a thread pool (cv2 releases the GIL); every
pair is computed on its own, so results do not depend on the thread count or batch.

`motion_table` turns a Motion and part masks of the first render into the tidy change
table of `linkstyle.measure.quantify` (source, unit, seed, class, part, metric, change).
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from linkstyle.core.errors import UserError
from linkstyle.measure.flow import (  # noqa: F401 - re-exported: the motion API callers import from here
    BACKEND_NAMES, DEVICES, DIS_PRESETS, Motion, MotionConfig, align_last, check_pairs, decompose_affine, finish,
    fit_affine, inside, pixel_grid, run_pairs)


# Metrics of `motion_table`: whole-image ones (part "image") and per-part ones.
IMAGE_METRICS = ("translation_x", "translation_y", "scale", "rotation", "shear",
                 "motion", "motion_p90", "motion_max", "valid_fraction", "inlier_fraction")
PART_METRICS = ("motion", "motion_x", "motion_y", "motion_direction", "shift_x", "shift_y", "valid_fraction")
IMAGE_PART = "image"
_MIN_DIRECTION_PX = 1e-3  # a mean residual shorter than this has no direction (NaN)


def _load_dis():
    return _estimate_dis


def _load_pump():
    from linkstyle.measure.motion_pump import estimate_pump  # on use: it loads torch

    return estimate_pump


# name -> loader of the backend's `estimate(first, last, cfg) -> Motion`; loaded on use,
# so the PUMP adapter (and torch work it does) costs nothing unless chosen.
BACKENDS: dict[str, Callable[[], Callable]] = {"dis": _load_dis, "pump": _load_pump}


# ------------------------------------------------------------------------------ DIS


def _dis(cfg: MotionConfig):
    import cv2

    preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
              "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[cfg.dis_preset]
    dis = cv2.DISOpticalFlow_create(preset)
    dis.setPatchSize(cfg.patch_size)
    dis.setPatchStride(cfg.patch_stride)
    dis.setFinestScale(cfg.finest_scale)
    return dis


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _dis_pair(dis, first: np.ndarray, last: np.ndarray, cfg: MotionConfig, grid: np.ndarray, step: int):
    """(affine [2, 3], inlier share, residual flow in first-image px, forward-backward check) of one pair."""
    import cv2

    h, w = first.shape[:2]
    g0, g1 = _grey(first), _grey(last)
    fwd = dis.calc(g0, g1, None)
    bwd = dis.calc(g1, g0, None)
    target = grid + fwd
    back = cv2.remap(bwd, target[..., 0], target[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    checked = np.linalg.norm(fwd + back, axis=-1) < cfg.scaled(cfg.fb_threshold, max(h, w))
    # At 256 px a 4x thinner grid of points still over-determines the fit 4,000-fold.
    use = (checked & inside(target, h, w))[::step, ::step]
    affine, inl = fit_affine(grid[::step, ::step][use], target[::step, ::step][use], cfg, max(h, w))
    residual = dis.calc(g0, _grey(align_last(last, affine)), None)
    return affine, inl, residual, checked


def _estimate_dis(first: np.ndarray, last: np.ndarray, cfg: MotionConfig) -> Motion:
    import cv2

    n, h, w = first.shape[:3]
    grid = pixel_grid(h, w)
    step = max(1, round(max(h, w) / 64))
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "dis"):  # a DIS object is not thread-safe: one per worker
            local.dis = _dis(cfg)
        return _dis_pair(local.dis, first[i], last[i], cfg, grid, step)

    # cv2's own threads would only contend with the pool's (DIS is no faster with them);
    # its results are the same either way.
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        out = run_pairs(one, n, cfg.threads())
    finally:
        cv2.setNumThreads(before)
    if not out:
        return _empty(h, w)
    affine, inl, residual, checked = (np.stack(x) for x in zip(*out))
    return finish(affine, residual, checked, inl)


def _empty(h: int, w: int) -> Motion:
    return Motion.from_fields(np.zeros((0, 2, 3)), np.zeros((0, h, w, 2), np.float32), np.zeros((0, h, w), bool),
                              np.zeros(0))


def estimate_motion(first: np.ndarray, last: np.ndarray, cfg: MotionConfig) -> Motion:
    """Affine + residual motion of every pair (first[i], last[i]), uint8 [N, H, W, 3], by `cfg.backend`."""
    first, last = check_pairs(first, last)
    if not len(first):
        return _empty(*first.shape[1:3])
    return BACKENDS[cfg.backend]()(first, last, cfg)


# ---------------------------------------------------------------------------- tables


def part_sums(masks: np.ndarray, valid: np.ndarray, n_parts: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair and part: (pixel count, valid pixel count, sums of `values` [N, H, W, K] over valid pixels).

    Shapes [N, P], [N, P], [N, P, K]; one bincount over the whole batch.
    """
    n = len(masks)
    idx = (np.arange(n)[:, None, None] * n_parts + masks.astype(np.int64)).ravel()
    size = n * n_parts
    count = np.bincount(idx, minlength=size).reshape(n, n_parts)
    v = valid.ravel()
    vidx = idx[v]
    nvalid = np.bincount(vidx, minlength=size).reshape(n, n_parts)
    flat = values.reshape(-1, values.shape[-1])[v]
    sums = np.stack([np.bincount(vidx, weights=flat[:, k], minlength=size) for k in range(flat.shape[1])], -1)
    return count, nvalid, sums.reshape(n, n_parts, -1)


def motion_values(motion: Motion, masks: np.ndarray, n_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The numbers of `motion_table` as arrays: image [N, len(IMAGE_METRICS)], parts [N, P, len(PART_METRICS)]."""
    n = len(motion)
    flow, valid = motion.flow.astype(np.float64), motion.valid
    mag = np.linalg.norm(flow, axis=-1)
    values = np.concatenate([mag[..., None], flow, motion.total().astype(np.float64)], -1)
    count, nvalid, sums = part_sums(masks, valid, n_parts, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = sums / nvalid[..., None]  # NaN where no valid pixel
        vfrac = np.where(count > 0, nvalid / count, np.nan)
    direction = np.degrees(np.arctan2(mean[..., 2], mean[..., 1]))
    direction = np.where(np.hypot(mean[..., 1], mean[..., 2]) >= _MIN_DIRECTION_PX, direction, np.nan)
    direction = np.where(direction >= 180.0, direction - 360.0, direction)
    per_part = np.stack([mean[..., 0], mean[..., 1], mean[..., 2], direction, mean[..., 3], mean[..., 4], vfrac], -1)

    any_valid = valid.reshape(n, -1).any(1)
    # All-NaN rows make nanpercentile warn: pairs without a valid pixel get zeros, then NaN.
    masked = np.where(valid.reshape(n, -1) | ~any_valid[:, None], mag.reshape(n, -1), np.nan)
    image = np.stack([motion.translation[:, 0], motion.translation[:, 1], motion.scale - 1.0, motion.rotation_deg,
                      motion.shear, np.nanmean(masked, 1), np.nanpercentile(masked, 90, axis=1), np.nanmax(masked, 1),
                      valid.reshape(n, -1).mean(1), motion.inlier_fraction], -1) if n else np.zeros((0, len(IMAGE_METRICS)))
    image[~any_valid, 5:8] = np.nan
    return image, per_part


def motion_table(motion: Motion, masks: np.ndarray, part_names: Sequence[str], keys: pd.DataFrame,
                 source: str) -> pd.DataFrame:
    """The motion of every pair as tidy changes (source, unit, seed, class, part, metric, change).

    `masks` [N, H, W]: part ids of the FIRST image of each pair; `keys`: unit, seed and class
    of each pair, in order. Whole-image rows have part "image": the affine parameters
    (translation_x/_y px, scale as scale - 1, rotation in degrees, shear), residual
    magnitude over valid pixels (mean, 90th percentile, max; px), the valid share and
    RANSAC's inlier share. Per part, over its valid pixels: `motion` = mean residual
    magnitude (px), `motion_x`/`_y` = mean residual vector (px) and `motion_direction` its
    angle (degrees in [-180, 180), from +x towards +y, NaN if shorter than 0.001 px),
    `shift_x`/`_y` = mean whole displacement (affine + residual; px), `valid_fraction`.
    A part without valid pixels gets NaN (valid_fraction: 0, NaN if the part is absent).
    """
    names = tuple(str(p) for p in part_names)
    n, (h, w), n_parts = len(motion), motion.flow.shape[1:3], len(names)
    masks = np.asarray(masks)
    if masks.shape != (n, h, w) or masks.dtype.kind not in "iu":
        raise UserError(f"motion_table: masks must be integer [N, H, W] = {[n, h, w]}, got {masks.dtype} {list(masks.shape)}")
    if n and (masks.min() < 0 or masks.max() >= n_parts):
        raise UserError(f"motion_table: masks hold label ids outside 0..{n_parts - 1} for the {n_parts} part_names")
    missing = [c for c in ("unit", "seed", "class") if c not in keys.columns]
    if missing or len(keys) != n:
        raise UserError(f"motion_table: keys need columns unit, seed, class and one row per pair ({n}), "
                        f"got columns {list(keys.columns)} and {len(keys)} rows")
    image, per_part = motion_values(motion, masks, n_parts)
    return tidy(image, per_part, names, keys, source)


def tidy(image: np.ndarray, per_part: np.ndarray, part_names: Sequence[str], keys: pd.DataFrame,
         source: str) -> pd.DataFrame:
    """`motion_values` arrays -> the long table, rows by pair, then image and parts, then metric."""
    n = len(image)
    values = np.concatenate([image, per_part.reshape(n, -1)], 1)
    parts = [IMAGE_PART] * len(IMAGE_METRICS) + [str(p) for p in part_names for _ in PART_METRICS]
    metrics = list(IMAGE_METRICS) + list(PART_METRICS) * len(part_names)
    k = len(parts)
    return pd.DataFrame({
        "source": np.full(n * k, source, dtype=object),
        "unit": np.repeat(keys["unit"].to_numpy(np.int64), k),
        "seed": np.repeat(keys["seed"].to_numpy(np.int64), k),
        "class": np.repeat(keys["class"].to_numpy(np.int64), k),
        "part": np.tile(np.asarray(parts, dtype=object), n),
        "metric": np.tile(np.asarray(metrics, dtype=object), n),
        "change": values.ravel().astype(np.float64),
    })
