import h5py
import numpy as np
import pytest

from linkstyle.core.errors import UserError
from linkstyle.link.pairs import PairsConfig, load_pairs, sample_pairs

FPS = {"generator_fingerprint": "g" * 16, "classifier_fingerprint": "c" * 16}


def _cfg(**kw):
    base = dict(psi=0.7, n_train_per_class=6, n_test_per_class=3, keep_correct=False, batch_size=4, device="cpu")
    return PairsConfig(**{**base, **kw})


def test_schema_seeds_and_attributes(tiny_gen, tiny_clf, tmp_path):
    p = tmp_path / "pairs.h5"
    stats = sample_pairs(tiny_gen, tiny_clf, _cfg(), p, FPS, progress=False)
    assert stats["train"]["cat"] == {"kept": 6, "drawn": 6, "acceptance": 1.0}
    with h5py.File(p) as f:
        for split, n in (("train", 6), ("test", 3)):
            g = f[split]
            assert g["w"].shape == (5 * n, 16) and g["r"].shape == (5 * n, 16) and g["logits"].shape == (5 * n, 5)
            assert g["w"].chunks is not None and g["w"].compression == "gzip"
            assert np.array_equal(np.bincount(g["label"][:]), [n] * 5)
        assert f.attrs["psi"] == 0.7 and f.attrs["generator_fingerprint"] == FPS["generator_fingerprint"]
        seeds = np.concatenate([f["train"]["seed"][:], f["test"]["seed"][:]])
    assert len(np.unique(seeds)) == len(seeds), "every sample has its own seed"
    # A stored sample is reproduced from its recorded seed alone.
    d = load_pairs(p, "train")
    w = tiny_gen.sample_w(d["seed"][7:8], d["label"][7:8], 0.7).numpy()
    np.testing.assert_array_equal(w, d["w"][7:8])


def test_kept_pairs_do_not_depend_on_batch_size(tiny_gen, tiny_clf, tmp_path):
    a = sample_pairs(tiny_gen, tiny_clf, _cfg(batch_size=3), tmp_path / "a.h5", FPS, progress=False)
    b = sample_pairs(tiny_gen, tiny_clf, _cfg(batch_size=64), tmp_path / "b.h5", FPS, progress=False)
    assert a == b
    da, db = load_pairs(tmp_path / "a.h5", "test"), load_pairs(tmp_path / "b.h5", "test")
    np.testing.assert_array_equal(da["seed"], db["seed"])
    np.testing.assert_array_equal(da["w"], db["w"])
    np.testing.assert_allclose(da["r"], db["r"], atol=1e-5)


def test_keep_correct_filters_and_reports_acceptance(tiny_gen, biased_clf, tmp_path):
    with pytest.raises(UserError, match="max_draws_factor.*'dog'"):
        sample_pairs(tiny_gen, biased_clf, _cfg(keep_correct=True, max_draws_factor=2.0), tmp_path / "p.h5", FPS, progress=False)
    assert not (tmp_path / "p.h5").exists(), "no half-written file is left behind"
    assert not list(tmp_path.iterdir())


def test_class_mismatch_is_one_line_error(tiny_gen, tmp_path):
    from linkstyle.models.small_resnet import SmallResNet

    other = SmallResNet(("a", "b", "c", "d", "e"), widths=(8,)).eval()
    with pytest.raises(UserError, match="differ from classifier classes"):
        sample_pairs(tiny_gen, other, _cfg(), tmp_path / "p.h5", FPS, progress=False)


def test_overlapping_seed_ranges_rejected(tiny_gen, tiny_clf, tmp_path):
    with pytest.raises(UserError, match="test_seed_base"):
        sample_pairs(tiny_gen, tiny_clf, _cfg(test_seed_base=10_000_000 + 5), tmp_path / "p.h5", FPS, progress=False)


def test_load_pairs_errors(tiny_gen, tiny_clf, tmp_path):
    p = tmp_path / "pairs.h5"
    with pytest.raises(UserError, match="pairs.h5: not found.*dvc repro sample_pairs"):
        load_pairs(p, "train")
    sample_pairs(tiny_gen, tiny_clf, _cfg(), p, FPS, progress=False)
    with pytest.raises(UserError, match="generator_fingerprint=g+ but the current one is x"):
        load_pairs(p, "train", expect={"generator_fingerprint": "x"})
    with pytest.raises(UserError, match="missing 'train/nope'"):
        load_pairs(p, "train", ("nope",))
    t = tmp_path / "truncated.h5"
    t.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    with pytest.raises(UserError, match="truncated.h5: truncated or not an HDF5 file"):
        load_pairs(t, "train")


def test_bad_config():
    with pytest.raises(UserError, match="psi"):
        PairsConfig(psi=0.0)


def test_a_class_the_classifier_rejects_fails_within_its_first_draws(tiny_gen, biased_clf, tmp_path, monkeypatch):
    import linkstyle.link.pairs as pairs

    drawn, draw = [], pairs._draw

    def counted(gen, clf, seeds, c, psi):
        drawn.append((c, len(seeds)))
        return draw(gen, clf, seeds, c, psi)

    monkeypatch.setattr(pairs, "_draw", counted)
    cfg = _cfg(keep_correct=True, n_train_per_class=100, batch_size=64)  # up to 2,000 draws per class allowed
    with pytest.raises(UserError) as e:
        sample_pairs(tiny_gen, biased_clf, cfg, tmp_path / "p.h5", FPS, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "0 of the first 128 samples drawn for class 'dog' (train)" in msg
    assert "keep_correct: false" in msg and "class_indices / preset" in msg
    assert sum(m for c, m in drawn if c == 1) == 128, "gave up after two batches, not 2,000 draws"
    assert not (tmp_path / "p.h5").exists()


def test_hopeless_check_does_not_depend_on_the_batch_size():
    from linkstyle.link.pairs import _hopeless

    cfg = _cfg(keep_correct=True)
    ok = np.zeros(300, bool)
    assert _hopeless(ok[:127], cfg) is None and _hopeless(ok, cfg) == (0, 128)
    ok[::10] = True  # 10% acceptance: within max_draws_factor 20
    assert _hopeless(ok, cfg) is None


def test_progress_shows_draw_rate_and_acceptance_per_class(tiny_gen, tiny_clf, tmp_path, capsys):
    sample_pairs(tiny_gen, tiny_clf, _cfg(), tmp_path / "p.h5", FPS, progress=True)
    err = capsys.readouterr().err
    assert "draws/s, acceptance cat 1.00" in err and "dog 1.00" in err
