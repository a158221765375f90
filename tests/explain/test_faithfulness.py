import copy

import h5py
import numpy as np
import pytest
import torch

from linkstyle.core.errors import UserError
from linkstyle.explain.closed_loop import ClosedLoop, ClosedLoopConfig, seed_jacobians
from linkstyle.explain.faithfulness import (
    compare_modes,
    faithfulness_arrays,
    faithfulness_table,
    off_target_norms,
    pick_strip_units,
)
from linkstyle.explain.tuning import TuningConfig, tune_units
from linkstyle.link.linear import LinearLink
from linkstyle.models.stylegen import ModConv
from linkstyle.report.faithfulness import plot_tuning_modes
from tiny_world import SoftplusClf, TanhGen

# ---------------------------------------------------------------- a tiny differentiable world


@pytest.fixture(scope="module")
def toy():
    # w has more dims (6) than the toy has units (4): every unit reachable from w
    gen, clf = TanhGen(6, seed=0, scale=0.4).eval(), SoftplusClf(4, seed=1, arch="toy").eval()
    w = torch.as_tensor(np.random.default_rng(2).normal(size=(3, 6)) * 0.5, dtype=torch.float32)
    r, _ = clf.represent(gen.synthesize(w))
    return gen, clf, w.numpy(), r.numpy()


# ------------------------------------------------------------------------- metrics by hand


def test_off_target_norm_leaves_out_the_tuned_unit():
    r = np.array([[[[1.0, 2.0, 3.0], [4.0, 6.0, 3.0]]]], dtype=np.float32)  # [1 unit, 1 seed, 2 steps, R = 3]
    np.testing.assert_allclose(off_target_norms(r, np.array([0])), [[[0.0, 4.0]]])  # change (3, 4, 0) without unit 0
    np.testing.assert_allclose(off_target_norms(r, np.array([1])), [[[0.0, 3.0]]])


def _hand_file(path, mode="open_loop", off_last=(1.0, 3.0)):
    with h5py.File(path, "w") as f:
        f["units"] = np.array([2, 5])
        f["seeds"] = np.array([7, 8])
        f["values"] = np.array([[0.0, 2.0], [1.0, 1.0]], dtype=np.float32)  # unit 5 constant: dead
        f["r_tilde_unit"] = np.array([[[0.1, 1.1], [0.3, 0.1]], [[1.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
        f["r_tilde_off"] = np.array([[[0.0, off_last[0]], [0.0, off_last[1]]], [[0, 0], [0, 0]]], dtype=np.float32)
        f["renders"] = np.zeros((2, 2, 2, 4, 4, 3), np.uint8)
        f.attrs["mode"] = mode


def test_metrics_on_a_hand_checkable_case(tmp_path):
    _hand_file(tmp_path / "t.h5")
    t = faithfulness_table(tmp_path / "t.h5")
    assert list(t["unit"]) == [2, 5] and list(t["tuning_mode"]) == ["open_loop"] * 2
    live = t.iloc[0]
    # seed 7 moved 1.0 of the set change 2 (0.5), seed 8 moved -0.2 (-0.1): median 0.2
    assert live["transfer"] == pytest.approx(0.2) and live["transfer_mean"] == pytest.approx(0.2)
    assert live["off_target"] == pytest.approx((0.5 + 1.5) / 2)  # 1/2 and 3/2
    # within-seed: a = (-.5, .5, .1, -.1), b = (-1, 1, -1, 1): 0.8 / sqrt(0.52 * 4)
    assert live["tuning_corr"] == pytest.approx(0.8 / np.sqrt(0.52 * 4), rel=1e-6)
    assert live["moved_up_fraction"] == pytest.approx(0.5) and live["set_change"] == pytest.approx(2.0)
    assert t.iloc[1][["transfer", "off_target", "tuning_corr"]].isna().all(), "a constant unit has no ratio"
    a = faithfulness_arrays(np.array([[[0.0, 2.0]]]), np.array([[[0.0, 0.0]]]), np.array([[0.0, 2.0]]))
    assert a["transfer"][0, 0] == 1.0 and a["off_target"][0, 0] == 0.0


def test_compare_modes_side_by_side_and_mismatch(tmp_path):
    _hand_file(tmp_path / "o.h5")
    _hand_file(tmp_path / "c.h5", mode="closed_loop", off_last=(0.2, 0.2))
    t = compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")
    assert {"transfer_open_loop", "transfer_closed_loop", "off_target_closed_loop"} <= set(t.columns)
    assert t["off_target_closed_loop"].iloc[0] == pytest.approx(0.1)
    assert pick_strip_units(t, 3) == [2]
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f["seeds"][0] = 99
    with pytest.raises(UserError, match="tunes other seeds"):
        compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")


def test_compare_on_the_closed_loops_subset_of_units(tmp_path):
    _hand_file(tmp_path / "o.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:  # the closed loop tuned unit 2 only (units_every)
        f["units"], f["seeds"] = np.array([2]), np.array([7, 8])
        f["values"] = np.array([[0.0, 2.0]], dtype=np.float32)
        f["r_tilde_unit"] = np.array([[[0.0, 2.0], [0.0, 1.0]]], dtype=np.float32)
        f["r_tilde_off"] = np.zeros((1, 2, 2), np.float32)
        f.attrs["mode"] = "closed_loop"
    t = compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")
    assert list(t["unit"]) == [2]
    assert t["transfer_open_loop"].iloc[0] == pytest.approx(0.2) and t["transfer_closed_loop"].iloc[0] == pytest.approx(0.75)
    with pytest.raises(UserError, match="tunes units \\[5\\] that"):
        compare_modes(tmp_path / "c.h5", tmp_path / "o.h5")  # unit 5 is in no closed-loop run
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f["values"][0, 1] = 3.0
    with pytest.raises(UserError, match="tunes other values"):
        compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")


def test_table_of_a_file_without_the_new_datasets_is_a_one_line_error(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["units"] = np.array([0])
    with pytest.raises(UserError, match="missing 'values'.*rerun dvc repro tune_units"):
        faithfulness_table(tmp_path / "old.h5")


# ------------------------------------------------------------------------------ closed loop


def test_seed_jacobian_matches_finite_differences(toy):
    gen, clf, w, _ = toy
    jac = seed_jacobians(gen, clf, torch.as_tensor(w), batch=2)
    assert jac.shape == (3, 4, 6)
    x = torch.as_tensor(w[:1], dtype=torch.float64)
    eps = 1e-3
    with torch.no_grad():
        fd = torch.stack([(clf.features(clf.preprocess(gen._synthesis((x + eps * e).float(), False)[0]))
                           - clf.features(clf.preprocess(gen._synthesis((x - eps * e).float(), False)[0])))[0] / (2 * eps)
                          for e in torch.eye(6, dtype=torch.float64)], 1)
    np.testing.assert_allclose(jac[0].numpy(), fd.double().numpy(), atol=2e-3)


def test_closed_loop_reaches_the_set_value_and_holds_the_others(toy):
    gen, clf, w, r = toy
    solver = ClosedLoop(gen, clf, w, ClosedLoopConfig(walk_steps=20, polish_steps=10, tolerance=0.0, ridge=1e-3, max_step=0.1))
    seed, unit = np.array([0, 1, 2, 0]), np.array([1, 3, 0, 2])
    change = np.array([0.3, -0.2, 0.25, 0.15])
    values = r[seed, unit][:, None] + np.array([-0.1, 0.0, 1.0])[None] * change[:, None]  # [4, 3]
    w_new = solver.solve(seed, unit, values)  # [4, 3, D]
    r_new, _ = clf.represent(gen.synthesize(w_new.reshape(12, -1)))
    target = np.repeat(r[seed][:, None], 3, 1)
    target[np.arange(4), :, unit] = values
    # 6 dims of w against 4 units: the edited r is reachable exactly, so it is reached.
    np.testing.assert_allclose(r_new.numpy().reshape(4, 3, -1), target, atol=2e-3)
    # a set value at the seed's own value keeps the seed's w
    np.testing.assert_allclose(w_new[:, 1].numpy(), w[seed], atol=1e-6)


def test_closed_loop_config_errors():
    with pytest.raises(UserError, match="tolerance must be in \\[0, 1\\)"):
        ClosedLoopConfig(tolerance=-1.0)
    with pytest.raises(UserError, match="max_step"):
        ClosedLoopConfig(max_step=0.0)
    with pytest.raises(UserError, match="walk_steps"):
        ClosedLoopConfig(walk_steps=0)
    with pytest.raises(UserError, match="mode must be one of open_loop, closed_loop"):
        TuningConfig(mode="both")


def _tune(gen, clf, r_base, w_base, path, mode, batch_size, link=None, units=(0, 2), walk_steps=20, **closed):
    units = np.asarray(units)
    lo, hi = r_base[:, units].min(0), r_base[:, units].max(0)
    closed = {"polish_steps": 10, "tolerance": 0.0, "max_step": 0.3, "ridge": 0.01, **closed}
    cfg = TuningConfig(n_seeds=len(r_base), n_steps=3, batch_size=batch_size, device="cpu", mode=mode,
                       closed_loop=ClosedLoopConfig(walk_steps=walk_steps, **closed))
    return tune_units(gen, clf, link, r_base, np.arange(len(r_base)) + 100, np.arange(len(r_base)) % gen.n_classes,
                      units, lo, hi, cfg, path, attrs={}, progress=False, w_base=w_base)


def test_tune_units_closed_loop_is_faithful_deterministic_and_batch_independent(toy, tmp_path):
    gen, clf, w, r = toy
    link = LinearLink.from_numpy(np.random.default_rng(3).normal(size=(6, 4)) * 0.3, np.zeros(6))
    m_open = _tune(gen, clf, r, w, tmp_path / "o.h5", "open_loop", 512, link=link)
    m = _tune(gen, clf, r, w, tmp_path / "c.h5", "closed_loop", 512)
    assert m["mode"] == "closed_loop" and m["unit_transfer_median"] > 0.9 > m_open["unit_transfer_median"]
    with h5py.File(tmp_path / "c.h5") as f:
        assert f.attrs["mode"] == "closed_loop"
        assert set(f) >= {"renders", "w", "values", "r_tilde_unit", "r_tilde_corr", "r_tilde", "r_tilde_off", "r_base"}
        np.testing.assert_allclose(f["r_tilde_unit"][:], np.broadcast_to(f["values"][:][:, None], (2, 3, 3)), atol=0.05)
        w1 = f["w"][:]
        np.testing.assert_allclose(f["r_tilde"][:].astype(np.float32)[0, :, :, 0], f["r_tilde_unit"][0], atol=2e-3)
    _tune(gen, clf, r, w, tmp_path / "c2.h5", "closed_loop", 512)
    _tune(gen, clf, r, w, tmp_path / "c3.h5", "closed_loop", 5)  # blocks of one unit, solved 5 renders at a time
    with h5py.File(tmp_path / "c2.h5") as f2, h5py.File(tmp_path / "c3.h5") as f3:
        assert np.array_equal(f2["w"][:], w1), "same params, same w"
        # 6 dims of w, 4 units: w has directions r~ does not see, along which float rounding of
        # other batch shapes may drift (0.1 here); what the classifier sees agrees.
        np.testing.assert_allclose(f3["r_tilde_unit"][:], f2["r_tilde_unit"][:], atol=1e-4)
        np.testing.assert_allclose(f3["r_tilde"][:].astype(np.float32), f2["r_tilde"][:].astype(np.float32), atol=2e-3)
    t = compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")
    assert (t["transfer_closed_loop"] > t["transfer_open_loop"]).all()


def test_closed_loop_on_the_default_architectures_beats_the_link(tiny_gen, tiny_clf, tmp_path):
    # The untrained generator ignores w (its style affines start at zero): give them weights.
    tiny_gen = copy.deepcopy(tiny_gen)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in tiny_gen.modules():
            if isinstance(m, ModConv):
                m.affine.weight.normal_(0.0, 0.3)
    seeds = np.arange(4) + 100
    w = tiny_gen.sample_w(seeds, np.arange(4) % 5).numpy()
    r, _ = tiny_clf.represent(tiny_gen.synthesize(torch.as_tensor(w)))
    r = r.numpy()
    units = np.argsort(-r.std(0))[:2]  # units that vary over the seeds: a set change to make
    link = LinearLink.from_numpy(np.random.default_rng(0).normal(size=(16, 16)) * 0.3, np.zeros(16))
    m_open = _tune(tiny_gen, tiny_clf, r, w, tmp_path / "o.h5", "open_loop", 512, link=link, units=units)
    budget = dict(units=units, walk_steps=4, polish_steps=2, max_step=3.0, ridge=0.01, tolerance=0.05)  # as params.yaml, shorter
    m = _tune(tiny_gen, tiny_clf, r, w, tmp_path / "c.h5", "closed_loop", 512, **budget)
    assert m["unit_transfer_median"] > max(0.3, m_open["unit_transfer_median"])
    _tune(tiny_gen, tiny_clf, r, w, tmp_path / "c7.h5", "closed_loop", 7, **budget)
    with h5py.File(tmp_path / "c.h5") as a, h5py.File(tmp_path / "c7.h5") as b:
        assert np.abs(a["renders"][:].astype(int) - b["renders"][:]).max() <= 1, "renders do not depend on the batch size"
    t = compare_modes(tmp_path / "o.h5", tmp_path / "c.h5")
    plot_tuning_modes(t, [tmp_path / "o.h5", tmp_path / "c.h5"], tmp_path / "modes.png", pick_strip_units(t, 2), n_seeds=2)
    assert (tmp_path / "modes.png").stat().st_size > 10_000
