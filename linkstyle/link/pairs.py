"""Paired data: w -> image -> classifier, kept when the classifier is right (docs/method.md section 1).

Every sample has its own seed (the reference code re-drew with one seed and so kept
repeated samples). Seeds of class c in a split are `seed_base + c * class_stride + k`
for k = 0, 1, 2, ...; they are drawn in order and the first `n_per_class` accepted ones
are kept, so the kept set is a function of the params only, not of the batch size.
Pairs stream into resizable HDF5 datasets batch by batch, so memory does not grow with
the number of pairs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from linkstyle.core import h5
from linkstyle.core.config import check, to_dict
from linkstyle.core.errors import UserError

SPLITS = ("train", "test")
DATASETS = ("w", "r", "logits", "label", "seed")


@dataclass(frozen=True)
class PairsConfig:
    """Options of stage `sample_pairs`."""

    psi: float = 0.7
    n_train_per_class: int = 2000
    n_test_per_class: int = 250
    keep_correct: bool = True
    train_seed_base: int = 10_000_000
    test_seed_base: int = 20_000_000
    class_stride: int = 1_000_000  # seeds reserved per class and split
    batch_size: int = 256
    max_draws_factor: float = 20.0  # give up on a class after this many draws per kept pair
    device: str = "auto"

    def __post_init__(self):
        check(0.0 < self.psi <= 1.0, "psi", "must be in (0, 1]")
        check(self.n_train_per_class >= 1 and self.n_test_per_class >= 1, "n_train_per_class", "and n_test_per_class must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.max_draws_factor >= 1.0, "max_draws_factor", "must be >= 1")
        check(self.class_stride >= 1, "class_stride", "must be >= 1")


def _draw(gen, clf, seeds: np.ndarray, c: int, psi: float):
    w = gen.sample_w(seeds, np.full(len(seeds), c), psi)
    r, logits = clf.represent(gen.synthesize(w, len(seeds)), batch_size=len(seeds))
    return w.cpu().numpy(), r.numpy(), logits.numpy()


EARLY_CHECKS = tuple(64 * 2**k for k in range(1, 12))  # draws after which a hopeless class is given up (128, 256, ...)
EARLY_Z = 2.33  # one-sided 99% Wilson bound


def _hopeless(ok: np.ndarray, cfg: PairsConfig) -> tuple[int, int] | None:
    """(kept, draws) at the first check point where even the optimistic (99%) acceptance of
    the draws so far could not fill the class within max_draws_factor draws per pair; None
    while it still could. Decided on prefixes of fixed length, so not by the batch size."""
    for n in EARLY_CHECKS:
        if n > len(ok):
            return None
        x = int(ok[:n].sum())
        p, z2 = x / n, EARLY_Z**2
        upper = (p + z2 / (2 * n) + EARLY_Z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)
        if upper < 1.0 / cfg.max_draws_factor:
            return x, n
    return None


def check_model_output(clf, r: np.ndarray, logits: np.ndarray, class_name: str, seeds: np.ndarray) -> None:
    """What the classifier returned for a batch is what it declares: r [m, n_units] and logits
    [m, n_classes], floating point, finite. A plugin's declared sizes are only its word; r that
    breaks it would be written unchecked and fail much later, far from the cause."""
    m, where = len(seeds), f"class '{class_name}', seeds {int(seeds[0])}..{int(seeds[-1])}"
    fix = "fix the classifier of models.classifier (docs/own-models.md: the interface)"
    for name, a, want in (("r", r, (m, clf.n_units)), ("logits", logits, (m, clf.n_classes))):
        if tuple(a.shape) != want:
            declared = "n_units" if name == "r" else "n_classes"
            raise UserError(f"models.classifier: the classifier returned {name} of shape {list(a.shape)} for {m} images "
                            f"but declares {declared} = {want[1]} (expected {list(want)}); {fix}")
        if not np.issubdtype(a.dtype, np.floating):
            raise UserError(f"models.classifier: the classifier returned {name} as {a.dtype}, expected floating point; "
                            f"{fix}")
        bad = int(a.size - np.isfinite(a).sum())
        if bad:
            raise UserError(f"models.classifier: the classifier returned {bad} non-finite values (NaN/inf) in {name} "
                            f"({where}); {fix}, or models.generator if its images are not finite")


def sample_split(gen, clf, cfg: PairsConfig, split: str, group, progress: bool = True) -> dict:
    """Stream the pairs of one split into `group`; return per-class acceptance stats.

    The bar counts kept pairs and shows draws/s and each class's acceptance so far. A class
    the classifier keeps rejecting stops the stage within its first few hundred draws.
    """
    n_keep = cfg.n_train_per_class if split == "train" else cfg.n_test_per_class
    base = cfg.train_seed_base if split == "train" else cfg.test_seed_base
    app = h5.Appender(group, chunk_rows=min(1024, max(64, n_keep)))
    stats = {}
    bar = tqdm(total=n_keep * gen.n_classes, desc=f"sample_pairs/{split}", unit="pair", disable=not progress)
    t0, total_drawn = time.perf_counter(), 0
    for c in range(gen.n_classes):
        name = gen.class_names[c]
        kept = drawn = 0
        oks: list[np.ndarray] = []
        limit = int(np.ceil(cfg.max_draws_factor * n_keep))
        while kept < n_keep:
            if drawn >= limit or drawn >= cfg.class_stride:
                raise UserError(
                    f"sample_pairs.max_draws_factor: class '{name}' kept {kept} of {drawn} samples "
                    f"({split}); the classifier rejects this class's samples; raise max_draws_factor, set keep_correct: false, or improve the generator")
            # Draw only about as many as still needed (given the rate so far), whole batches.
            rate = kept / drawn if drawn else 1.0
            need = int(np.ceil((n_keep - kept) / max(rate, 0.05) * 1.05))
            m = min(cfg.batch_size, max(need, 1), limit - drawn)
            seeds = base + c * cfg.class_stride + np.arange(drawn, drawn + m, dtype=np.int64)
            w, r, logits = _draw(gen, clf, seeds, c, cfg.psi)
            check_model_output(clf, r, logits, name, seeds)
            ok = logits.argmax(1) == c if cfg.keep_correct else np.ones(m, bool)
            idx = np.flatnonzero(ok)[: n_keep - kept]
            total_drawn += m
            # Count as drawn only up to the last kept sample when we stop, so the rate does
            # not depend on how far the final batch overshot.
            drawn += m if kept + len(idx) < n_keep else int(idx[-1]) + 1
            if len(idx):
                app.append(w=w[idx], r=r[idx], logits=logits[idx], label=np.full(len(idx), c, np.int64), seed=seeds[idx])
            kept += len(idx)
            if cfg.keep_correct and kept < n_keep:
                oks.append(ok)
                early = _hopeless(np.concatenate(oks), cfg)
                if early is not None:
                    raise UserError(
                        f"sample_pairs: the classifier assigned only {early[0]} of the first {early[1]} samples drawn "
                        f"for class '{name}' ({split}) to that class; set sample_pairs.keep_correct: false, or check "
                        "that models.classifier's class_indices / preset name the generator's classes, in its order")
            accept = [f"{n} {s['acceptance']:.2f}" for n, s in stats.items()] + [f"{name} {kept / max(drawn, 1):.2f}"]
            bar.set_postfix_str(f"{total_drawn / max(time.perf_counter() - t0, 1e-9):.1f} draws/s, acceptance "
                                + ", ".join(accept[-8:]))
            bar.update(len(idx))
        stats[name] = {"kept": kept, "drawn": drawn, "acceptance": kept / drawn}
    bar.close()
    return stats


def sample_pairs(gen, clf, cfg: PairsConfig, path: str | os.PathLike, fingerprints: dict, progress: bool = True) -> dict:
    """Write both splits to `path` (atomically); return the acceptance metrics."""
    if tuple(gen.class_names) != tuple(clf.class_names):
        raise UserError(f"models: generator classes {list(gen.class_names)} differ from classifier classes {list(clf.class_names)}; "
                        "configure the classifier's class_names/class_indices to match the generator")
    span = gen.n_classes * cfg.class_stride
    if abs(cfg.test_seed_base - cfg.train_seed_base) < span:
        raise UserError(f"sample_pairs.test_seed_base must differ from train_seed_base by at least classes x class_stride = {span}, so train and test seeds never overlap")
    if max(cfg.train_seed_base, cfg.test_seed_base) + span >= 2**32:
        raise UserError("sample_pairs seed bases + classes x class_stride must stay below 2**32; lower them or class_stride")
    metrics = {}
    with h5.create(path) as f:
        h5.set_attrs(f, psi=cfg.psi, params=to_dict(cfg), class_names=list(gen.class_names),
                     w_dim=gen.w_dim, r_dim=clf.n_units, **fingerprints)
        for split in SPLITS:
            metrics[split] = sample_split(gen, clf, cfg, split, f.create_group(split), progress)
    return metrics


def load_pairs(path: str | os.PathLike, split: str, fields: tuple[str, ...] = DATASETS,
               expect: dict | None = None, r_dim: int | None = None) -> dict:
    """Arrays of one split; `expect` maps attribute names (fingerprints, dims) to required values;
    `r_dim`, the width of the classifier in use, is checked first (the commonest mix-up)."""
    with h5.open_checked(path, {split: fields}, producer="sample_pairs") as f:
        if r_dim is not None and "r" in f[split] and f[split]["r"].shape[1] != r_dim:
            raise UserError(f"{path}: pairs have r of {f[split]['r'].shape[1]} units but the classifier in "
                            f"models.classifier has a {r_dim}-unit penultimate layer; point models.classifier at the "
                            "classifier the pairs were made with, or rerun dvc repro sample_pairs")
        for key, value in (expect or {}).items():
            have = h5.get_attr(f, key)
            if have != value:
                raise UserError(f"{path}: made with {key}={have} but the current one is {value}; "
                                "rerun dvc repro sample_pairs so pairs match the models")
        _check_layout(path, f, split, fields)
        out = {k: f[split][k][:] for k in fields}
        out["attrs"] = {k: h5.get_attr(f, k) for k in f.attrs}
    n = {len(v) for k, v in out.items() if k != "attrs"}
    if len(n) != 1:
        raise UserError(f"{path}: datasets of '{split}' have different lengths {sorted(n)}; the file is damaged, rerun dvc repro sample_pairs")
    for k in FLOAT_DATASETS:
        if k in fields:
            _check_finite(path, f"{split}/{k}", out[k])
    return out


FLOAT_DATASETS = ("w", "r", "logits")
_WIDTH_ATTR = {"w": "w_dim", "r": "r_dim"}


def _check_layout(path, f, split: str, fields: tuple[str, ...]) -> None:
    """Dtype and width of each dataset against what sample_pairs writes and the file's own
    w_dim / r_dim, before anything is read: a pairs file edited or written by other code
    otherwise fails far from here (a matmul of mismatched widths in fit_link, integer r)."""
    fix = "rerun dvc repro sample_pairs (add --force if it says nothing changed)"
    for k in fields:
        ds = f[split][k]
        if k in FLOAT_DATASETS:
            if not np.issubdtype(ds.dtype, np.floating):
                raise UserError(f"{path}: {split}/{k} is stored as {ds.dtype}, expected floating point; {fix}")
            if ds.ndim != 2:
                raise UserError(f"{path}: {split}/{k} has shape {list(ds.shape)}, expected [pairs, dims]; {fix}")
            want = h5.get_attr(f, _WIDTH_ATTR[k]) if k in _WIDTH_ATTR else None
            if want is not None and ds.shape[1] != int(want):
                raise UserError(f"{path}: {split}/{k} has {ds.shape[1]} columns but the file's {_WIDTH_ATTR[k]} "
                                f"is {int(want)}; {fix}")
        elif k in ("label", "seed") and not np.issubdtype(ds.dtype, np.integer):
            raise UserError(f"{path}: {split}/{k} is stored as {ds.dtype}, expected integers; {fix}")


def _check_finite(path, name: str, a: np.ndarray, rows: int = 1 << 16) -> None:
    """No NaN/inf in a float dataset, by blocks of rows (no full-size temporary)."""
    bad = sum(int(a[i:i + rows].size - np.isfinite(a[i:i + rows]).sum()) for i in range(0, len(a), rows))
    if bad:
        raise UserError(f"{path}: {name} has {bad} non-finite values (NaN/inf); the models produced them or the "
                        "file was edited: check models.generator / models.classifier and rerun dvc repro sample_pairs")
