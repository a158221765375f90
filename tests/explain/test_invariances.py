"""Tests for linkstyle.explain.invariances and its figures: the sampling run on tiny models,
the factor ratios by hand, determinism, and one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.explain.invariances import (
    InvarianceConfig,
    _nanvar,
    baseline_indices,
    cosine,
    factor_table,
    run_invariances,
    summarize_invariances,
)
from linkstyle.link.inn import INNConfig, fit_inn
from linkstyle.report.invariances import plot_invariance_samples, plot_invariant_factors


def make_pairs(gen, clf, n_per_class: int, seed_base: int) -> dict:
    classes = np.repeat(np.arange(gen.n_classes), n_per_class)
    seeds = seed_base + np.arange(len(classes))
    w = gen.sample_w(seeds, classes, 0.7)
    r, _ = clf.represent(gen.synthesize(w))
    return {"w": w.numpy(), "r": r.numpy(), "label": classes, "seed": seeds}


@pytest.fixture(scope="module")
def setup(tiny_gen, tiny_clf):
    train = make_pairs(tiny_gen, tiny_clf, 30, 100)
    test = make_pairs(tiny_gen, tiny_clf, 6, 9000)
    cfg = INNConfig(mean="ridge", n_blocks=2, hidden=8, embed_dim=4, embed_hidden=8, epochs=2, seed=0)
    inn, _ = fit_inn(train["r"], train["w"], cfg, progress=False)
    return tiny_gen, tiny_clf, inn, test


def small_cfg(**kw) -> InvarianceConfig:
    base = dict(n_seeds=5, n_samples=3, n_baseline_per_class=6, n_figure_seeds=2, n_figure_samples=2,
                min_part_area=0.0, device="cpu")
    return InvarianceConfig(**{**base, **kw})


def test_run_writes_every_sample_and_does_not_depend_on_the_batch(setup, tmp_path):
    gen, clf, inn, test = setup
    a = run_invariances(gen, clf, inn, test, small_cfg(batch_size=4), tmp_path / "a.h5", {"x": "1"}, progress=False)
    b = run_invariances(gen, clf, inn, test, small_cfg(batch_size=64), tmp_path / "b.h5", {"x": "1"}, progress=False)
    S, K, res = 5, 3, gen.resolution
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        assert fa["renders"].shape == (S, K, res, res, 3) and fa["parts"].shape == (S, K, res, res)
        assert fa["r_tilde"].shape == (S, K, clf.n_units) and fa["w"].shape == (S, K, gen.w_dim)
        assert fa["factors"].shape == (S, K, len(gen.part_names), 2)
        assert np.abs(fa["renders"][:].astype(int) - fb["renders"][:]).max() <= 1, "renders do not depend on the batch"
        np.testing.assert_allclose(fa["w"][:], fb["w"][:], atol=1e-5)
        # cosine is cos(r~, r) of the stored arrays, for every sample
        r_t, r = fa["r_tilde"][:], fa["r"][:]
        np.testing.assert_allclose(fa["cosine"][:], cosine(r_t, r[:, None]), atol=1e-5)
        # seeds round-robin over the classes, first pairs of each class
        np.testing.assert_array_equal(fa["classes"][:], np.arange(S) % gen.n_classes)
        assert fa.attrs["x"] == "1"
    np.testing.assert_allclose(a["cosine"], b["cosine"], atol=1e-4)
    # the figure keeps the first n_figure_seeds seeds, n_figure_samples samples each
    assert a["figure"]["renders"].shape == (2, 2, res, res, 3)
    m = summarize_invariances(a, small_cfg())
    assert m["n_seeds"] == S and m["n_samples"] == K and 0 <= m["class_agreement"] <= 1
    assert len(m["factors"]) == len(gen.part_names) * 2
    assert set(m["invariant_factors"]) | set(m["encoded_factors"]) <= {f"{r['part']} {r['metric']}" for r in m["factors"]}
    plot_invariance_samples(a["figure"], a["classes"], a["cosine"], gen.class_names, tmp_path / "s.png")
    plot_invariant_factors(m, 0.5, tmp_path / "f.png")
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_same_params_same_bytes(setup, tmp_path):
    gen, clf, inn, test = setup
    for name in ("a.h5", "b.h5"):
        run_invariances(gen, clf, inn, test, small_cfg(), tmp_path / name, {}, progress=False)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_factor_ratios_by_hand():
    """Seed 0 of class 0: part 0 area varies among the samples as much as across the class (ratio 1),
    part 1 area is fixed among them (ratio 0); part 2 is too small to count."""
    rng = np.random.default_rng(0)
    S, K, N = 1, 2000, 2000
    base = np.zeros((N, 3, 1))
    base[:, 0, 0] = 100 + 10 * rng.normal(size=N)
    base[:, 1, 0] = 50 + 5 * rng.normal(size=N)
    base[:, 2, 0] = rng.uniform(0, 2, size=N)
    samples = np.zeros((S, K, 3, 1))
    samples[0, :, 0, 0] = 100 + 10 * rng.normal(size=K)
    samples[0, :, 1, 0] = 47.0
    samples[0, :, 2, 0] = rng.uniform(0, 2, size=K)
    res = {"factors": samples, "baseline_factors": base, "baseline_classes": np.zeros(N, int), "classes": np.zeros(S, int),
           "baseline_areas": base[:, :, 0], "part_names": ["a", "b", "c"], "metrics": ["area"], "class_names": ["x"]}
    rows = {r["part"]: r for r in factor_table(res, InvarianceConfig(min_part_area=5.0, invariant_ratio=0.5))}
    assert rows["a"]["ratio"] == pytest.approx(1.0, abs=0.05) and rows["a"]["invariant"]
    assert rows["b"]["ratio"] == 0.0 and not rows["b"]["invariant"]
    assert rows["c"]["skipped"] and not rows["c"]["invariant"]
    assert rows["a"]["std_class"] == pytest.approx(10.0, rel=0.05) and rows["b"]["mean_area"] == pytest.approx(50, rel=0.01)
    assert rows["a"]["ratio_per_class"] == {"x": rows["a"]["ratio"]}


def test_nanvar_skips_absent_parts():
    x = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 2.0]])
    np.testing.assert_allclose(_nanvar(x, axis=1), [2.0, np.nan])
    np.testing.assert_allclose(_nanvar(x.T, axis=0), [2.0, np.nan])


def test_baseline_is_the_first_pairs_of_the_seed_classes():
    labels = np.array([0, 1, 0, 2, 0, 1])
    np.testing.assert_array_equal(baseline_indices(labels, np.array([0, 1, 0]), 2), [0, 2, 1, 5])
    np.testing.assert_allclose(cosine([[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]), [2 ** -0.5, 0.0])


@pytest.mark.parametrize("kw,message", [
    ({"n_samples": 1}, "n_samples must be >= 2"),
    ({"metrics": ["area", "size"]}, "metrics must list some of area, luminance"),
    ({"metrics": ["area", "area"]}, "metrics lists a metric twice"),
    ({"temperature": 0.0}, "temperature must be positive"),
    ({"n_baseline_per_class": 1}, "n_baseline_per_class must be >= 2"),
])
def test_bad_params_are_one_line_errors(kw, message):
    with pytest.raises(UserError, match=message) as e:
        from_params(InvarianceConfig, kw, "invariances", source="params.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("params.yaml: invariances.")


def test_too_many_seeds_is_a_one_line_error(setup, tmp_path):
    gen, clf, inn, test = setup
    with pytest.raises(UserError, match="invariances.n_seeds: asked for 99 seeds but the test pairs hold only 30"):
        run_invariances(gen, clf, inn, test, small_cfg(n_seeds=99), tmp_path / "x.h5", {}, progress=False)
    assert not (tmp_path / "x.h5").exists()
