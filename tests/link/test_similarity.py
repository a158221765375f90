import numpy as np
import pandas as pd
import pytest

from linkstyle.core.errors import UserError
from linkstyle.link.similarity import (
    SimilarityConfig,
    kmeans_ari,
    plot_rows,
    rsa,
    run_similarity,
    summarize,
)
from linkstyle.report.similarity import plot_similarity


def blobs(n_classes=4, per_class=40, dim=8, sep=10.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centers[labels] + rng.normal(size=(len(labels), dim))
    return x, labels


@pytest.fixture(scope="module")
def paired():
    w, labels = blobs(n_classes=4, per_class=30, dim=8)
    rng = np.random.default_rng(1)
    r = w @ rng.normal(size=(8, 16)) + 0.5 * rng.normal(size=(len(w), 16))
    return w, r, labels


@pytest.fixture(scope="module")
def small_cfg():
    return SimilarityConfig(n_repetitions=5, per_class=20, n_init=3, seed=7)


@pytest.fixture(scope="module")
def result(paired, small_cfg):
    w, r, labels = paired
    return run_similarity(w, r, labels, small_cfg, progress=False)


@pytest.mark.parametrize("kind", ["correlation", "euclidean"])
def test_rsa_identical_and_shuffled(kind):
    x = np.random.default_rng(0).normal(size=(150, 10))
    assert rsa(x, x, kind) == pytest.approx(1.0)
    shuffled = x[np.random.default_rng(1).permutation(len(x))]
    assert abs(rsa(x, shuffled, kind)) < 0.1


def test_rsa_bad_kind():
    x = np.zeros((5, 2))
    with pytest.raises(UserError, match="RSA kind"):
        rsa(x, x, "cosine")


def test_kmeans_ari_blobs_and_random_labels():
    x, labels = blobs()
    assert kmeans_ari(x, labels, 4, n_init=3) == pytest.approx(1.0)
    random_labels = np.random.default_rng(3).integers(0, 4, len(labels))
    assert abs(kmeans_ari(x, random_labels, 4, n_init=3)) < 0.1


def test_run_similarity_values(result, small_cfg):
    assert list(result.columns) == ["repetition", "analysis", "space", "value"]
    assert len(result) == small_cfg.n_repetitions * (4 + 3 + 3)
    mean = result.groupby(["analysis", "space"])["value"].mean()
    assert mean["ari", "W"] > 0.9 and mean["ari", "R"] > 0.9
    assert mean["rsa_correlation", "W-R"] > 0.5 and mean["rsa_euclidean", "W-R"] > 0.5
    for analysis in ["ari", "rsa_correlation", "rsa_euclidean"]:
        for space in ["control_shuffled", "control_random"]:
            assert abs(mean[analysis, space]) < 0.15, (analysis, space)


def test_run_similarity_reproducible(paired, small_cfg, result):
    w, r, labels = paired
    again = run_similarity(w, r, labels, small_cfg, progress=False)
    pd.testing.assert_frame_equal(result, again, check_exact=True)
    parallel = run_similarity(w, r, labels, small_cfg, progress=False, n_jobs=2)
    pd.testing.assert_frame_equal(result, parallel, check_exact=True)
    other_seed = SimilarityConfig(n_repetitions=5, per_class=20, n_init=3, seed=8)
    assert not result.equals(run_similarity(w, r, labels, other_seed, progress=False))


def test_run_similarity_class_subset(paired):
    w, r, labels = paired
    cfg = SimilarityConfig(n_repetitions=2, per_class=10, n_init=2, classes=(0, 2))
    df = run_similarity(w, r, labels, cfg, progress=False)
    assert (df.loc[df["analysis"] == "ari", "value"].iloc[:2] > 0.9).all()


def test_summarize(result):
    s = summarize(result)
    assert set(s) == {"ari", "rsa_correlation", "rsa_euclidean"}
    assert set(s["ari"]) == {"W", "R", "control_shuffled", "control_random"}
    assert set(s["rsa_euclidean"]) == {"W-R", "control_shuffled", "control_random"}
    for spaces in s.values():
        for stats in spaces.values():
            assert set(stats) == {"mean", "ci95_low", "ci95_high", "p2_5", "p97_5", "n"}
            assert stats["n"] == 5
            assert stats["ci95_low"] <= stats["mean"] <= stats["ci95_high"]
            assert stats["p2_5"] <= stats["p97_5"]
            assert all(type(v) in (float, int) for v in stats.values())


def test_plot_rows(result):
    rows = plot_rows(result)
    assert [row["repetition"] for row in rows] == list(range(5))
    assert {"ari_W", "ari_R", "rsa_correlation", "rsa_euclidean", "ari_control_random"} <= set(rows[0])


def test_bad_inputs(paired):
    w, r, labels = paired
    cfg = SimilarityConfig(n_repetitions=1, per_class=5, n_init=1)
    with pytest.raises(UserError, match="w has 120 rows but r has 119"):
        run_similarity(w, r[:-1], labels, cfg, progress=False)
    with pytest.raises(UserError, match=r"class \d has 30 examples but per_class is 31"):
        run_similarity(w, r, labels, SimilarityConfig(per_class=31), progress=False)
    with pytest.raises(UserError, match="class 9 is not in the data"):
        run_similarity(w, r, labels, SimilarityConfig(per_class=5, classes=(0, 9)), progress=False)
    with pytest.raises(UserError, match="per_class must be a positive"):
        SimilarityConfig(per_class=0)
    with pytest.raises(UserError, match="n_repetitions"):
        SimilarityConfig(n_repetitions=0)


def test_plot_similarity(result, tmp_path):
    out = tmp_path / "fig" / "similarity.png"
    plot_similarity(result, out)
    assert out.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in out.parent.iterdir()] == ["similarity.png"]
