"""Similarity of the generator's latent space W and the classifier's space R (Fig. 3A).

Per repetition, a class-balanced subsample is drawn; k-means clusters in W and in R are
scored against the true classes (ARI), and the representational geometry of W and R
is compared (RSA). Controls that should score about 0 run on the same subsample:
labels or pairings shuffled, and a random space unrelated to classes and to W.

Every repetition draws from its own generator `default_rng([seed, repetition])`, so a
repetition's result does not depend on which worker ran it or in what order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from linkstyle.core.config import check
from linkstyle.core.errors import UserError

RSA_KINDS = ("correlation", "euclidean")
ARI_SPACES = ("W", "R", "control_shuffled", "control_random")
RSA_SPACES = ("W-R", "control_shuffled", "control_random")
COLUMNS = ("repetition", "analysis", "space", "value")


def _kmeans_labels(x: np.ndarray, n_clusters: int, n_init: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(x)


def kmeans_ari(x: np.ndarray, labels: np.ndarray, n_clusters: int, n_init: int = 20, seed: int = 0) -> float:
    """Adjusted Rand Index of k-means clusters of the rows of `x` against `labels`."""
    from sklearn.metrics import adjusted_rand_score

    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise UserError(f"similarity: kmeans_ari needs x of shape (n, d) and labels of shape (n,); "
                        f"got {x.shape} and {labels.shape}")
    if not 1 <= n_clusters <= x.shape[0]:
        raise UserError(f"similarity: n_clusters must be between 1 and the {x.shape[0]} rows, got {n_clusters}")
    return float(adjusted_rand_score(labels, _kmeans_labels(x, n_clusters, n_init, seed)))


def _upper_triangle(x: np.ndarray, kind: str) -> np.ndarray:
    from scipy.spatial.distance import pdist

    if kind == "euclidean":
        # pdist's condensed order is the row-major upper triangle, the same order as
        # triu_indices below, so both kinds line up pair for pair.
        return pdist(x, metric="euclidean")
    sim = np.corrcoef(x)
    return sim[np.triu_indices(x.shape[0], k=1)]


def rsa(xa: np.ndarray, xb: np.ndarray, kind: str) -> float:
    """Pearson correlation of the upper triangles of the two spaces' example-by-example matrices.

    kind "correlation": similarity = Pearson correlation between rows (examples);
    kind "euclidean": dissimilarity = Euclidean distance between rows.
    Row i of `xa` and row i of `xb` must be the same example; the columns may differ.
    A constant row has no correlation with anything and makes the result NaN.
    """
    if kind not in RSA_KINDS:
        raise UserError(f"similarity: RSA kind must be one of {', '.join(RSA_KINDS)}, got {kind!r}")
    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    if xa.ndim != 2 or xb.ndim != 2:
        raise UserError(f"similarity: RSA needs two 2-D arrays (examples x features); got {xa.shape} and {xb.shape}")
    if xa.shape[0] != xb.shape[0]:
        raise UserError(f"similarity: RSA spaces have {xa.shape[0]} and {xb.shape[0]} rows; "
                        "row i must be the same example in both")
    if xa.shape[0] < 3:
        raise UserError(f"similarity: RSA needs at least 3 examples, got {xa.shape[0]}")
    return float(np.corrcoef(_upper_triangle(xa, kind), _upper_triangle(xb, kind))[0, 1])


@dataclasses.dataclass(frozen=True)
class SimilarityConfig:
    """Options of the W-R similarity analysis; defaults are the paper's."""

    n_repetitions: int = 100
    per_class: int = 100
    n_init: int = 20
    seed: int = 0
    classes: Optional[tuple[int, ...]] = None  # the classes used; None = all in the data

    def __post_init__(self) -> None:
        check(self.n_repetitions >= 1, "n_repetitions", f"must be at least 1, got {self.n_repetitions}")
        check(self.per_class >= 1, "per_class", f"must be a positive number of examples per class, got {self.per_class}")
        check(self.n_init >= 1, "n_init", f"must be at least 1, got {self.n_init}")
        # default_rng rejects negative seed entries.
        check(self.seed >= 0, "seed", f"must be non-negative, got {self.seed}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            check(len(self.classes) >= 2, "classes", f"must list at least 2 classes (or be null for all), got {list(self.classes)}")
            check(len(set(self.classes)) == len(self.classes), "classes", f"has duplicates: {list(self.classes)}")


def _class_indices(labels: np.ndarray, cfg: SimilarityConfig) -> list[np.ndarray]:
    present, counts = np.unique(labels, return_counts=True)
    classes = present if cfg.classes is None else np.asarray(cfg.classes)
    available = dict(zip(present.tolist(), counts.tolist()))
    if len(classes) < 2:
        raise UserError(f"similarity: the data hold only class(es) {present.tolist()}; clustering needs at least 2")
    for c in classes.tolist():
        if c not in available:
            raise UserError(f"similarity: class {c} is not in the data (classes present: {present.tolist()}); "
                            "fix similarity.classes")
        if available[c] < cfg.per_class:
            raise UserError(f"similarity: class {c} has {available[c]} examples but per_class is {cfg.per_class}; "
                            "lower per_class or generate more pairs")
    return [np.flatnonzero(labels == c) for c in classes.tolist()]


def _repetition(rep: int, w: np.ndarray, r: np.ndarray, y: np.ndarray, n_clusters: int, n_init: int,
                rng: np.random.Generator) -> list[tuple]:
    """All analyses of one repetition on its subsample; `rng` continues the repetition's stream."""
    w = np.asarray(w, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    n, d = r.shape
    km_seed = int(rng.integers(2**31 - 1))
    label_perm = rng.permutation(n)
    row_perm = rng.permutation(n)
    # Mirrors the paper's "random linear projection" control: Gaussian points, sized
    # like R, sent through a random Gaussian map; nothing ties them to W or the classes.
    random_space = rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / math.sqrt(d))

    from sklearn.metrics import adjusted_rand_score

    clusters_r = _kmeans_labels(r, n_clusters, n_init, km_seed)
    rows = [
        ("ari", "W", kmeans_ari(w, y, n_clusters, n_init, km_seed)),
        ("ari", "R", float(adjusted_rand_score(y, clusters_r))),
        # Reuses R's clusters: only the labels are shuffled, so this is the chance level
        # of the very partition scored above.
        ("ari", "control_shuffled", float(adjusted_rand_score(y[label_perm], clusters_r))),
        ("ari", "control_random", kmeans_ari(random_space, y, n_clusters, n_init, km_seed)),
    ]
    for kind in RSA_KINDS:
        for space, other in (("W-R", r), ("control_shuffled", r[row_perm]), ("control_random", random_space)):
            rows.append((f"rsa_{kind}", space, rsa(w, other, kind)))
    return [(rep, analysis, space, value) for analysis, space, value in rows]


def _check_inputs(w: np.ndarray, r: np.ndarray, labels: np.ndarray) -> None:
    if w.ndim != 2 or r.ndim != 2:
        raise UserError(f"similarity: w and r must be 2-D (examples x features); got shapes {w.shape} and {r.shape}")
    if labels.ndim != 1:
        raise UserError(f"similarity: labels must be 1-D (one class per example); got shape {labels.shape}")
    if w.shape[0] != r.shape[0] or w.shape[0] != labels.shape[0]:
        raise UserError(f"similarity: w has {w.shape[0]} rows but r has {r.shape[0]} and labels {labels.shape[0]}; "
                        "row i of each must be the same example")
    for name, x in (("w", w), ("r", r)):
        if not np.isfinite(x).all():
            raise UserError(f"similarity: {name} contains NaN or infinite values; regenerate the paired data")


def run_similarity(w: np.ndarray, r: np.ndarray, labels: np.ndarray, cfg: SimilarityConfig,
                   progress: bool = True, n_jobs: int = 1) -> pd.DataFrame:
    """Run all repetitions; tidy table with columns repetition, analysis, space, value.

    analysis "ari" has spaces W, R, control_shuffled, control_random; analyses
    "rsa_correlation" and "rsa_euclidean" have spaces W-R, control_shuffled,
    control_random. The result is the same for any `n_jobs` (joblib workers).
    """
    from tqdm.auto import tqdm

    w = np.asarray(w)
    r = np.asarray(r)
    labels = np.asarray(labels)
    _check_inputs(w, r, labels)
    per_class_idx = _class_indices(labels, cfg)
    n_clusters = len(per_class_idx)

    def tasks() -> Iterator[tuple]:
        # Subsampling happens here so that workers receive only the few hundred rows
        # they need, not the full arrays; the generator travels with them, so the
        # rest of the repetition's stream is the same wherever it runs.
        for rep in range(cfg.n_repetitions):
            rng = np.random.default_rng([cfg.seed, rep])
            idx = np.concatenate([rng.choice(ix, size=cfg.per_class, replace=False) for ix in per_class_idx])
            yield rep, w[idx], r[idx], labels[idx], n_clusters, cfg.n_init, rng

    bar = tqdm(total=cfg.n_repetitions, desc="similarity", unit="rep", disable=not progress)
    rows: list[tuple] = []
    try:
        if n_jobs == 1:
            for task in tasks():
                rows.extend(_repetition(*task))
                bar.update()
        else:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_repetition)(*t) for t in tasks())
            for result in results:
                rows.extend(result)
                bar.update()
    finally:
        bar.close()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(df: pd.DataFrame) -> dict:
    """{analysis: {space: {mean, ci95_low, ci95_high, p2_5, p97_5, n}}} over repetitions.

    The CI is that of the mean (t-distribution); p2_5 and p97_5 are the spread of the
    single repetitions. With one repetition the CI is undefined (NaN).
    """
    from scipy import stats

    out: dict = {}
    for (analysis, space), group in df.groupby(["analysis", "space"], sort=True):
        v = group["value"].to_numpy(dtype=np.float64)
        n = len(v)
        mean = float(np.mean(v))
        if n >= 2:
            half = float(stats.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / math.sqrt(n))
        else:
            half = float("nan")
        p_lo, p_hi = np.percentile(v, [2.5, 97.5])
        out.setdefault(str(analysis), {})[str(space)] = {
            "mean": mean, "ci95_low": mean - half, "ci95_high": mean + half,
            "p2_5": float(p_lo), "p97_5": float(p_hi), "n": int(n),
        }
    return out


def plot_rows(df: pd.DataFrame) -> list[dict]:
    """One row per repetition for a DVC plot: ari_W, ari_R, rsa_correlation, ... .

    Key is the analysis for the W-R pair itself, analysis_space otherwise.
    """
    rows: dict[int, dict] = {}
    for rep, analysis, space, value in df[list(COLUMNS)].itertuples(index=False):
        key = analysis if space == "W-R" else f"{analysis}_{space}"
        rows.setdefault(int(rep), {"repetition": int(rep)})[key] = float(value)
    return [rows[k] for k in sorted(rows)]
