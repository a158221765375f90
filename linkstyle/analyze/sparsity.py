"""Label sparsity of a unit's effect (docs/method.md section 6).

The paper does not publish its sparsity formula; this project uses Hoyer sparsity of
the absolute change vector over labels (parts):

    hoyer(x) = (sqrt(n) - ||x||_1 / ||x||_2) / (sqrt(n) - 1),

1 when one label carries all the change, 0 when all labels change equally, and
invariant to the scale of x (so area and luminance changes compare on one footing).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from linkstyle.core.errors import UserError


def hoyer(x, axis: int = -1, zero: float = np.nan):
    """Hoyer sparsity in [0, 1] of |x| along `axis` (the axis is reduced away).

    Conventions:
    - NaN and +-inf entries are ignored: n counts the finite entries only, so a part
      left out for one unit does not count as "no change".
    - fewer than two finite entries -> NaN: with one label, concentration on "few
      labels" is not defined (the formula is 0/0).
    - all finite entries zero -> `zero` (default NaN): the unit changed nothing, which
      is neither sparse nor dense; pass zero=0.0 to count such units as not sparse.
    Returns a float for 1-D input, else an array.
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    if a.ndim == 0:
        raise UserError("hoyer needs at least a 1-D array of values over labels, got a scalar")
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    n = finite.sum(axis=axis)
    # Scale by the max first: ||x||_1/||x||_2 is scale-free, and this keeps tiny or huge
    # values from under- or overflowing in the squares.
    peak = a.max(axis=axis, keepdims=True, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = a / np.where(peak > 0, peak, 1.0)
        l1 = a.sum(axis=axis)
        l2 = np.sqrt((a * a).sum(axis=axis))
        root = np.sqrt(n)
        s = (root - l1 / l2) / (root - 1.0)
    s = np.clip(s, 0.0, 1.0)
    s = np.where(l2 > 0, s, zero)
    s = np.where(n >= 2, s, np.nan)
    return float(s) if s.ndim == 0 else s


def label_sparsity(changes: pd.DataFrame, *, by: Sequence[str] = ("unit",), label_col: str = "part",
                   metric_col: str = "metric", value_col: str = "change", zero: float = np.nan) -> pd.DataFrame:
    """Per (by..., metric): Hoyer sparsity over labels of the mean |change| across items.

    `changes` is the tidy table of `linkstyle.parts.part_changes` (or any table with
    the named columns); the mean runs over all rows of a (by..., metric, label) group,
    i.e. over test seeds, NaNs skipped. Returns columns by..., metric, sparsity,
    n_labels (labels with a finite mean), top_label (largest mean |change|) and
    top_value (that mean |change|), one row per group, sorted by by... then metric in
    order of first appearance.
    """
    by = list(by)
    need = by + [label_col, metric_col, value_col]
    missing = [c for c in need if c not in changes.columns]
    if missing:
        raise UserError(f"label_sparsity: changes lack column {missing[0]!r}; it needs {', '.join(need)}")
    out_cols = by + [metric_col, "sparsity", "n_labels", "top_label", "top_value"]
    if changes.empty:
        return pd.DataFrame(columns=out_cols)
    frame = changes[by + [label_col, metric_col]].copy()
    frame["_abs"] = changes[value_col].astype(np.float64).abs()
    mean = frame.groupby(by + [metric_col, label_col], sort=False)["_abs"].mean()
    wide = mean.unstack(label_col)
    values = wide.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    top = np.where(finite, values, -np.inf).argmax(axis=1)
    any_finite = finite.any(axis=1)
    result = wide.index.to_frame(index=False)
    result["sparsity"] = hoyer(values, axis=1, zero=zero)
    result["n_labels"] = finite.sum(axis=1)
    result["top_label"] = np.where(any_finite, np.asarray(wide.columns, dtype=object)[top], None)
    result["top_value"] = np.where(any_finite, values[np.arange(len(values)), top], np.nan)
    metric_order = {m: i for i, m in enumerate(pd.unique(changes[metric_col]))}
    result["_m"] = result[metric_col].map(metric_order)
    result = result.sort_values(by + ["_m"], kind="stable").drop(columns="_m").reset_index(drop=True)
    return result[out_cols]
