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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.core.runtime import cpu_threads

DIS_PRESETS = ("ultrafast", "fast", "medium")
DEVICES = ("auto", "cpu", "cuda")

# Metrics of `motion_table`: whole-image ones (part "image") and per-part ones.
IMAGE_METRICS = ("translation_x", "translation_y", "scale", "rotation", "shear",
                 "motion", "motion_p90", "motion_max", "valid_fraction", "inlier_fraction")
PART_METRICS = ("motion", "motion_x", "motion_y", "motion_direction", "shift_x", "shift_y", "valid_fraction")
IMAGE_PART = "image"
_MIN_DIRECTION_PX = 1e-3  # a mean residual shorter than this has no direction (NaN)


def _load_dis():
    return _estimate_dis


def _load_pump():
    from linkstyle.measure.motion_pump import estimate_pump  # here: motion_pump imports this module

    return estimate_pump


# name -> loader of the backend's `estimate(first, last, cfg) -> Motion`; loaded on use,
# so the PUMP adapter (and torch work it does) costs nothing unless chosen.
BACKENDS: dict[str, Callable[[], Callable]] = {"dis": _load_dis, "pump": _load_pump}


@dataclass(frozen=True)
class MotionConfig:
    """Options of the motion estimate (params: `quantify_motion.motion`)."""

    backend: str = "dis"               # dis (built in) or pump (a naver/pump checkout of your own)
    dis_preset: str = "medium"         # DIS base preset: ultrafast, fast, medium
    patch_size: int = 4                # DIS patch size (px)
    patch_stride: int = 1              # DIS patch stride (px)
    finest_scale: int = 0              # DIS finest pyramid level (0 = full resolution)
    fb_threshold: float = 4.0          # forward-backward disagreement (px at reference_size) that marks a pixel invalid
    ransac_threshold: float = 12.0     # RANSAC inlier distance (px at reference_size): 1.5 px at 32 px (reference: 3)
    ransac_iters: int = 2000           # OpenCV's defaults
    ransac_confidence: float = 0.99
    refine_iters: int = 10
    reference_size: int = 256          # image size the two thresholds above are given for
    n_threads: int = 0                 # pairs in parallel; 0 = every core this process may use (LINKSTYLE_THREADS)
    pump_code: Optional[str] = None    # pump: folder of a naver/pump checkout
    pump_checkpoint: Optional[str] = None  # pump: its descriptor weights; null = <pump_code>/checkpoints/PUMP-stytrf.pt
    pump_device: str = "auto"          # pump: auto, cpu or cuda
    pump_max_gap: float = 8.0          # pump: residual flow is valid only this near a match (px; cells are 4 px)

    def __post_init__(self):
        check(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check(self.dis_preset in DIS_PRESETS, "dis_preset", f"must be one of {', '.join(DIS_PRESETS)}, got {self.dis_preset!r}")
        check(self.patch_size >= 2, "patch_size", f"must be >= 2, got {self.patch_size}")
        check(1 <= self.patch_stride <= self.patch_size, "patch_stride", f"must be in [1, patch_size], got {self.patch_stride}")
        check(self.finest_scale >= 0, "finest_scale", f"must be >= 0, got {self.finest_scale}")
        check(self.fb_threshold > 0, "fb_threshold", f"must be > 0, got {self.fb_threshold}")
        check(self.ransac_threshold > 0, "ransac_threshold", f"must be > 0, got {self.ransac_threshold}")
        check(self.ransac_iters >= 1, "ransac_iters", f"must be >= 1, got {self.ransac_iters}")
        check(0 < self.ransac_confidence < 1, "ransac_confidence", f"must be in (0, 1), got {self.ransac_confidence}")
        check(self.refine_iters >= 0, "refine_iters", f"must be >= 0, got {self.refine_iters}")
        check(self.reference_size >= 1, "reference_size", f"must be >= 1, got {self.reference_size}")
        check(self.n_threads >= 0, "n_threads", f"must be >= 0 (0 = every core), got {self.n_threads}")
        check(self.pump_device in DEVICES, "pump_device", f"must be one of {', '.join(DEVICES)}, got {self.pump_device!r}")
        check(self.pump_max_gap > 0, "pump_max_gap", f"must be > 0, got {self.pump_max_gap}")

    def scaled(self, px: float, size: int) -> float:
        """A length given at `reference_size` in pixels of a `size`-pixel image."""
        return float(px) * size / self.reference_size

    def threads(self) -> int:
        return self.n_threads or cpu_threads()


@dataclass
class Motion:
    """Global affine and residual motion of N pairs (see the module docstring for conventions)."""

    affine: np.ndarray           # [N, 2, 3] float64, first -> last
    translation: np.ndarray      # [N, 2] float64, of the image centre (px)
    scale: np.ndarray            # [N] float64, 1 = no zoom
    rotation_deg: np.ndarray     # [N] float64
    shear: np.ndarray            # [N] float64
    flow: np.ndarray             # [N, H, W, 2] float32, residual (px of the last image)
    valid: np.ndarray            # [N, H, W] bool
    inlier_fraction: np.ndarray = field(default=None)  # [N] share of valid correspondences that RANSAC kept

    def __post_init__(self):
        if self.inlier_fraction is None:
            self.inlier_fraction = np.full(len(self.affine), np.nan)

    @classmethod
    def from_fields(cls, affine: np.ndarray, flow: np.ndarray, valid: np.ndarray,
                    inlier_fraction: Optional[np.ndarray] = None) -> "Motion":
        """A Motion with the affine parameters derived from `affine`."""
        affine = np.asarray(affine, dtype=np.float64).reshape(-1, 2, 3)
        h, w = flow.shape[1:3]
        t, s, r, k = decompose_affine(affine, (h, w))
        return cls(affine, t, s, r, k, np.asarray(flow, dtype=np.float32), np.asarray(valid, dtype=bool),
                   None if inlier_fraction is None else np.asarray(inlier_fraction, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.affine)

    def take(self, index) -> "Motion":
        """The pairs at `index` (an array of positions or a boolean mask)."""
        return Motion(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def affine_displacement(self) -> np.ndarray:
        """[N, H, W, 2] float32: A p - p, the global part of the motion."""
        h, w = self.flow.shape[1:3]
        p = pixel_grid(h, w).astype(np.float64)
        lin = self.affine[:, :, :2] - np.eye(2)
        return (np.einsum("nij,hwj->nhwi", lin, p) + self.affine[:, None, None, :, 2]).astype(np.float32)

    def total(self) -> np.ndarray:
        """[N, H, W, 2] float32: where each pixel of `first` went, minus where it was."""
        return self.affine_displacement() + self.flow

    @staticmethod
    def concat(parts: Sequence["Motion"]) -> "Motion":
        return Motion(*(np.concatenate([getattr(m, f) for m in parts]) for f in Motion.__dataclass_fields__))


# ------------------------------------------------------------------------ shared pieces


def pixel_grid(h: int, w: int) -> np.ndarray:
    """[H, W, 2] float32 (x, y) of every pixel centre."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx, yy], -1)


def decompose_affine(affine: np.ndarray, size: tuple[int, int]):
    """(translation [N, 2], scale [N], rotation_deg [N], shear [N]) of affines [N, 2, 3] on an (H, W) image."""
    a = np.asarray(affine, dtype=np.float64)
    h, w = size
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    lin = a[:, :, :2]
    translation = lin @ c + a[:, :, 2] - c
    sx = np.hypot(lin[:, 0, 0], lin[:, 1, 0])
    det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        sy = det / sx
        k = (lin[:, 0, 0] * lin[:, 0, 1] + lin[:, 1, 0] * lin[:, 1, 1]) / sx
        shear = k / sy
    rotation = np.degrees(np.arctan2(lin[:, 1, 0], lin[:, 0, 0]))
    return translation, np.sqrt(np.abs(det)), rotation, shear


def check_pairs(first, last) -> tuple[np.ndarray, np.ndarray]:
    first, last = np.asarray(first), np.asarray(last)
    for name, x in (("first", first), ("last", last)):
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise UserError(f"motion: {name} must be uint8 images [N, H, W, 3], got {x.dtype} {list(x.shape)}")
    if first.shape != last.shape:
        raise UserError(f"motion: first and last differ in shape, {list(first.shape)} vs {list(last.shape)}; "
                        "pass the two renders of each pair")
    if min(first.shape[1:3]) < 8:
        raise UserError(f"motion: images of {first.shape[1]}x{first.shape[2]} px are too small; at least 8x8 px")
    return first, last


def fit_affine(src: np.ndarray, dst: np.ndarray, cfg: MotionConfig, size: int) -> tuple[np.ndarray, float]:
    """Robust affine [2, 3] mapping points src -> dst [M, 2], and the share of RANSAC inliers.

    Fewer than 3 correspondences, or none consistent, give the identity (and 0).
    """
    import cv2

    if len(src) < 3:
        return np.eye(2, 3), 0.0
    a, inliers = cv2.estimateAffine2D(src.reshape(-1, 1, 2).astype(np.float32), dst.reshape(-1, 1, 2).astype(np.float32),
                                      method=cv2.RANSAC, ransacReprojThreshold=cfg.scaled(cfg.ransac_threshold, size),
                                      maxIters=cfg.ransac_iters, confidence=cfg.ransac_confidence,
                                      refineIters=cfg.refine_iters)
    if a is None or not np.isfinite(a).all():
        return np.eye(2, 3), 0.0
    return a.astype(np.float64), float(inliers.mean())


def align_last(last: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """`last` resampled on the first image's grid: aligned(p) = last(A p) (replicated border)."""
    import cv2

    h, w = last.shape[:2]
    return cv2.warpAffine(last, affine, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def inside(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """Which points [..., 2] lie within the pixel centres' span."""
    x, y = points[..., 0], points[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def finish(affine: np.ndarray, residual: np.ndarray, checked: np.ndarray, inlier_fraction: np.ndarray) -> Motion:
    """Batched last step of every backend: residual [N, H, W, 2] in first-image pixels -> Motion.

    The residual is turned into last-image pixels by A's linear part, and pixels whose A p
    leaves the image (their aligned colour was the replicated border) become invalid.
    """
    h, w = residual.shape[1:3]
    lin = affine[:, :, :2]
    flow = np.einsum("nij,nhwj->nhwi", lin, residual.astype(np.float64)).astype(np.float32)
    ap = np.einsum("nij,hwj->nhwi", lin, pixel_grid(h, w).astype(np.float64)) + affine[:, None, None, :, 2]
    return Motion.from_fields(affine, flow, checked & inside(ap, h, w), inlier_fraction)


def run_pairs(fn: Callable[[int], tuple], n: int, n_threads: int) -> list:
    """[fn(0), ..., fn(n - 1)] on a thread pool, in order."""
    if n_threads <= 1 or n <= 1:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(n_threads, n)) as pool:
        return list(pool.map(fn, range(n)))


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
