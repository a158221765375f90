"""ground_truth_agreement on constructed change tables whose correlations are known."""

import numpy as np
import pandas as pd
import pytest

from linkstyle.measure.quantify import ground_truth_agreement


def _table(seg_by_metric, gt_by_metric):
    rows = []
    for source, by_metric in (("segmenter", seg_by_metric), ("ground_truth", gt_by_metric)):
        for metric, values in by_metric.items():
            for i, v in enumerate(values):
                rows.append(dict(source=source, unit=i % 7, seed=i, **{"class": 0}, part="body",
                                 metric=metric, change=v))
    return pd.DataFrame(rows)


def test_identical_sources_agree_perfectly():
    rng = np.random.default_rng(0)
    by = {m: rng.normal(size=50) for m in ("area", "luminance", "entropy_mean", "angle")}
    out = ground_truth_agreement(_table(by, by))
    assert out["pooled"] == pytest.approx(1.0) and out["pooled_all"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in out["per_metric"].values())
    assert out["per_metric_spearman"]["angle"] == pytest.approx(1.0)
    assert out["n_rows"] == 200 and out["pooled_metrics"] == ["area", "luminance", "entropy_mean"]


def test_pooled_covers_only_its_metrics_and_spearman_ignores_one_outlier():
    rng = np.random.default_rng(1)
    gt = {m: rng.normal(size=200) for m in ("area", "luminance", "entropy_mean", "angle")}
    seg = {m: v.copy() for m, v in gt.items()}
    seg["angle"] = rng.normal(size=200)  # unrelated: drags pooled_all down, not pooled
    seg["area"][0] = 1e3  # one wild relative change: Pearson collapses, Spearman barely moves
    out = ground_truth_agreement(_table(seg, gt))
    assert abs(out["per_metric"]["angle"]) < 0.2
    assert out["per_metric"]["area"] < 0.2 and out["per_metric_spearman"]["area"] > 0.95
    assert out["per_metric"]["luminance"] == pytest.approx(1.0)
    assert out["pooled_all"] < out["pooled"]


def test_one_source_only_gives_nothing():
    t = _table({"area": [1.0, 2.0, 3.0]}, {})
    assert ground_truth_agreement(t) == {}
