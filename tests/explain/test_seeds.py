"""Tests for linkstyle.explain.seeds: round-robin picking and its one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from linkstyle.core.errors import UserError
from linkstyle.explain import tuning
from linkstyle.explain.seeds import pick_seeds


def test_round_robin_in_pair_order():
    labels = np.array([0, 1, 0, 2, 0, 1, 2])
    np.testing.assert_array_equal(pick_seeds(labels, 5, 3), [0, 1, 3, 2, 5])
    # a class that runs out is skipped; the others go on
    np.testing.assert_array_equal(pick_seeds(labels, 7, 3), [0, 1, 3, 2, 5, 6, 4])


def test_same_seeds_as_tune_units():
    """invariances starts from the seeds tune_units tunes (tuning.pick_seeds is the original)."""
    labels = np.random.default_rng(0).integers(0, 5, 300)
    for n in (1, 7, 20, 50):
        np.testing.assert_array_equal(pick_seeds(labels, n, 5), tuning.pick_seeds(labels, n, 5))


def test_too_many_seeds_names_the_param():
    with pytest.raises(UserError, match="^invariances.n_seeds: asked for 9 seeds but the test pairs hold only 7; lower it$"):
        pick_seeds(np.array([0, 1, 0, 2, 0, 1, 2]), 9, 3, "invariances.n_seeds")
