"""The motion estimate's shared pieces: its options, its result, and the geometry every
matching backend uses (affine fit, alignment, the residual's last step).

`linkstyle.measure.motion` (DIS, the tables) and `linkstyle.measure.motion_pump` (PUMP)
both build on this module and neither imports the other at load time; the conventions
(coordinates, the affine, the residual flow) are stated in `linkstyle.measure.motion`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.core.runtime import cpu_threads

BACKEND_NAMES = ("dis", "pump")  # linkstyle.measure.motion.BACKENDS loads each by name

DIS_PRESETS = ("ultrafast", "fast", "medium")
DEVICES = ("auto", "cpu", "cuda")

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
        check(self.backend in BACKEND_NAMES, "backend", f"must be one of {', '.join(BACKEND_NAMES)}, got {self.backend!r}")
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
