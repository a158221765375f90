"""Tests for linkstyle.link: fits recover known maps, metrics, persistence, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.link.fit import LINK_KINDS, check_kind, fit_link, link_metrics, predict_w
from linkstyle.link.linear import (
    RIDGE_ALPHAS,
    LinearLink,
    OLSConfig,
    RidgeConfig,
    fit_ols,
    fit_ridge,
)
from linkstyle.link.mlp import MLPConfig, MLPLink, fit_mlp
from linkstyle.link.store import load_link, save_link


def linear_pairs(n, r_dim, w_dim, noise, seed=0):
    rng = np.random.default_rng(seed)
    r = np.abs(rng.normal(size=(n, r_dim)))  # penultimate layers are non-negative
    a = rng.normal(size=(w_dim, r_dim))
    b = rng.normal(size=w_dim)
    w = r @ a.T + b + noise * rng.normal(size=(n, w_dim))
    return r, w, a, b


def nonlinear_pairs(n, seed=0):
    maps = np.random.default_rng(1234)  # the same map for training and test draws
    a = maps.normal(size=(3, 6)) / 2
    c = maps.normal(size=(3, 6)) / 2
    rng = np.random.default_rng(seed)
    r = np.abs(rng.normal(size=(n, 6)))
    w = r @ a.T + np.tanh(2 * (r @ c.T - 1.0)) + 0.3 * np.sin(2 * r[:, :3]) + 0.02 * rng.normal(size=(n, 3))
    return r, w


def small_mlp_cfg(**kw):
    base = dict(hidden=64, epochs=40, lr=3e-3, batch_size=128, patience=40, seed=3)
    return MLPConfig(**{**base, **kw})


def test_ols_recovers_known_map():
    r, w, a, b = linear_pairs(500, 12, 5, noise=1e-4)
    link = fit_ols(r, w)[0]
    assert isinstance(link, LinearLink) and (link.r_dim, link.w_dim) == (12, 5)
    assert link.weight.dtype == torch.float32
    np.testing.assert_allclose(link.weight.double().numpy(), a, atol=1e-4)
    np.testing.assert_allclose(link.bias.double().numpy(), b, atol=1e-3)
    m = link_metrics(w, predict_w(link, r))
    assert m["r2"] > 0.999999 and m["mse"] < 1e-6


def test_ols_rank_deficient_is_finite():
    r, w, _, _ = linear_pairs(20, 40, 3, noise=0.1)  # fewer pairs than units
    r[:, 5] = 0.0  # a dead unit
    link = fit_ols(r, w)[0]
    assert torch.isfinite(link.weight).all()
    assert link_metrics(w, predict_w(link, r))["r2"] > 0.999


def test_ridge_alpha_follows_noise():
    r, w, _, _ = linear_pairs(400, 10, 4, noise=1e-3)
    _, clean = fit_ridge(r, w, cv_folds=5, seed=0)
    r, w, _, _ = linear_pairs(30, 80, 4, noise=5.0, seed=1)
    _, noisy = fit_ridge(r, w, cv_folds=5, seed=0)
    assert clean["alpha"] <= 1e-2
    assert noisy["alpha"] >= 100 * clean["alpha"] and noisy["alpha"] >= 1.0
    assert len(clean["cv_mse"]) == len(clean["alphas"]) == len(RIDGE_ALPHAS)
    assert clean["alpha"] == clean["alphas"][int(np.argmin(clean["cv_mse"]))]


def test_ridge_small_alpha_matches_ols():
    r, w, _, _ = linear_pairs(200, 15, 4, noise=0.5, seed=2)
    ridge, info = fit_ridge(r, w, alphas=(1e-9,), cv_folds=3)
    ols = fit_ols(r, w)[0]
    assert info["alpha"] == 1e-9
    torch.testing.assert_close(ridge.weight, ols.weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ridge.bias, ols.bias, atol=1e-5, rtol=1e-5)


def test_mlp_beats_ols_on_nonlinear_map_and_is_deterministic():
    r, w = nonlinear_pairs(1500)
    r_test, w_test = nonlinear_pairs(500, seed=9)
    cfg = small_mlp_cfg()
    mlp, info = fit_mlp(r, w, cfg, progress=False)
    assert isinstance(mlp, MLPLink) and info["best_epoch"] > 0
    r2_mlp = link_metrics(w_test, predict_w(mlp, r_test))["r2"]
    r2_ols = link_metrics(w_test, predict_w(fit_ols(r, w)[0], r_test))["r2"]
    assert 1 - r2_mlp < 0.5 * (1 - r2_ols), (r2_mlp, r2_ols)  # at most half the unexplained variance

    again, info2 = fit_mlp(r, w, cfg, progress=False)
    assert info2["val_mse"] == info["val_mse"]
    for (k, v), (k2, v2) in zip(mlp.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_fit_link_every_registered_kind():
    r, w = nonlinear_pairs(300)
    cfgs = {"ols": OLSConfig(), "ridge": RidgeConfig(cv_folds=3), "mlp": small_mlp_cfg(epochs=3)}
    assert list(LINK_KINDS) == ["ols", "ridge", "mlp"]
    for kind, cfg in cfgs.items():
        module, info = fit_link(kind, r, w, cfg, progress=False)
        assert isinstance(module, LINK_KINDS[kind].module) and module.kind == kind
        assert info["kind"] == kind and 0 < info["train_r2"] <= 1
        assert module(torch.from_numpy(r[:4])).shape == (4, 3)
    with pytest.raises(UserError, match=r"^--kind: unknown link kind 'lasso'; known kinds are ols, ridge, mlp$"):
        check_kind("lasso", "--kind")


def test_link_metrics_hand_checked():
    t = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    perfect = link_metrics(t, t)
    assert perfect["mse"] == 0.0 and perfect["r2"] == 1.0 and perfect["r2_per_dim"] == [1.0, 1.0]
    mean = link_metrics(t, np.broadcast_to(t.mean(0), t.shape))
    assert mean["r2"] == pytest.approx(0.0) and mean["r2_mean_over_dims"] == pytest.approx(0.0)
    # dim 0 off by 1 everywhere: sse 3, sst 8; dim 1 exact: sst 32
    off = t.copy()
    off[:, 0] += 1
    m = link_metrics(torch.tensor(t), torch.tensor(off))
    assert m["mse"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 3 / 40)
    assert m["r2_per_dim"] == pytest.approx([1 - 3 / 8, 1.0])
    assert all(type(v) is float for v in (m["mse"], m["r2"], m["r2_mean_over_dims"]))


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_save_load_round_trip(tmp_path, kind):
    r, w = nonlinear_pairs(200)
    if kind == "mlp":
        module, info = fit_mlp(r, w, small_mlp_cfg(epochs=2), progress=False)
    else:
        module, info = fit_ridge(r, w, cv_folds=3)
    path = tmp_path / "link.pt"
    save_link(path, module, info, pairs_fingerprint="abc")
    loaded = load_link(path, r_dim=6, w_dim=3, expect={"pairs_fingerprint": "abc"})
    assert type(loaded) is type(module) and not loaded.training
    x = torch.from_numpy(r[:50]).float()
    with torch.no_grad():
        assert torch.equal(module(x), loaded(x))
    assert loaded.kind == kind and (loaded.r_dim, loaded.w_dim) == (6, 3)
    assert loaded.info == info  # plain floats and lists survive weights_only loading
    with pytest.raises(UserError, match="link was fitted with pairs_fingerprint=abc but the current one is xyz"):
        load_link(path, expect={"pairs_fingerprint": "xyz"})


def test_load_link_errors_name_the_file(tmp_path):
    r, w, _, _ = linear_pairs(50, 8, 4, noise=0.1)
    path = tmp_path / "link.pt"
    save_link(path, fit_ols(r, w)[0], {})
    with pytest.raises(UserError, match=r"link maps r of 8 units to w of 4 dims, but the classifier has 16 units"):
        load_link(path, r_dim=16)
    with pytest.raises(UserError, match="generator's w has 512 dims") as e:
        load_link(path, w_dim=512)
    assert str(path) in str(e.value)

    with pytest.raises(UserError) as e:
        load_link(tmp_path / "missing.pt")
    assert str(tmp_path / "missing.pt") in str(e.value)

    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        load_link(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_bad_inputs_raise_user_error():
    r, w, _, _ = linear_pairs(20, 5, 2, noise=0.1)
    with pytest.raises(UserError, match="r has 20 rows but w has 19"):
        fit_ols(r, w[:19])
    r_nan = r.copy()
    r_nan[3, 1] = np.nan
    with pytest.raises(UserError, match="non-finite"):
        fit_ridge(r_nan, w)
    with pytest.raises(UserError, match="at least 5 pairs"):
        fit_ridge(r[:3], w[:3], cv_folds=5)


def test_bad_config_raises_user_error():
    with pytest.raises(UserError, match=r"params.yaml: fit_link.ridge.cv_folds must be at least 2"):
        from_params(RidgeConfig, {"cv_folds": 1}, "fit_link.ridge")
    with pytest.raises(UserError, match="lr must be positive"):
        MLPConfig(lr=0.0)
    with pytest.raises(UserError, match="unknown key fit_link.ols.alpha"):
        from_params(OLSConfig, {"alpha": 1}, "fit_link.ols")
    cfg = from_params(RidgeConfig, {"alphas": [1, 10]}, "fit_link.ridge")
    assert cfg.alphas == (1.0, 10.0)
    assert dataclasses.is_dataclass(cfg)
