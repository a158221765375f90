"""The built-in world: a procedural family of cartoon animals with per-pixel part labels.

Every image is a pure function of (class, seed): the seed drives one RNG that draws a
fixed-length vector of uniforms, turned into named factors (pose, scale, proportions,
colours). Rendering is vectorised over the batch with signed distance functions, so a
batch of any size gives the same pixels for the same seed.

All classes share one part vocabulary; they differ in proportions, ear and tail shapes
and colour palettes, and vary continuously inside each class.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from linkstyle.core.config import check

PART_NAMES = ("background", "body", "head", "legs", "tail", "ears", "eyes")
CLASS_NAMES = ("cat", "dog", "rabbit", "deer", "mouse")

# Class prototypes in canonical units (about one pixel at scale 1, animal facing right).
# body_a/body_b: body half-length/half-height; head_r, head_aspect; leg_len, leg_w (radius);
# tail_len, tail_w, tail_angle (deg above horizontal, pointing back); ear_len, ear_w,
# ear_angle (deg from vertical, positive leans back); hue (deg), sat, val of the coat.
_PROTO = {
    "cat":    dict(body_a=6.8, body_b=3.3, head_r=3.4, head_aspect=1.0, leg_len=4.2, leg_w=1.2,
                   tail_len=8.0, tail_w=1.0, tail_angle=55.0, ear_len=3.6, ear_w=1.5, ear_angle=-5.0,
                   hue=28.0, sat=0.75, val=0.90),
    "dog":    dict(body_a=7.4, body_b=4.0, head_r=3.7, head_aspect=1.35, leg_len=4.8, leg_w=1.45,
                   tail_len=5.5, tail_w=1.3, tail_angle=30.0, ear_len=4.2, ear_w=1.9, ear_angle=150.0,
                   hue=20.0, sat=0.65, val=0.55),
    "rabbit": dict(body_a=5.8, body_b=4.4, head_r=3.4, head_aspect=0.95, leg_len=2.6, leg_w=1.8,
                   tail_len=0.6, tail_w=2.7, tail_angle=10.0, ear_len=5.2, ear_w=1.6, ear_angle=10.0,
                   hue=220.0, sat=0.08, val=0.80),
    "deer":   dict(body_a=6.8, body_b=3.6, head_r=3.0, head_aspect=1.25, leg_len=7.4, leg_w=1.1,
                   tail_len=3.4, tail_w=1.7, tail_angle=65.0, ear_len=4.0, ear_w=1.4, ear_angle=55.0,
                   hue=35.0, sat=0.55, val=0.72),
    "mouse":  dict(body_a=5.9, body_b=3.2, head_r=3.1, head_aspect=1.2, leg_len=2.2, leg_w=1.1,
                   tail_len=9.5, tail_w=1.0, tail_angle=-8.0, ear_len=2.7, ear_w=2.6, ear_angle=20.0,
                   hue=0.0, sat=0.05, val=0.55),
}

# Named factors recorded with every image, in this order.
FACTOR_NAMES = (
    "class", "scale", "cx", "cy", "tilt", "head_dy",
    "body_a", "body_b", "head_r", "head_aspect", "leg_len", "leg_w",
    "tail_len", "tail_w", "tail_angle", "ear_len", "ear_w", "ear_angle",
    "coat_hue", "coat_sat", "coat_val", "ear_hue", "bg_hue", "bg_val", "bg_tilt", "light",
)
_N_UNIFORMS = 32  # uniforms drawn per seed; fixed so adding factors later keeps old ones stable


@dataclass(frozen=True)
class WorldConfig:
    """Options of stage `world`."""

    resolution: int = 32
    n_train_per_class: int = 2000
    n_test_per_class: int = 400
    train_seed_base: int = 0
    test_seed_base: int = 1_000_000
    variation: float = 1.0  # scales within-class jitter of proportions and pose
    chunk: int = 1024

    def __post_init__(self):
        check(self.resolution in (16, 32, 64, 128), "resolution",
              f"must be 16, 32, 64 or 128 (the generator doubles from 4 px), got {self.resolution}")
        check(self.n_train_per_class > 0, "n_train_per_class", "must be > 0")
        check(self.n_test_per_class > 0, "n_test_per_class", "must be > 0")
        check(self.train_seed_base >= 0 and self.test_seed_base >= 0, "train_seed_base", "seed bases must be >= 0")
        check(
            abs(self.test_seed_base - self.train_seed_base) >= self.n_train_per_class * len(CLASS_NAMES),
            "test_seed_base",
            "must be far enough from train_seed_base that train and test seeds do not overlap",
        )
        check(0.0 <= self.variation <= 3.0, "variation", "must be between 0 and 3")
        check(self.chunk > 0, "chunk", "must be > 0")


def split_seeds(cfg: WorldConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, classes) of a split: classes interleaved, one seed per image."""
    n = (cfg.n_train_per_class if split == "train" else cfg.n_test_per_class) * len(CLASS_NAMES)
    base = cfg.train_seed_base if split == "train" else cfg.test_seed_base
    idx = np.arange(n, dtype=np.int64)
    return base + idx, idx % len(CLASS_NAMES)


def sample_factors(seeds: np.ndarray, classes: np.ndarray, variation: float = 1.0) -> np.ndarray:
    """Factor table [N, len(FACTOR_NAMES)] (float32) for the given seeds and classes."""
    seeds = np.asarray(seeds, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    # One RNG per seed: the factors of a seed never depend on its neighbours in the batch.
    u = np.stack([np.random.default_rng(int(s)).random(_N_UNIFORMS) for s in seeds]) if len(seeds) else np.zeros((0, _N_UNIFORMS))
    g = np.sqrt(2.0) * _erfinv(2.0 * u - 1.0)  # standard normals from the same uniforms
    v = variation
    out = {}
    proto = {k: np.array([_PROTO[CLASS_NAMES[c]][k] for c in classes]) for k in _PROTO["cat"]}

    def jitter(key, i, rel):
        return proto[key] * np.exp(rel * v * np.clip(g[:, i], -2.5, 2.5))

    out["class"] = classes.astype(np.float64)
    out["scale"] = 1.22 + 0.2 * u[:, 0] * min(v, 1.0)
    out["cx"] = 0.6 * v * np.clip(g[:, 1], -2.5, 2.5)
    out["cy"] = 0.6 * v * np.clip(g[:, 2], -2.5, 2.5)
    out["tilt"] = 7.0 * v * np.clip(g[:, 3], -2.5, 2.5)
    out["head_dy"] = 0.9 * v * np.clip(g[:, 4], -2.5, 2.5)
    for i, key in enumerate(("body_a", "body_b", "head_r", "head_aspect", "leg_len", "leg_w",
                             "tail_len", "tail_w", "ear_len", "ear_w")):
        out[key] = jitter(key, 5 + i, 0.1)
    out["tail_angle"] = proto["tail_angle"] + 14.0 * v * np.clip(g[:, 15], -2.5, 2.5)
    out["ear_angle"] = proto["ear_angle"] + 9.0 * v * np.clip(g[:, 16], -2.5, 2.5)
    out["coat_hue"] = (proto["hue"] + 14.0 * v * np.clip(g[:, 17], -2.5, 2.5)) % 360.0
    out["coat_sat"] = np.clip(proto["sat"] + 0.08 * v * g[:, 18], 0.0, 1.0)
    out["coat_val"] = np.clip(proto["val"] + 0.07 * v * g[:, 19], 0.15, 1.0)
    out["ear_hue"] = (out["coat_hue"] + 330.0 + 40.0 * u[:, 20]) % 360.0
    out["bg_hue"] = 360.0 * u[:, 21]
    out["bg_val"] = 0.35 + 0.6 * u[:, 22]
    out["bg_tilt"] = 2.0 * u[:, 23] - 1.0
    out["light"] = 0.1 + 0.15 * u[:, 24]
    return np.stack([out[k] for k in FACTOR_NAMES], axis=1).astype(np.float32)


def _erfinv(x: np.ndarray) -> np.ndarray:
    from scipy.special import erfinv

    return erfinv(np.clip(x, -1 + 1e-12, 1 - 1e-12))


def _hsv(h, s, v) -> np.ndarray:
    """[N] hue (deg), sat, val -> [N, 3] RGB in [0, 1]."""
    return np.array([colorsys.hsv_to_rgb(hh / 360.0, ss, vv) for hh, ss, vv in zip(h, s, v)]).reshape(-1, 3)


def _ellipse_sdf(x, y, cx, cy, a, b, ang):
    c, s = np.cos(ang), np.sin(ang)
    dx, dy = x - cx, y - cy
    u, w = dx * c + dy * s, -dx * s + dy * c
    return (np.sqrt((u / a) ** 2 + (w / b) ** 2) - 1.0) * np.minimum(a, b)


def _capsule_sdf(x, y, x0, y0, x1, y1, r):
    px, py, bx, by = x - x0, y - y0, x1 - x0, y1 - y0
    t = np.clip((px * bx + py * by) / np.maximum(bx * bx + by * by, 1e-9), 0.0, 1.0)
    return np.sqrt((px - t * bx) ** 2 + (py - t * by) ** 2) - r


def render(factors: np.ndarray, resolution: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render factor rows to (images uint8 [N, H, W, 3], part labels uint8 [N, H, W])."""
    f = {k: factors[:, i].astype(np.float64)[:, None, None] for i, k in enumerate(FACTOR_NAMES)}
    n, res = factors.shape[0], resolution
    px = (np.arange(res) + 0.5) / res * 32.0  # canonical canvas is 32 units wide at any resolution
    gy, gx = np.meshgrid(px, px, indexing="ij")
    unit = 32.0 / res  # canonical units per output pixel, for antialiasing and size

    # Inverse pose: image point -> canonical animal frame.
    s = f["scale"]
    th = np.deg2rad(f["tilt"])
    dx, dy = gx[None] - (16.0 + f["cx"]), gy[None] - (17.5 + f["cy"])
    x = (dx * np.cos(th) + dy * np.sin(th)) / s
    y = (-dx * np.sin(th) + dy * np.cos(th)) / s

    ba, bb = f["body_a"], f["body_b"]
    hr, hasp = f["head_r"], f["head_aspect"]
    hx, hy = ba * 0.82 + hr * 0.55, -bb * 0.65 - hr * 0.25 + f["head_dy"]

    sdf = {}
    sdf["body"] = _ellipse_sdf(x, y, 0.0, 0.0, ba, bb, 0.0)
    sdf["head"] = _ellipse_sdf(x, y, hx, hy, hr * hasp, hr, 0.0)
    legs = []
    for lx in (-0.62, -0.38, 0.38, 0.62):
        x0, y0 = lx * ba, bb * 0.45
        legs.append(_capsule_sdf(x, y, x0, y0, x0 + 0.15 * f["leg_len"] * np.sign(lx), y0 + f["leg_len"], f["leg_w"]))
    sdf["legs"] = np.minimum.reduce(legs)
    ta = np.deg2rad(f["tail_angle"])
    tx0, ty0 = -ba * 0.9, -bb * 0.25
    sdf["tail"] = _capsule_sdf(x, y, tx0, ty0, tx0 - f["tail_len"] * np.cos(ta), ty0 - f["tail_len"] * np.sin(ta), f["tail_w"])
    ears = []
    for off in (-0.35, 0.25):  # angular position on the head (rad from vertical, + = forward)
        ea = np.deg2rad(f["ear_angle"]) + off * 0.5
        bx, by = hx + hr * hasp * np.sin(off), hy - hr * np.cos(off)
        ecx, ecy = bx - np.sin(ea) * f["ear_len"] * 0.75, by - np.cos(ea) * f["ear_len"] * 0.75
        ears.append(_ellipse_sdf(x, y, ecx, ecy, f["ear_w"], f["ear_len"], -ea))
    sdf["ears"] = np.minimum.reduce(ears)
    er = 0.5 * hr + 0.25
    sdf["eyes"] = np.minimum(
        _ellipse_sdf(x, y, hx + 0.45 * hr * hasp, hy - 0.2 * hr, er * 0.8, er, 0.0),
        _ellipse_sdf(x, y, hx - 0.15 * hr * hasp, hy - 0.25 * hr, er * 0.7, er, 0.0),
    )

    coat = _hsv(f["coat_hue"].ravel(), f["coat_sat"].ravel(), f["coat_val"].ravel())[:, None, None, :]
    colors = {
        "body": coat,
        "head": coat * 1.08,
        "legs": coat * 0.72,
        "tail": coat * 0.85,
        "ears": _hsv(f["ear_hue"].ravel(), 0.45 + 0.0 * f["ear_hue"].ravel(), 0.9 * f["coat_val"].ravel())[:, None, None, :],
        "eyes": np.full((n, 1, 1, 3), 0.06),
    }
    # Background: a tilted two-tone gradient of a random hue.
    bg_top = _hsv(f["bg_hue"].ravel(), np.full(n, 0.35), f["bg_val"].ravel())[:, None, None, :]
    bg_bot = _hsv((f["bg_hue"].ravel() + 40.0) % 360.0, np.full(n, 0.5), 0.7 * f["bg_val"].ravel())[:, None, None, :]
    t = np.clip((gy[None] + f["bg_tilt"] * (gx[None] - 16.0)) / 32.0, 0.0, 1.0)[..., None]
    img = bg_top * (1.0 - t) + bg_bot * t
    labels = np.zeros((n, res, res), dtype=np.uint8)
    # Top-lit shading in the animal frame gives the parts some depth.
    shade = (1.0 - f["light"] * np.clip(y / 6.0, -1.5, 1.5))[..., None]

    for part in ("tail", "legs", "body", "ears", "head", "eyes"):  # painter's order, back to front
        d = sdf[part] * s / unit  # distance in output pixels
        alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
        col = colors[part] * (shade if part != "eyes" else 1.0)
        img = img * (1.0 - alpha) + col * alpha
        labels[d < 0.0] = PART_NAMES.index(part)
    img = np.clip(np.rint(np.clip(img, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return img, labels


def make_split(cfg: WorldConfig, split: str):
    """Yield (seeds, classes, factors, images, labels) chunks of one split."""
    seeds, classes = split_seeds(cfg, split)
    for i in range(0, len(seeds), cfg.chunk):
        sd, cl = seeds[i : i + cfg.chunk], classes[i : i + cfg.chunk]
        fac = sample_factors(sd, cl, cfg.variation)
        img, lab = render(fac, cfg.resolution)
        yield sd, cl, fac, img, lab
