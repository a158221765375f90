"""Tests for linkstyle.link.inn: invertibility, log-determinant, recovered noise covariance,
determinism, persistence and one-line errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.link.fit import link_metrics, predict_w
from linkstyle.link.inn import (
    ConditionalINN,
    INNConfig,
    draw_v,
    evaluate_inn,
    fit_inn,
    gaussian_nll,
    load_inn,
    mean_nll,
    noise_keys,
    sample_w,
    save_inn,
)
from linkstyle.link.linear import LinearLink
from linkstyle.link.store import save_link


def tiny_cfg(**kw) -> INNConfig:
    base = dict(mean="ridge", n_blocks=2, hidden=16, embed_dim=4, embed_hidden=16, epochs=30, lr=3e-3,
                batch_size=128, patience=30, mean_samples=4, seed=1)
    return INNConfig(**{**base, **kw})


def randomised(inn: ConditionalINN, seed: int = 0) -> ConditionalINN:
    """Every parameter random (at init the couplings are the identity, which tests nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in inn.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for b in range(inn.n_blocks):
            inn.perms[b] = torch.randperm(inn.w_dim, generator=g)
        inn.res_std.copy_(0.5 + torch.rand(inn.w_dim, generator=g, dtype=inn.res_std.dtype))
        inn.res_mean.copy_(torch.randn(inn.w_dim, generator=g, dtype=inn.res_mean.dtype))
    return inn


def linear_mean(r_dim: int, w_dim: int, seed: int = 0) -> LinearLink:
    rng = np.random.default_rng(seed)
    return LinearLink.from_numpy(rng.normal(size=(w_dim, r_dim)), rng.normal(size=w_dim), kind="ridge")


@pytest.mark.parametrize("w_dim,with_mean", [(4, True), (5, True), (4, False)])
def test_inverse_and_log_determinant_against_brute_force_jacobian(w_dim, with_mean):
    r_dim = 3
    inn = ConditionalINN(r_dim, w_dim, n_blocks=3, hidden=8, depth=1, embed_dim=2, embed_hidden=8,
                         mean_link=linear_mean(r_dim, w_dim) if with_mean else None)
    inn = randomised(inn).double().eval()
    g = torch.Generator().manual_seed(1)
    r = torch.randn(6, r_dim, generator=g, dtype=torch.float64)
    w = torch.randn(6, w_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        v, logdet = inn.encode(w, r)
    assert v.shape == w.shape and logdet.shape == (6,)
    torch.testing.assert_close(inn.decode(v, r), w, atol=1e-10, rtol=0)  # w -> v -> w
    torch.testing.assert_close(inn.encode(inn.decode(w, r), r)[0], w, atol=1e-10, rtol=0)  # v -> w -> v
    for i in range(len(r)):
        ri = r[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda x, ri=ri: inn.encode(x[None], ri)[0][0], w[i])
        _, brute = torch.linalg.slogdet(jac)  # log |det|: the permutations may flip the sign
        assert abs(brute.item() - logdet[i].item()) < 1e-9
    # nll is -log N(v; 0, I) - log det: the change of variables, by hand for one row.
    by_hand = 0.5 * float((v[0] ** 2).sum()) + 0.5 * w_dim * np.log(2 * np.pi) - float(logdet[0])
    with torch.no_grad():
        assert abs(float(inn.nll(w, r)[0]) - by_hand) < 1e-10
    # The link view: forward(r) is the decoding of v = 0.
    torch.testing.assert_close(inn(r), inn.decode(torch.zeros_like(w), r))


def gaussian_pairs(n: int, seed: int, heteroscedastic: bool = False):
    """w = A r + B n with n ~ N(0, I): w | r ~ N(A r, B B^T)."""
    maps = np.random.default_rng(1234)  # the same A, B for every draw
    a = maps.normal(size=(3, 5))
    b = np.array([[0.5, 0.0, 0.0], [0.3, 0.2, 0.0], [-0.2, 0.1, 0.3]])
    rng = np.random.default_rng(seed)
    r = np.abs(rng.normal(size=(n, 5)))
    scale = (0.3 + r[:, :1]) if heteroscedastic else np.ones((n, 1))
    w = r @ a.T + scale * (rng.normal(size=(n, 3)) @ b.T)
    return r, w, a, b


@pytest.mark.parametrize("mean", ["ridge", "none"])
def test_samples_given_r_have_the_noise_covariance(mean):
    r, w, a, b = gaussian_pairs(4000, seed=0)
    # With a ridge mean the INN starts at the right Gaussian; without one the couplings must learn
    # the mean A r and the covariance themselves (the reference's architecture), so more epochs.
    cfg = tiny_cfg(mean=mean, epochs=10 if mean == "ridge" else 60)
    inn, info = fit_inn(r, w, cfg, progress=False)
    assert info["best_val_nll"] <= info["val_nll_init"]
    r_test = np.abs(np.random.default_rng(5).normal(size=(3, 5)))
    K = 4000
    cov_true = b @ b.T
    for i, rt in enumerate(r_test):
        ws = sample_w(inn, np.repeat(rt[None], K, 0), noise_keys([i], K, 7))
        # Tolerances: a 4000-sample covariance has a sampling error of ~3% (relative Frobenius) and
        # its mean one of ~0.01; the fit adds the rest (measured: up to 0.04 / 0.03 with the ridge
        # mean, 0.11 / 0.08 without). The noise's std per dim is 0.3-0.5, w's about 2.
        np.testing.assert_allclose(ws.mean(0), a @ rt, atol=0.08 if mean == "ridge" else 0.2)
        err = np.linalg.norm(np.cov(ws.T) - cov_true) / np.linalg.norm(cov_true)
        assert err < 0.15, f"covariance off by {err:.2f} (relative Frobenius)"


def test_flow_learns_what_a_gaussian_misses():
    """Noise whose scale depends on r: the couplings must beat the Gaussian around the same mean."""
    r, w, _, _ = gaussian_pairs(4000, seed=0, heteroscedastic=True)
    r2, w2, _, _ = gaussian_pairs(1000, seed=1, heteroscedastic=True)
    inn, _ = fit_inn(r, w, tiny_cfg(epochs=20), progress=False)
    gauss = gaussian_nll(predict_w(inn.mean_link, r), w, predict_w(inn.mean_link, r2), w2)
    assert mean_nll(inn, r2, w2) < gauss - 0.05
    scores = evaluate_inn(inn, {"r": r, "w": w}, {"r": r2, "w": w2, "seed": np.arange(len(r2))}, tiny_cfg())
    assert scores["test_nll"] == pytest.approx(mean_nll(inn, r2, w2))
    # In the link kinds' metrics format (reports/link/<kind>.json): the INN at v = 0 as a link.
    at_zero = link_metrics(w2, predict_w(inn, r2))
    assert scores["kind"] == "inn" and scores["test_r2"] == pytest.approx(at_zero["r2"])
    assert scores["test_mse"] == pytest.approx(at_zero["mse"]) and scores["test_r2_min_dim"] == min(scores["test_r2_per_dim"])
    assert scores["train_r2"] == pytest.approx(link_metrics(w, predict_w(inn, r))["r2"])
    r2_mean = link_metrics(w2, predict_w(inn.mean_link, r2))["r2"]
    assert scores["test_r2_mean_link"] == pytest.approx(r2_mean)
    assert scores["test_r2"] > r2_mean - 0.03 and scores["test_r2_sample_mean"] > r2_mean - 0.03
    assert 0.8 < scores["test_v_sq_per_dim"] < 1.25  # calibrated within the fit's error


def test_gaussian_nll_by_hand():
    rng = np.random.default_rng(0)
    e_fit = rng.normal(size=(20000, 2)) * [1.0, 2.0]
    e = np.array([[1.0, 2.0]])
    # N(0, diag(1, 4)) at (1, 2): 0.5 (1 + 1) + 0.5 log(4) + log(2 pi), per dim / 2.
    want = (1.0 + 0.5 * np.log(4.0) + np.log(2 * np.pi)) / 2
    assert gaussian_nll(np.zeros_like(e_fit), e_fit, np.zeros_like(e), e) == pytest.approx(want, abs=0.02)


def test_mlp_mean_fit_is_deterministic_and_saved_bytes_repeat(tmp_path):
    r, w, _, _ = gaussian_pairs(600, seed=0)
    cfg = tiny_cfg(mean="mlp", mean_hidden=16, mean_epochs=5, epochs=3)
    paths = []
    for i in range(2):
        inn, info = fit_inn(r, w, cfg, progress=False)
        paths.append(tmp_path / f"inn{i}.pt")
        save_inn(paths[-1], inn, info, pairs_fingerprint="abc")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert info["mean"]["kind"] == "mlp" and "best_epoch" in info["mean"]
    other, _ = fit_inn(r, w, dataclasses.replace(cfg, seed=2), progress=False)
    assert not torch.equal(other.couplings[0].s[0][0].weight, inn.couplings[0].s[0][0].weight)


def test_samples_depend_on_their_key_only():
    r, w, _, _ = gaussian_pairs(500, seed=0)
    inn, _ = fit_inn(r, w, tiny_cfg(epochs=2), progress=False)
    keys = noise_keys([11, 12, 13], 4, 0)
    assert keys.tolist()[:2] == [[0, 11, 0], [0, 11, 1]]
    rr = np.repeat(r[:3], 4, 0)
    full = sample_w(inn, rr, keys)
    np.testing.assert_allclose(sample_w(inn, rr, keys, batch_size=5), full, rtol=0, atol=1e-6)
    # Another batch may round differently in the last bit (MKL picks its GEMM split by matrix
    # size, and with dynamic threads by machine load): the same tolerance as above.
    np.testing.assert_allclose(sample_w(inn, rr[4:8], keys[4:8]), full[4:8], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(draw_v(keys[5:6], 3)[0], draw_v(keys, 3)[5])
    assert not np.allclose(draw_v(keys[:1], 3), draw_v(keys[1:2], 3))
    # Temperature 0 is the link at v = 0.
    np.testing.assert_allclose(sample_w(inn, r[:3], keys[:3], temperature=1e-12), predict_w(inn, r[:3]), atol=1e-5)


def test_save_load_roundtrip_and_fingerprint_checks(tmp_path):
    r, w, _, _ = gaussian_pairs(500, seed=0)
    inn, info = fit_inn(r, w, tiny_cfg(mean="mlp", mean_hidden=8, mean_epochs=2, epochs=2), progress=False)
    path = tmp_path / "inn.pt"
    save_inn(path, inn, info, pairs_fingerprint="abc")
    back = load_inn(path, r_dim=5, w_dim=3, expect={"pairs_fingerprint": "abc"})
    np.testing.assert_array_equal(predict_w(back, r[:10]), predict_w(inn, r[:10]))
    assert back.info["best_epoch"] == info["best_epoch"] and back.mean_link.arch == "mlp"
    assert link_metrics(w, predict_w(back, r))["r2"] > 0.5
    with pytest.raises(UserError, match="pairs_fingerprint=abc but the current one is xyz; refit"):
        load_inn(path, expect={"pairs_fingerprint": "xyz"})
    with pytest.raises(UserError, match="w of 3 dims given r of 5 units, but the classifier's r has 7"):
        load_inn(path, r_dim=7)
    link = tmp_path / "link.pt"
    save_link(link, linear_mean(5, 3))
    with pytest.raises(UserError, match="holds a 'link', expected a 'inn'"):
        load_inn(link)


@pytest.mark.parametrize("key,value,message", [
    ("n_blocks", 0, "n_blocks must be a positive integer"),
    ("mean", "gam", "mean must be one of mlp, ridge, none"),
    ("lr", -1.0, "lr must be positive"),
    ("val_fraction", 1.5, "val_fraction must be between 0 and 1"),
    ("depth", -1, "depth must be zero or a positive integer"),
    ("clip_grad", 0.0, "clip_grad must be positive"),
])
def test_bad_params_are_one_line_errors(key, value, message):
    with pytest.raises(UserError, match=message) as e:
        from_params(INNConfig, {key: value}, "fit_inn", source="params.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("params.yaml: fit_inn.")


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(UserError, match="unknown key fit_inn.blocks"):
        from_params(INNConfig, {"blocks": 3}, "fit_inn")
    r, w, _, _ = gaussian_pairs(50, seed=0)
    with pytest.raises(UserError, match="models.generator: w has 1 dim, but a coupling INN splits w into two halves"):
        fit_inn(r, w[:, :1], tiny_cfg(), progress=False)
    w_bad = w.copy()
    w_bad[3, 1] = np.nan
    with pytest.raises(UserError, match="w has 1 non-finite values"):
        fit_inn(r, w_bad, tiny_cfg(), progress=False)
    with pytest.raises(UserError, match="r has 50 rows but w has 49"):
        fit_inn(r, w[:49], tiny_cfg(), progress=False)
    with pytest.raises(ValueError, match="noise keys must be"):  # a caller's bug: keeps its traceback
        draw_v([[-1, 2]], 3)
    with pytest.raises(UserError, match="use a generator with w_dim >= 2"):
        ConditionalINN(3, 1)
