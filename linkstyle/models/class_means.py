"""Per-class mean w, the point truncation pulls toward: from the checkpoint, or estimated.

StyleGAN-XL stores one mean w per class (`mapping.w_avg`, [c_dim, w_dim]) and the
built-in generator stores its class prior's means; StyleGAN2-ADA / StyleGAN3 pickles and
plugins may store none (or only one, over all classes). Then the mean is estimated from
`n_samples` untruncated w per class, sample k of class c drawn with seed
`seed_base + c * class_stride + k` (recorded in the output), so the estimate does not
depend on the batch size. Stage class_means writes the result as exact JSON (float32
values round-trip) and the truncating stages read it back (`load_generator(class_means=)`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from linkstyle.core.config import check
from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path
from linkstyle.models.generator import Generator

SOURCES = ("auto", "estimate")


@dataclass(frozen=True)
class ClassMeansConfig:
    """params.yaml `class_means`."""

    source: str = "auto"         # auto: the checkpoint's per-class means where it has them; estimate: always estimate
    n_samples: int = 10000       # per class, when estimated
    seed_base: int = 40_000_000  # far from every other stage's seeds
    class_stride: int = 1_000_000
    batch_size: int = 1024
    device: str = "auto"

    def __post_init__(self):
        check(self.source in SOURCES, "source", f"must be one of {', '.join(SOURCES)}, got {self.source!r}")
        check(self.n_samples >= 1, "n_samples", "must be >= 1")
        check(self.n_samples <= self.class_stride, "class_stride", "must be >= n_samples (seeds of classes must not overlap)")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


def checkpoint_means(gen: Generator) -> np.ndarray | None:
    """[n_classes, w_dim] per-class means the generator carries, or None."""
    own = getattr(gen, "checkpoint_class_means", None)
    try:
        means = own() if own is not None else gen.class_mean_w()
    except NotImplementedError:
        return None
    return None if means is None else means.detach().float().cpu().numpy()


def estimate_means(gen: Generator, cfg: ClassMeansConfig, progress: bool = True) -> np.ndarray:
    """Mean of n_samples untruncated w per class (float64 sum of the float32 samples)."""
    out = np.zeros((gen.n_classes, gen.w_dim), np.float64)
    steps = [(c, a) for c in range(gen.n_classes) for a in range(0, cfg.n_samples, cfg.batch_size)]
    for c, a in tqdm(steps, desc="class_means", unit="batch", disable=not progress):
        b = min(cfg.n_samples, a + cfg.batch_size)
        seeds = cfg.seed_base + c * cfg.class_stride + np.arange(a, b)
        w = gen.sample_w(seeds, np.full(b - a, c), psi=1.0)
        out[c] += w.double().sum(0).cpu().numpy()
    return (out / cfg.n_samples).astype(np.float32)


def class_means(gen: Generator, cfg: ClassMeansConfig, progress: bool = True) -> tuple[np.ndarray, dict]:
    """(means [n_classes, w_dim] float32, provenance) for `gen`."""
    means = checkpoint_means(gen) if cfg.source == "auto" else None
    if means is not None:
        return means, {"source": "checkpoint"}
    return estimate_means(gen, cfg, progress), {"source": "estimated", "n_samples": cfg.n_samples,
                                                 "seed_base": cfg.seed_base, "class_stride": cfg.class_stride}


def write_class_means(path: str | os.PathLike, gen: Generator, means: np.ndarray, provenance: dict) -> None:
    """Exact JSON: float32 values written as the float64 they convert to, so they read back bit-equal."""
    doc = {"generator": gen.fingerprint, "class_names": list(gen.class_names), **provenance,
           "class_mean_w": [[float(v) for v in row] for row in np.asarray(means, np.float32)]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_class_means(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(means [n_classes, w_dim] float32, the rest of the document); a damaged file is a UserError.

    The file is an output of stage class_means that a user can cut (a copy interrupted) or
    edit; every way it can be unusable ends in one line naming it, never a JSONDecodeError or
    NaN truncation targets that would poison every image drawn from them.
    """
    fix = "run dvc repro class_means (add --force if it says nothing changed)"
    try:
        with open(path) as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e.__class__.__name__}: {e}); truncated or edited? {fix}") from None
    if not isinstance(doc, dict) or "class_mean_w" not in doc:
        raise UserError(f"{path}: no 'class_mean_w' in it, not a class means file; {fix}")
    try:
        means = np.asarray(doc.pop("class_mean_w"), np.float32)
    except (TypeError, ValueError):
        raise UserError(f"{path}: class_mean_w is not a table of numbers (rows of unequal length?); {fix}") from None
    if means.ndim != 2 or means.size == 0:
        raise UserError(f"{path}: class_mean_w has shape {list(means.shape)}, expected [n_classes, w_dim]; {fix}")
    bad = int((~np.isfinite(means)).sum())
    if bad:
        raise UserError(f"{path}: class_mean_w has {bad} non-finite values (NaN or inf); {fix}")
    return means, doc
