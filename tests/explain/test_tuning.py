import h5py
import numpy as np
import pytest
import torch

from linkstyle.core.errors import UserError
from linkstyle.explain.closed_loop import ClosedLoopConfig
from linkstyle.explain.tuning import (
    TuningConfig,
    pick_seeds,
    resolve_units,
    step_values,
    tune_units,
)
from linkstyle.link.linear import LinearLink


@pytest.fixture()
def link(tiny_gen, tiny_clf):
    rng = np.random.default_rng(0)
    return LinearLink.from_numpy(rng.normal(size=(tiny_gen.w_dim, tiny_clf.n_units)) * 0.3, np.zeros(tiny_gen.w_dim))


def _run(tiny_gen, tiny_clf, link, path, batch_size):
    rng = np.random.default_rng(1)
    r_base = rng.uniform(0, 1, size=(4, tiny_clf.n_units)).astype(np.float32)
    units = np.array([2, 5, 11])
    lo, hi = r_base[:, units].min(0), r_base[:, units].max(0)
    cfg = TuningConfig(n_seeds=4, n_steps=3, batch_size=batch_size, device="cpu", mode="open_loop")
    m = tune_units(tiny_gen, tiny_clf, link, r_base, np.arange(4) + 100, np.arange(4) % 5, units, lo, hi, cfg,
                   path, attrs={}, progress=False)
    return m, r_base, units, lo, hi


def test_every_step_is_link_of_r_with_one_unit_replaced(tiny_gen, tiny_clf, link, tmp_path):
    p = tmp_path / "t.h5"
    m, r_base, units, lo, hi = _run(tiny_gen, tiny_clf, link, p, batch_size=7)
    assert m["n_renders"] == 3 * 4 * 3
    with h5py.File(p) as f:
        assert f["renders"].shape == (3, 4, 3, 32, 32, 3) and f["renders"].chunks[0] == 1
        assert f["parts_gt"].shape == (3, 4, 3, 32, 32)
        np.testing.assert_allclose(f["values"][:, 0], lo)
        np.testing.assert_allclose(f["values"][:, -1], hi)
        # Unit 5 (position 1), seed 2, last step: r_base[2] with r_5 set to its max.
        r = r_base[2].copy()
        r[5] = hi[1]
        w = link(torch.from_numpy(r)[None]).numpy()
        np.testing.assert_allclose(f["w"][1, 2, 2], w[0], atol=1e-5)
        renders = f["renders"][:]
    p2 = tmp_path / "t2.h5"
    _run(tiny_gen, tiny_clf, link, p2, batch_size=512)
    with h5py.File(p2) as f:
        assert np.abs(f["renders"][:].astype(int) - renders).max() <= 1, "renders do not depend on the batch size"


def test_unit_selection_and_errors():
    assert resolve_units(TuningConfig(), 4).tolist() == [0, 1, 2, 3]
    assert resolve_units(TuningConfig(unit_range=(1, 3)), 4).tolist() == [1, 2]
    every = ClosedLoopConfig(units_every=3)
    assert resolve_units(TuningConfig(mode="closed_loop", closed_loop=every), 8).tolist() == [0, 3, 6]
    assert resolve_units(TuningConfig(mode="open_loop", closed_loop=every), 4).tolist() == [0, 1, 2, 3], "open loop tunes every unit"
    assert resolve_units(TuningConfig(mode="closed_loop", unit_range=(2, 8), closed_loop=every), 8).tolist() == [2, 5]
    with pytest.raises(UserError, match="tune_units.units: unit ids \\[9\\] out of range"):
        resolve_units(TuningConfig(units=(1, 9)), 4)
    with pytest.raises(UserError, match="unit_range"):
        resolve_units(TuningConfig(unit_range=(0, 5)), 4)
    with pytest.raises(UserError, match="n_steps"):
        TuningConfig(n_steps=1)


def test_seeds_spread_over_classes_and_steps_linear():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert pick_seeds(labels, 4, 3).tolist() == [0, 2, 4, 1]
    with pytest.raises(UserError, match="n_seeds"):
        pick_seeds(labels, 7, 3)
    np.testing.assert_allclose(step_values(np.array([0.0]), np.array([2.0]), 3), [[0.0, 1.0, 2.0]])


def test_open_loop_writes_the_faithfulness_datasets(tiny_gen, tiny_clf, link, tmp_path):
    p = tmp_path / "t.h5"
    m, r_base, units, lo, hi = _run(tiny_gen, tiny_clf, link, p, batch_size=512)
    assert m["mode"] == "open_loop" and {"off_target_median", "unit_corr_median", "unit_transfer_median"} <= set(m)
    with h5py.File(p) as f:
        assert f.attrs["mode"] == "open_loop" and f["r_tilde"].dtype == np.float16
        rt = f["r_tilde"][:].astype(np.float32)
        assert rt.shape == (3, 4, 3, tiny_clf.n_units)
        np.testing.assert_allclose(rt[np.arange(3), :, :, units], f["r_tilde_unit"][:], rtol=2e-3, atol=1e-4)
        off = f["r_tilde_off"][:]
        assert (off[:, :, 0] == 0).all(), "step 0 against itself"
        d = rt - rt[:, :, :1]
        d[np.arange(3), :, :, units] = 0
        np.testing.assert_allclose(off, np.sqrt((d ** 2).sum(-1)), rtol=1e-2, atol=1e-3)
