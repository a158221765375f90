"""Per-part image measurements and their changes across perturbation steps (docs/method.md section 5).

Inputs are renders `images` (uint8 [N, H, W, 3]) and their part maps `masks` (integer
[N, H, W], label ids 0..len(part_names)-1). Three table-producing functions work on
arrays, chunk by chunk, optionally in parallel; results never depend on `chunk_size`
or `n_jobs`, because every number is a function of one image alone and rows come back
in image order:

- `measure_parts`: per image and part, tidy rows (image, part, metric, value) for
  `PART_METRICS`: area (pixels), luminance (mean of (0.299 R + 0.587 G + 0.114 B) / 3,
  0..85), and the mean/std/min/max of the local entropy (bits) of the grey image inside
  the part. A part absent from an image has area 0 and NaN for the rest.
- `find_regions`: one row per connected region of each part's mask (regions under
  `min_region_px` pixels dropped), with the moment-equivalent ellipse (see below).
- `match_regions`: pairs the regions of image i in `masks_a` with those of image i in
  `masks_b`, part by part, by maximum total IoU (Hungarian); only overlapping regions pair.

`part_changes` turns the step-0 and last-step tables into tidy changes; `pair_changes`
runs the whole chain on arrays.

Ellipse conventions. Connected regions come from skimage.measure.label; their ellipses
are computed from the region moments with bincount over the whole chunk, because
regionprops spends ~150 us of Python per region (30x slower here). The values equal
regionprops' area, centroid, eccentricity, axis_major_length and axis_minor_length
(checked by the tests), and angle = (90 - degrees(orientation)) mod 180. Coordinates
are pixel centres, x = column, y = row (pointing down). The ellipse has the
region's second central moments; `width` and `height` are its full major and minor axis
lengths (4 sqrt(eigenvalue) of the coordinate covariance; 2a and 2b for a filled ellipse
of semi-axes a >= b), so they do not change when the region only rotates.
`eccentricity` = sqrt(1 - (minor/major)^2), 0 for a disc. `angle` is the direction of
the major axis in degrees in [0, 180), measured from +x towards +y: in image
coordinates with y down, i.e. clockwise as displayed, the convention of cv2.ellipse
(an ellipse drawn with angle=30 measures 30). It is meaningless for near-discs, and 0
for isotropic regions (eccentricity 0: discs, squares), which have no major axis.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from linkstyle.core.errors import UserError

PART_METRICS = ("area", "luminance", "entropy_mean", "entropy_std", "entropy_min", "entropy_max")
SHAPE_METRICS = ("eccentricity", "angle", "cx", "cy", "width", "height")
REGION_COLUMNS = ("region", "area") + ("cx", "cy", "eccentricity", "angle", "width", "height")
MATCH_COLUMNS = ("region_a", "region_b", "iou")
CHANGE_METRICS = PART_METRICS + ("n_regions",) + SHAPE_METRICS
LUMA = np.array([0.299, 0.587, 0.114])
LUMINANCE_MAX = 255.0 / 3.0  # luminance is divided by 3, so white is 85
_PIXELS_PER_CHUNK = 1 << 19  # default chunk: 512 images of 32x32, 8 of 256x256; bounds per-chunk float arrays


# ----------------------------------------------------------------------------- validation


def _check_part_names(part_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(part_names) if not isinstance(part_names, str) else ()
    if not names or not all(isinstance(p, str) for p in names) or len(set(names)) != len(names):
        raise UserError(f"part_names must be a non-empty sequence of distinct strings, got {part_names!r}")
    return names


def _check_masks(masks, n_parts: int, name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UserError(f"{name} must have shape [N, H, W] (add a batch axis for one image), got shape {masks.shape}")
    if masks.dtype.kind not in "iu":
        raise UserError(f"{name} must be an integer array of part label ids, got dtype {masks.dtype}")
    if masks.size:
        lo, hi = int(masks.min()), int(masks.max())
        if lo < 0 or hi >= n_parts:
            bad = lo if lo < 0 else hi
            raise UserError(f"{name} holds label id {bad}, outside 0..{n_parts - 1} for the {n_parts} part_names; "
                            "pass the part_names the segmenter was trained with")
    return masks


def _check_images(images, masks: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"{name} must be uint8 RGB, got dtype {images.dtype}; "
                        "convert with np.clip(x, 0, 255).astype(np.uint8)")
    if images.shape != masks.shape + (3,):
        raise UserError(f"{name} must have shape [N, H, W, 3] matching masks {masks.shape}, got {images.shape}")
    return images


def _check_keys(keys: Optional[pd.DataFrame], n: int, reserved: Sequence[str]) -> Optional[pd.DataFrame]:
    if keys is None:
        return None
    if not isinstance(keys, pd.DataFrame) or len(keys) != n:
        raise UserError(f"keys must be a DataFrame with one row per image ({n}), got "
                        f"{type(keys).__name__} of length {len(keys) if hasattr(keys, '__len__') else '?'}")
    clash = sorted(set(keys.columns) & set(reserved))
    if clash:
        raise UserError(f"keys column {clash[0]!r} clashes with an output column; rename it")
    return keys.reset_index(drop=True)


def _check_common(min_region_px: int, connectivity: int) -> None:
    if not isinstance(min_region_px, (int, np.integer)) or min_region_px < 1:
        raise UserError(f"min_region_px must be an integer >= 1, got {min_region_px!r}")
    if connectivity not in (4, 8):
        raise UserError(f"connectivity must be 4 or 8, got {connectivity!r}")


# ----------------------------------------------------------------------------- chunking


def _map_chunks(fn: Callable, arrays: Sequence[np.ndarray], kwargs: dict, chunk_size: Optional[int],
                n_jobs: int, progress: bool, desc: str) -> tuple[list, list]:
    """fn(*chunk_arrays, **kwargs) over consecutive image chunks: (chunk start indices, results in order)."""
    n = len(arrays[0])
    if chunk_size is None:
        chunk_size = max(1, _PIXELS_PER_CHUNK // max(1, int(np.prod(arrays[0].shape[1:3]))))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise UserError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise UserError(f"n_jobs must be a non-zero integer (-1 = all cores), got {n_jobs!r}")
    starts = list(range(0, n, chunk_size))
    slices = [slice(i, min(i + chunk_size, n)) for i in starts]
    if n_jobs == 1 or len(slices) <= 1:
        results = (fn(*(a[s] for a in arrays), **kwargs) for s in slices)
    else:
        from joblib import Parallel, delayed

        # Generator output keeps submission order, so row order does not depend on workers.
        results = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator")(
            delayed(fn)(*(a[s] for a in arrays), **kwargs) for s in slices)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(slices), desc=desc, unit="chunk")
    return starts, list(results)


# ----------------------------------------------------------------------------- part measures


def _dense_levels(grey: np.ndarray) -> np.ndarray:
    """The grey levels present renumbered 0..k-1, as uint16.

    Local entropy depends only on which pixels share a level, so this leaves it exactly
    unchanged; but rank filters loop over all 256 bins per pixel for uint8 and only
    over max + 1 bins for uint16, which makes renders with ~100 levels ~25% faster.
    """
    present = np.zeros(256, dtype=bool)
    present[grey.ravel()] = True
    return (np.cumsum(present) - 1).astype(np.uint16)[grey]


def _entropy_chunk(images: np.ndarray, entropy_radius: int) -> np.ndarray:
    import cv2
    from skimage.filters import rank
    from skimage.morphology import disk

    n, h, w = images.shape[:3]
    if not n:
        return np.zeros((0, h, w))
    # cv2 uses the same 0.299/0.587/0.114 weights as luminance, rounded to uint8 as
    # rank filters need; one call for the whole chunk viewed as one tall image.
    grey = cv2.cvtColor(np.ascontiguousarray(images.reshape(n * h, w, 3)), cv2.COLOR_RGB2GRAY).reshape(n, h, w)
    footprint = disk(entropy_radius)
    return np.stack([rank.entropy(_dense_levels(g), footprint) for g in grey]).astype(np.float64)


def local_entropy(images, entropy_radius: int = 5, n_jobs: int = 1, chunk_size: Optional[int] = None) -> np.ndarray:
    """Local entropy (bits) of each image's grey levels: float64 [N, H, W].

    skimage.filters.rank.entropy with disk(entropy_radius); near the border the disk is
    cut by the border. It depends on the image only, so callers measuring one image
    under several part maps compute it once and pass it to `measure_parts`.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if not isinstance(entropy_radius, (int, np.integer)) or entropy_radius < 1:
        raise UserError(f"entropy_radius must be an integer >= 1, got {entropy_radius!r}")
    _, chunks = _map_chunks(_entropy_chunk, (images,), dict(entropy_radius=int(entropy_radius)),
                            chunk_size, n_jobs, False, "local entropy")
    return np.concatenate(chunks) if chunks else np.zeros(images.shape[:3])


def _measure_chunk(images: np.ndarray, masks: np.ndarray, entropy: Optional[np.ndarray], n_parts: int,
                   entropy_radius: int) -> np.ndarray:
    n, h, w = masks.shape
    key = (np.arange(n, dtype=np.int64)[:, None, None] * n_parts + masks).ravel()
    size = n * n_parts
    area = np.bincount(key, minlength=size).astype(np.float64)
    present = area > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(present, 1.0 / area, np.nan)
    lum = images.reshape(-1, 3) @ (LUMA / 3.0)
    luminance = np.bincount(key, weights=lum, minlength=size) * inv

    ent = (entropy if entropy is not None else _entropy_chunk(images, entropy_radius)).ravel()
    e_mean = np.bincount(key, weights=ent, minlength=size) * inv
    # Two-pass variance: no cancellation between E[x^2] and E[x]^2.
    dev = ent - e_mean[key]
    e_std = np.sqrt(np.bincount(key, weights=dev * dev, minlength=size) * inv)
    e_min = np.full(size, np.inf)
    e_max = np.full(size, -np.inf)
    np.minimum.at(e_min, key, ent)
    np.maximum.at(e_max, key, ent)
    e_min[~present] = np.nan
    e_max[~present] = np.nan
    out = np.stack([area, luminance, e_mean, e_std, e_min, e_max], axis=-1)
    return out.reshape(n, n_parts, len(PART_METRICS))


def _measure_chunk_own_entropy(images: np.ndarray, masks: np.ndarray, n_parts: int, entropy_radius: int) -> np.ndarray:
    return _measure_chunk(images, masks, None, n_parts, entropy_radius)


def measure_parts(images, masks, part_names: Sequence[str], *, entropy_radius: int = 5,
                  keys: Optional[pd.DataFrame] = None, n_jobs: int = 1, chunk_size: Optional[int] = None,
                  progress: bool = False, entropy: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Tidy table (image, part, metric, value) of `PART_METRICS` for every image and part.

    Rows are ordered image, then part in `part_names` order, then metric. With `keys`
    (a DataFrame with one row per image, e.g. unit, seed, class, step) its columns
    replace `image`. Absent parts: area 0, other metrics NaN. Entropy is
    skimage.filters.rank.entropy (bits) with disk(entropy_radius) on the grey image;
    near the image border the disk is cut by the border. `entropy`: that map, precomputed
    by `local_entropy` with the same radius (float [N, H, W]), to measure one set of
    images under several part maps without recomputing it.
    """
    names = _check_part_names(part_names)
    masks = _check_masks(masks, len(names))
    images = _check_images(images, masks)
    if entropy is not None:
        entropy = np.asarray(entropy, dtype=np.float64)
        if entropy.shape != masks.shape:
            raise UserError(f"entropy must have the masks' shape {masks.shape} (local_entropy of the same images), "
                            f"got {entropy.shape}")
    keys = _check_keys(keys, len(masks), ("part", "metric", "value"))
    if not isinstance(entropy_radius, (int, np.integer)) or entropy_radius < 1:
        raise UserError(f"entropy_radius must be an integer >= 1, got {entropy_radius!r}")
    fn, arrays = _measure_chunk, (images, masks)
    if entropy is not None:
        arrays = arrays + (entropy,)
    else:
        fn = _measure_chunk_own_entropy
    _, chunks = _map_chunks(fn, arrays, dict(n_parts=len(names), entropy_radius=int(entropy_radius)),
                            chunk_size, n_jobs, progress, "measure parts")
    values = np.concatenate(chunks) if chunks else np.zeros((0, len(names), len(PART_METRICS)))
    return wide_to_tidy(values, names, PART_METRICS, keys)


def wide_to_tidy(values: np.ndarray, part_names: Sequence[str], metrics: Sequence[str],
                 keys: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Tidy (image or keys..., part, metric, value) rows from an [N, parts, metrics] array."""
    n, p, m = values.shape
    image = np.repeat(np.arange(n), p * m)
    frame = keys.iloc[image].reset_index(drop=True) if keys is not None else pd.DataFrame({"image": image})
    frame["part"] = np.tile(np.repeat(np.asarray(part_names, dtype=object), m), n)
    frame["metric"] = np.tile(np.asarray(metrics, dtype=object), n * p)
    frame["value"] = values.reshape(-1).astype(np.float64)
    return frame


# ----------------------------------------------------------------------------- regions


def _label_regions(masks: np.ndarray, n_parts: int, min_region_px: int, connectivity: int):
    """Connected regions of every part of every image in one labelling call.

    Returns (labels [n, H, W] with ids 1..L, per-label arrays dict, row_of_label [L + 1]
    mapping a label to its row in the kept-region table, -1 if dropped).
    """
    from skimage.measure import label

    n, h, w = masks.shape
    # Images stacked vertically with a separator row of a non-part value: one C-speed
    # labelling pass for the chunk, and no region can cross from one image to the next.
    stack = np.full((n, h + 1, w), n_parts, dtype=np.int32)
    stack[:, :h] = masks
    lab = label(stack.reshape(n * (h + 1), w), background=n_parts, connectivity=1 if connectivity == 4 else 2)
    lab = lab.reshape(n, h + 1, w)[:, :h]
    flat = lab.ravel().astype(np.int64)
    n_labels = int(flat.max()) if flat.size else 0
    area = np.bincount(flat, minlength=n_labels + 1).astype(np.float64)
    pix = np.arange(flat.size, dtype=np.int64)
    within = pix % (h * w)
    x = (within % w).astype(np.float64)
    y = (within // w).astype(np.float64)
    image = np.zeros(n_labels + 1, dtype=np.int64)
    image[flat] = pix // (h * w)
    part = np.zeros(n_labels + 1, dtype=np.int64)
    part[flat] = masks.ravel()
    # Region order inside (image, part) is by first pixel in raster order: a property
    # of the image alone, so numbering is the same whatever the chunk.
    first = np.full(n_labels + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, flat, within)

    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(flat, weights=x, minlength=n_labels + 1) / area
        cy = np.bincount(flat, weights=y, minlength=n_labels + 1) / area
        dx, dy = x - cx[flat], y - cy[flat]
        vxx = np.bincount(flat, weights=dx * dx, minlength=n_labels + 1) / area
        vyy = np.bincount(flat, weights=dy * dy, minlength=n_labels + 1) / area
        vxy = np.bincount(flat, weights=dx * dy, minlength=n_labels + 1) / area
        # Eigenvalues of the coordinate covariance = those of skimage's inertia tensor.
        half_tr, root = (vxx + vyy) / 2, np.sqrt(((vxx - vyy) / 2) ** 2 + vxy ** 2)
        l1, l2 = half_tr + root, np.maximum(half_tr - root, 0.0)
        ecc = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1), 0, 1)), 0.0)
    angle = np.degrees(0.5 * np.arctan2(2 * vxy, vxx - vyy)) % 180.0

    keep = np.flatnonzero(area >= min_region_px)
    keep = keep[keep > 0]
    keep = keep[np.lexsort((first[keep], part[keep], image[keep]))]
    group = image[keep] * n_parts + part[keep]
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1] if len(keep) else np.zeros(0, np.int64)
    region = np.arange(len(keep)) - np.repeat(starts, np.diff(np.r_[starts, len(keep)]).astype(np.int64))
    row_of_label = np.full(n_labels + 1, -1, dtype=np.int64)
    row_of_label[keep] = np.arange(len(keep))
    table = dict(image=image[keep], part=part[keep], region=region, area=area[keep], cx=cx[keep], cy=cy[keep],
                 eccentricity=ecc[keep], angle=angle[keep], width=4 * np.sqrt(l1[keep]),
                 height=4 * np.sqrt(l2[keep]))
    return lab, table, row_of_label


def _regions_chunk(masks, n_parts, min_region_px, connectivity) -> dict:
    return _label_regions(masks, n_parts, min_region_px, connectivity)[1]


def _concat_tables(starts: list, chunks: list, columns: Sequence[str]) -> dict:
    """Join per-chunk column dicts, shifting the chunk-local image index to the global one."""
    out = {}
    for c in columns:
        parts = [t[c] + (start if c == "image" else 0) for start, t in zip(starts, chunks)]
        out[c] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return out


def _frame(table: dict, columns: Sequence[str], names: tuple, keys: Optional[pd.DataFrame]) -> pd.DataFrame:
    image = table["image"].astype(np.int64)
    frame = keys.iloc[image].reset_index(drop=True) if keys is not None else pd.DataFrame({"image": image})
    frame["part"] = np.asarray(names, dtype=object)[table["part"].astype(np.int64)]
    for c in columns:
        frame[c] = table[c]
    return frame


def find_regions(masks, part_names: Sequence[str], *, min_region_px: int = 3, connectivity: int = 8,
                 keys: Optional[pd.DataFrame] = None, n_jobs: int = 1, chunk_size: Optional[int] = None,
                 progress: bool = False) -> pd.DataFrame:
    """Table (image, part, region, area, cx, cy, eccentricity, angle, width, height).

    One row per connected region (8- or 4-connected) of each part's mask with at least
    `min_region_px` pixels; `region` numbers the kept regions of an (image, part) from 0
    in raster order of their first pixel. Every part including background gets regions.
    Conventions of the ellipse columns: see the module docstring.
    """
    names = _check_part_names(part_names)
    masks = _check_masks(masks, len(names))
    _check_common(min_region_px, connectivity)
    keys = _check_keys(keys, len(masks), ("part",) + REGION_COLUMNS)
    starts, chunks = _map_chunks(_regions_chunk, (masks,),
                                 dict(n_parts=len(names), min_region_px=int(min_region_px), connectivity=connectivity),
                                 chunk_size, n_jobs, progress, "find regions")
    table = _concat_tables(starts, chunks, ("image", "part") + REGION_COLUMNS)
    frame = _frame(table, REGION_COLUMNS, names, keys)
    return frame.astype({"region": np.int64, "area": np.int64})


def _match_chunk(masks_a, masks_b, n_parts, min_region_px, connectivity, min_iou) -> dict:
    from scipy.optimize import linear_sum_assignment

    lab_a, ta, row_a = _label_regions(masks_a, n_parts, min_region_px, connectivity)
    lab_b, tb, row_b = _label_regions(masks_b, n_parts, min_region_px, connectivity)
    na, nb = len(ta["region"]), len(tb["region"])
    # Only pixels with the same part in both maps can be shared by same-part regions.
    same = (masks_a == masks_b).ravel()
    ra = row_a[lab_a.ravel()[same]]
    rb = row_b[lab_b.ravel()[same]]
    ok = (ra >= 0) & (rb >= 0)
    pair, inter = np.unique(ra[ok] * max(nb, 1) + rb[ok], return_counts=True)
    pa, pb = pair // max(nb, 1), pair % max(nb, 1)
    iou = inter / (ta["area"][pa] + tb["area"][pb] - inter)
    good = iou > min_iou
    pa, pb, iou = pa[good], pb[good], iou[good]

    # A pair whose two regions overlap nothing else is its own best assignment; only
    # (image, part) groups with competing overlaps need the Hungarian algorithm.
    deg_a = np.bincount(pa, minlength=na)
    deg_b = np.bincount(pb, minlength=nb)
    alone = (deg_a[pa] == 1) & (deg_b[pb] == 1)
    chosen = [np.flatnonzero(alone)]
    contested = np.flatnonzero(~alone)
    if len(contested):
        group = ta["image"][pa[contested]] * n_parts + ta["part"][pa[contested]]
        order = np.argsort(group, kind="stable")
        contested, group = contested[order], group[order]
        bounds = np.r_[0, np.flatnonzero(np.diff(group)) + 1, len(group)]
        for s, e in zip(bounds[:-1], bounds[1:]):
            idx = contested[s:e]
            ua, ia = np.unique(pa[idx], return_inverse=True)
            ub, ib = np.unique(pb[idx], return_inverse=True)
            m = np.zeros((len(ua), len(ub)))
            m[ia, ib] = iou[idx]
            r, c = linear_sum_assignment(m, maximize=True)
            hit = m[r, c] > 0
            lookup = {(i, j): k for k, i, j in zip(idx, ia, ib)}
            chosen.append(np.array([lookup[(i, j)] for i, j in zip(r[hit], c[hit])], dtype=np.int64))
    sel = np.sort(np.concatenate(chosen))  # pa increases with pair code, so this is (image, part, region_a) order
    return dict(image=ta["image"][pa[sel]], part=ta["part"][pa[sel]], region_a=ta["region"][pa[sel]],
                region_b=tb["region"][pb[sel]], iou=iou[sel])


def match_regions(masks_a, masks_b, part_names: Sequence[str], *, min_region_px: int = 3, connectivity: int = 8,
                  min_iou: float = 0.0, keys: Optional[pd.DataFrame] = None, n_jobs: int = 1,
                  chunk_size: Optional[int] = None, progress: bool = False) -> pd.DataFrame:
    """Table (image, part, region_a, region_b, iou) pairing regions of masks_a[i] and masks_b[i].

    Regions are those `find_regions` numbers with the same `min_region_px` and
    `connectivity`. Within each (image, part), the pairing maximises the summed IoU of
    the region masks (scipy linear_sum_assignment); each region pairs at most once and
    only pairs with IoU > `min_iou` (any overlap by default) are kept, so a region that
    moved off itself, appeared or vanished stays unmatched.
    """
    names = _check_part_names(part_names)
    masks_a = _check_masks(masks_a, len(names), "masks_a")
    masks_b = _check_masks(masks_b, len(names), "masks_b")
    if masks_a.shape != masks_b.shape:
        raise UserError(f"masks_a {masks_a.shape} and masks_b {masks_b.shape} must have the same shape; "
                        "item i of both must be the same seed at two steps")
    _check_common(min_region_px, connectivity)
    if not 0.0 <= float(min_iou) < 1.0:
        raise UserError(f"min_iou must be in [0, 1), got {min_iou!r}")
    keys = _check_keys(keys, len(masks_a), ("part",) + MATCH_COLUMNS)
    starts, chunks = _map_chunks(_match_chunk, (masks_a, masks_b),
                                 dict(n_parts=len(names), min_region_px=int(min_region_px), connectivity=connectivity,
                                      min_iou=float(min_iou)), chunk_size, n_jobs, progress, "match regions")
    table = _concat_tables(starts, chunks, ("image", "part") + MATCH_COLUMNS)
    return _frame(table, MATCH_COLUMNS, names, keys).astype({"region_a": np.int64, "region_b": np.int64})


# ----------------------------------------------------------------------------- changes


def angle_change(first, last):
    """last - first for orientations (mod 180 degrees), wrapped into [-90, 90)."""
    return (np.asarray(last, dtype=np.float64) - np.asarray(first, dtype=np.float64) + 90.0) % 180.0 - 90.0


def _need(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{name} lacks column {missing[0]!r}; it needs {', '.join(columns)} "
                        "(pass the same `on` columns the tables were made with)")


def _wide(measures: pd.DataFrame, on: list, name: str) -> pd.DataFrame:
    _need(measures, on + ["part", "metric", "value"], name)
    idx = measures.set_index(on + ["part", "metric"])["value"]
    if idx.index.has_duplicates:
        raise UserError(f"{name}: columns {on} do not identify one item per row; "
                        "pass one step per table and `on` columns that name the item (e.g. unit, seed)")
    return idx.unstack("metric")


def part_changes(first: pd.DataFrame, last: pd.DataFrame, *, regions_first: Optional[pd.DataFrame] = None,
                 regions_last: Optional[pd.DataFrame] = None, matches: Optional[pd.DataFrame] = None,
                 on: Sequence[str] = ("image",), min_part_area: float = 20.0,
                 area_by: Sequence[str] = ()) -> pd.DataFrame:
    """Tidy (on..., part, metric, change) from step-0 and last-step tables of the same items.

    `first`/`last`: `measure_parts` outputs; the item (e.g. unit, seed) is named by the
    columns `on`. change = last - first, except area: divided by the step-0 area (NaN if
    the part is absent at step 0); luminance: divided by 85. Entropy changes are raw.
    With `regions_first`, `regions_last` (find_regions) and `matches` (match_regions of
    step 0 as a, last step as b) also: n_regions (count difference) and
    `SHAPE_METRICS` from matched regions: each pair's change (angle wrapped into
    [-90, 90)), averaged over the part's matched pairs weighted by step-0 region area,
    so a part of several regions (legs) uses all of them and small ones count less. NaN
    where a part has no matched pair.
    A part is left out (for the items of an `area_by` group, default all items) when
    its mean area over those items at both steps is under `min_part_area` pixels.
    Rows are sorted by `on`, then part (order of appearance in `first`), then metric.
    """
    on = list(on)
    if not on:
        raise UserError("on must name at least one item column, e.g. ('unit', 'seed')")
    area_by = list(area_by)
    if set(area_by) - set(on):
        raise UserError(f"area_by columns {sorted(set(area_by) - set(on))} must be among on={on}")
    if min_part_area < 0:
        raise UserError(f"min_part_area must be >= 0, got {min_part_area!r}")
    wf, wl = _wide(first, on, "first"), _wide(last, on, "last")
    if wf.empty and wl.empty:
        return pd.DataFrame(columns=on + ["part", "metric", "change"])
    for m in PART_METRICS:
        if m not in wf.columns or m not in wl.columns:
            raise UserError(f"first/last lack metric {m!r}; pass measure_parts outputs")
    if len(wf.index.difference(wl.index)) or len(wl.index.difference(wf.index)):
        raise UserError("first and last do not cover the same items and parts; "
                        "pass the step-0 and last-step measures of the same (unit, seed) items")
    wl = wl.loc[wf.index]

    change = pd.DataFrame(index=wf.index)
    fa = wf["area"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        change["area"] = np.where(fa > 0, (wl["area"].to_numpy() - fa) / np.where(fa > 0, fa, 1), np.nan)
    change["luminance"] = (wl["luminance"] - wf["luminance"]) / LUMINANCE_MAX
    for m in PART_METRICS[2:]:
        change[m] = wl[m] - wf[m]

    with_shapes = any(t is not None for t in (regions_first, regions_last, matches))
    if with_shapes:
        if regions_first is None or regions_last is None or matches is None:
            raise UserError("shape changes need all of regions_first, regions_last and matches")
        change = change.join(_shape_changes(regions_first, regions_last, matches, on))
        cnt = [r.groupby(on + ["part"]).size() for r in (regions_first, regions_last)]
        n_first = cnt[0].reindex(change.index, fill_value=0)
        n_last = cnt[1].reindex(change.index, fill_value=0)
        change["n_regions"] = (n_last - n_first).astype(np.float64)

    # Small-part filter: pooled mean area of both steps within each area_by group.
    both = pd.concat([wf["area"], wl["area"]])
    mean_area = both.groupby(area_by + ["part"]).transform("mean").iloc[: len(wf)]
    change = change[mean_area.to_numpy() >= min_part_area]

    metrics = [m for m in CHANGE_METRICS if m in change.columns]
    part_order = {p: i for i, p in enumerate(pd.unique(first["part"]))}
    rows = change[metrics].reset_index()
    rows["_part"] = rows["part"].map(part_order)
    rows = rows.sort_values(on + ["_part"], kind="stable").drop(columns="_part").set_index(on + ["part"])
    tidy = rows.rename_axis(columns="metric").stack().rename("change").reset_index()
    tidy["change"] = tidy["change"].astype(np.float64)
    return tidy


def _shape_changes(regions_first: pd.DataFrame, regions_last: pd.DataFrame, matches: pd.DataFrame,
                   on: list) -> pd.DataFrame:
    cols = on + ["part", "region"]
    _need(regions_first, cols + ["area"] + list(SHAPE_METRICS), "regions_first")
    _need(regions_last, cols + list(SHAPE_METRICS), "regions_last")
    _need(matches, on + ["part", "region_a", "region_b"], "matches")
    a = regions_first[cols + ["area"] + list(SHAPE_METRICS)].rename(columns={"region": "region_a"})
    b = regions_last[cols + list(SHAPE_METRICS)].rename(columns={"region": "region_b"})
    key_a, key_b = on + ["part", "region_a"], on + ["part", "region_b"]
    pairs = matches[on + ["part", "region_a", "region_b"]]
    pairs = pairs.merge(a, on=key_a, how="left", validate="many_to_one")
    pairs = pairs.merge(b, on=key_b, how="left", validate="many_to_one", suffixes=("_a", "_b"))
    if pairs["area"].isna().any() or pairs["cx_b"].isna().any():
        raise UserError("matches name regions missing from regions_first/regions_last; make all three with "
                        "the same min_region_px and connectivity, and the same keys")
    d = pd.DataFrame({m: pairs[f"{m}_b"] - pairs[f"{m}_a"] for m in SHAPE_METRICS})
    d["angle"] = angle_change(pairs["angle_a"], pairs["angle_b"])
    wgt = pairs["area"].astype(np.float64)
    num = d.mul(wgt, axis=0)
    num[on + ["part"]] = pairs[on + ["part"]]
    num["_w"] = wgt
    sums = num.groupby(on + ["part"]).sum()
    return sums[list(SHAPE_METRICS)].div(sums["_w"], axis=0)


def pair_changes(images_first, masks_first, images_last, masks_last, part_names: Sequence[str], *,
                 keys: Optional[pd.DataFrame] = None, entropy_radius: int = 5, min_region_px: int = 3,
                 connectivity: int = 8, min_iou: float = 0.0, min_part_area: float = 20.0,
                 area_by: Sequence[str] = (), n_jobs: int = 1, chunk_size: Optional[int] = None,
                 progress: bool = False) -> pd.DataFrame:
    """`part_changes` with shapes, straight from arrays: item i is (step-0, last-step) pair i.

    `keys` (one row per item, e.g. unit, seed, class) replace the `image` column;
    `area_by` may name its columns. Returns tidy (keys or image..., part, metric, change).
    """
    names = _check_part_names(part_names)
    mf = _check_masks(masks_first, len(names), "masks_first")
    ml = _check_masks(masks_last, len(names), "masks_last")
    if mf.shape != ml.shape:
        raise UserError(f"masks_first {mf.shape} and masks_last {ml.shape} must have the same shape")
    keys = _check_keys(keys, len(mf), ("part", "metric", "change"))
    area_by = list(area_by)
    if area_by and (keys is None or set(area_by) - set(keys.columns)):
        raise UserError(f"area_by {area_by} must name columns of keys")
    kw = dict(n_jobs=n_jobs, chunk_size=chunk_size, progress=progress)
    rk = dict(min_region_px=min_region_px, connectivity=connectivity)
    first = measure_parts(images_first, mf, names, entropy_radius=entropy_radius, keys=keys, **kw)
    last = measure_parts(images_last, ml, names, entropy_radius=entropy_radius, keys=keys, **kw)
    regions_first = find_regions(mf, names, keys=keys, **rk, **kw)
    regions_last = find_regions(ml, names, keys=keys, **rk, **kw)
    matches = match_regions(mf, ml, names, min_iou=min_iou, keys=keys, **rk, **kw)
    on = list(keys.columns) if keys is not None else ["image"]
    return part_changes(first, last, regions_first=regions_first, regions_last=regions_last, matches=matches,
                        on=on, min_part_area=min_part_area, area_by=area_by)
