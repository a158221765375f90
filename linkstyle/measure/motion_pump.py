"""Optional motion backend "pump": naver/pump's matcher from the user's own checkout.

PUMP (https://github.com/naver/pump, CC BY-NC-SA 4.0: non-commercial only) is the
matcher of the paper's reference code. linkstyle never ships or installs it: set
`motion.backend: pump`, `motion.pump_code` to a checkout of that repository and, if its
weights are not at `<pump_code>/checkpoints/PUMP-stytrf.pt`, `motion.pump_checkpoint`.
This adapter runs PUMP's single-scale matcher (`test_singlescale.SingleScalePUMP` with a
`core.pixel_desc.PixelDesc` descriptor, PUMP's own defaults, its plain torch code paths
so no CUDA kernels need compiling) and returns the same `Motion` as the DIS backend:

1. match first -> last; fit the affine to the matches (`flow.fit_affine`, RANSAC);
2. warp last onto first (`flow.align_last`) and match again;
3. densify the second pass's matches into the residual flow: linear interpolation
   inside their convex hull, the mean of the 4 nearest matches outside it (the
   reference's scheme), valid only within `pump_max_gap` px of a match (not scaled:
   PUMP's cells are 4 px at any image size).
PUMP matches 4x4-pixel cells of the first image to whole pixels of the second, so at
32 px it finds at most 64 coarse matches: it is meant for real generators at 256 px.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import numpy as np
import torch

from linkstyle.core.errors import UserError
from linkstyle.measure.flow import Motion, MotionConfig, align_last, finish, fit_affine, inside, pixel_grid

PUMP_URL = "https://github.com/naver/pump"
DEFAULT_CHECKPOINT = "checkpoints/PUMP-stytrf.pt"
_NEAREST = 4  # matches averaged outside the hull


def pump_paths(cfg: MotionConfig) -> tuple[Path, Path]:
    """The checkout and checkpoint `cfg` names, checked; one-line errors say where to get them."""
    get = f"git clone {PUMP_URL} (CC BY-NC-SA 4.0, non-commercial; linkstyle does not ship it)"
    if not cfg.pump_code:
        raise UserError(f"motion.pump_code: not set, and backend 'pump' needs a naver/pump checkout; {get} "
                        "and set pump_code to its folder, or use backend: dis")
    code = Path(cfg.pump_code).expanduser()
    if not (code / "test_singlescale.py").is_file() or not (code / "core" / "pixel_desc.py").is_file():
        raise UserError(f"motion.pump_code: {code} is not a naver/pump checkout (no test_singlescale.py and "
                        f"core/pixel_desc.py there); {get} and point pump_code at it")
    ckpt = Path(cfg.pump_checkpoint).expanduser() if cfg.pump_checkpoint else code / DEFAULT_CHECKPOINT
    if not ckpt.is_file():
        raise UserError(f"motion.pump_checkpoint: {ckpt} not found; PUMP's weights (checkpoints/PUMP-stytrf.pt or "
                        f"PUMP.pt) come with its checkout from {PUMP_URL}, or set pump_checkpoint to the file")
    return code.resolve(), ckpt.resolve()


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("motion.pump_device: 'cuda' requested but CUDA is not available here; set it to auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=2)
def _matcher(code: str, ckpt: str, device: str):
    # PUMP imports its packages by top-level names (core, tools): its folder goes on sys.path.
    loaded = sys.modules.get("core")
    if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(code):
        raise UserError(f"motion.pump_code: a different module 'core' is already imported "
                        f"({getattr(loaded, '__file__', None)}); use one PUMP checkout per process")
    if code not in sys.path:
        sys.path.insert(0, code)
    try:
        single = importlib.import_module("test_singlescale")
        pixel_desc = importlib.import_module("core.pixel_desc")
    except ImportError as e:
        raise UserError(f"motion.pump_code: importing PUMP from {code} failed ({e}); install the requirements "
                        f"its README lists ({PUMP_URL})") from None
    try:
        desc = pixel_desc.PixelDesc(path=ckpt)
    except Exception as e:  # torch raises many types for foreign or truncated files
        raise UserError(f"motion.pump_checkpoint: {ckpt} is not a PUMP descriptor checkpoint "
                        f"({type(e).__name__}: {str(e)[:120]}); use checkpoints/PUMP-stytrf.pt of {PUMP_URL}") from None
    matcher = single.SingleScalePUMP(levels=99, min_shape=5, border_inv=0.9, nlpow=1.5, pixel_desc=desc,
                                     dtype=torch.float32, verbose=False)
    return matcher.to(device).eval()


def _match(matcher, a: np.ndarray, b: np.ndarray, device: torch.device) -> np.ndarray:
    """PUMP's reciprocal matches [M, 4] (x1, y1, x2, y2) of image a in image b (pixel centres)."""
    ta, tb = (torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).to(device) for x in (a, b))
    with torch.no_grad():
        corres = matcher(ta, tb)
    corres = corres.cpu().numpy() if isinstance(corres, torch.Tensor) else np.asarray(corres)
    return corres[:, :4].astype(np.float64) if len(corres) else np.zeros((0, 4))


def densify(points: np.ndarray, values: np.ndarray, h: int, w: int, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense [H, W, 2] field from sparse `values` [M, 2] at `points` [M, 2], and where it is trusted.

    Linear interpolation inside the matches' convex hull, the mean of the nearest matches
    outside; trusted within `max_gap` px of a match.
    """
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import QhullError, cKDTree

    grid = pixel_grid(h, w).reshape(-1, 2).astype(np.float64)
    if len(points) == 0:
        return np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool)
    dist, near = cKDTree(points).query(grid, k=min(_NEAREST, len(points)))
    near = near.reshape(len(grid), -1)
    field = values[near].mean(1)
    if len(points) >= 3:
        try:
            lin = LinearNDInterpolator(points, values)(grid)
            inner = np.isfinite(lin).all(1)
            field[inner] = lin[inner]
        except QhullError:  # matches on one line: no hull, the nearest-mean field stands
            pass
    gap = dist.reshape(len(grid), -1)[:, 0]
    return field.reshape(h, w, 2).astype(np.float32), (gap <= max_gap).reshape(h, w)


def estimate_pump(first: np.ndarray, last: np.ndarray, cfg: MotionConfig) -> Motion:
    """`motion.estimate_motion` for backend 'pump' (pairs one by one: PUMP matches one pair at a time)."""
    code, ckpt = pump_paths(cfg)
    device = _device(cfg.pump_device)
    matcher = _matcher(str(code), str(ckpt), str(device))
    n, h, w = first.shape[:3]
    size = max(h, w)
    affine, inl = np.zeros((n, 2, 3)), np.zeros(n)
    residual, checked = np.zeros((n, h, w, 2), np.float32), np.zeros((n, h, w), bool)
    for i in range(n):
        m = _match(matcher, first[i], last[i], device)
        keep = inside(m[:, 2:4], h, w)
        affine[i], inl[i] = fit_affine(m[keep, :2], m[keep, 2:4], cfg, size)
        r = _match(matcher, first[i], align_last(last[i], affine[i]), device)
        residual[i], checked[i] = densify(r[:, :2], r[:, 2:4] - r[:, :2], h, w, cfg.pump_max_gap)
    return finish(affine, residual, checked, inl)
