"""Tests for linkstyle.sparsity: Hoyer sparsity conventions and the per-unit label table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkstyle.analyze.sparsity import hoyer, label_sparsity
from linkstyle.core.errors import UserError


def test_one_hot_is_one_and_constant_is_zero():
    assert hoyer([0, 0, 3.5, 0]) == pytest.approx(1.0)
    assert hoyer([2, 2, 2, 2, 2]) == pytest.approx(0.0)
    assert hoyer([-1, 1, -1]) == pytest.approx(0.0)  # absolute values


def test_known_value_and_range():
    x = np.array([1.0, 2.0, 0.0, 0.0])
    expected = (2 - 3 / np.sqrt(5)) / (2 - 1)
    assert hoyer(x) == pytest.approx(expected)
    vals = hoyer(np.random.default_rng(0).normal(size=(200, 7)))
    assert vals.shape == (200,)
    assert ((vals >= 0) & (vals <= 1)).all()


def test_scale_invariance_including_extreme_scales():
    x = np.array([0.3, 1.0, 0.1, 0.0, 2.0])
    for s in (1e-200, 1e-3, 7.0, 1e200):
        assert hoyer(s * x) == pytest.approx(hoyer(x))


def test_zero_vector_and_single_label_edge_cases():
    assert np.isnan(hoyer([0.0, 0.0, 0.0]))
    assert hoyer([0.0, 0.0, 0.0], zero=0.0) == 0.0
    assert np.isnan(hoyer([5.0]))
    assert np.isnan(hoyer([]))


def test_nans_are_ignored():
    assert hoyer([1.0, 0.0, np.nan]) == pytest.approx(hoyer([1.0, 0.0]))
    assert hoyer([np.nan, 2.0, 2.0, np.inf]) == pytest.approx(0.0)
    assert np.isnan(hoyer([np.nan, 3.0]))  # one finite entry left


def test_axis_argument():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(hoyer(x, axis=0), [0.0, 1.0])
    np.testing.assert_allclose(hoyer(x.T, axis=-1), [0.0, 1.0])
    with pytest.raises(UserError):
        hoyer(3.0)


def test_label_sparsity_per_unit_and_metric():
    rows = []
    for seed in range(3):
        for part in ("body", "head", "tail"):
            rows.append((0, seed, part, "area", 0.5 if part == "head" else 0.0))       # unit 0: head only
            rows.append((0, seed, part, "luminance", -0.2))                             # unit 0: all parts
            rows.append((1, seed, part, "area", np.nan if part == "tail" else 1.0))    # unit 1: tail missing
    changes = pd.DataFrame(rows, columns=["unit", "seed", "part", "metric", "change"])
    out = label_sparsity(changes)
    assert list(out.columns) == ["unit", "metric", "sparsity", "n_labels", "top_label", "top_value"]
    assert list(zip(out.unit, out.metric)) == [(0, "area"), (0, "luminance"), (1, "area")]
    np.testing.assert_allclose(out.sparsity, [1.0, 0.0, 0.0], atol=1e-12)
    assert out.top_label.iloc[0] == "head"
    assert out.top_value.iloc[0] == pytest.approx(0.5)
    assert out.n_labels.tolist() == [3, 3, 2]
    with pytest.raises(UserError, match="change"):
        label_sparsity(changes.rename(columns={"change": "value"}))
