"""Which test pairs an explanation starts from: round-robin over the classes, in pair order.

Shared by the stages that explain R from a handful of test seeds, so that `invariances`
picks the very seeds `tune_units` tunes, and an edit to one stage's code does not rerun the
other (each stage depends on this small module, not on the other's).
"""

from __future__ import annotations

import numpy as np

from linkstyle.core.errors import UserError


def pick_seeds(labels: np.ndarray, n_seeds: int, n_classes: int, where: str = "n_seeds") -> np.ndarray:
    """Indices of n_seeds test pairs, round-robin over classes, in pair order within a class.

    `where` names the param in the one-line error when the pairs run out (e.g. 'invariances.n_seeds').
    """
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in range(n_classes)]
    picked, k = [], 0
    while len(picked) < n_seeds:
        if all(k >= len(ix) for ix in per_class):
            raise UserError(f"{where}: asked for {n_seeds} seeds but the test pairs hold only {len(labels)}; lower it")
        for ix in per_class:
            if k < len(ix) and len(picked) < n_seeds:
                picked.append(ix[k])
        k += 1
    return np.asarray(picked)
