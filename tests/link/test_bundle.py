"""load_linked: models, pairs and link cross-checked by their fingerprints."""

import pytest
import torch

from linkstyle.core.checkpoint import fingerprint, save_module
from linkstyle.core.errors import UserError
from linkstyle.link.bundle import load_linked
from linkstyle.link.linear import fit_ols
from linkstyle.link.pairs import PairsConfig, sample_pairs
from linkstyle.link.store import save_link
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec


def test_load_linked_checks_fingerprints_and_link_size(tiny_gen, tiny_clf, tmp_path):
    gen_p, clf_p, pairs_p = tmp_path / "g.pt", tmp_path / "c.pt", tmp_path / "p.h5"
    save_module(gen_p, "generator", tiny_gen)
    save_module(clf_p, "classifier", tiny_clf)
    gs, cs = GeneratorSpec(path=str(gen_p)), ClassifierSpec(path=str(clf_p))
    fps = {"generator_fingerprint": fingerprint(gen_p), "classifier_fingerprint": fingerprint(clf_p)}
    cfg = PairsConfig(psi=0.7, n_train_per_class=4, n_test_per_class=2, keep_correct=False, batch_size=8, device="cpu")
    sample_pairs(tiny_gen, tiny_clf, cfg, pairs_p, fps, progress=False)
    rng = torch.Generator().manual_seed(0)
    r = torch.rand(40, tiny_clf.n_units, generator=rng)
    pfp = {"pairs_fingerprint": fingerprint(pairs_p)}
    save_link(tmp_path / "ok.pt", fit_ols(r, torch.rand(40, tiny_gen.w_dim, generator=rng))[0], **pfp)
    save_link(tmp_path / "bad.pt", fit_ols(r, torch.rand(40, tiny_gen.w_dim + 1, generator=rng))[0], **pfp)
    save_link(tmp_path / "stale.pt", fit_ols(r, torch.rand(40, tiny_gen.w_dim, generator=rng))[0], pairs_fingerprint="0" * 16)

    L = load_linked(gs, cs, tmp_path / "ok.pt", pairs_p, "test", ("r", "label"), torch.device("cpu"))
    assert {k: L.fingerprints[k] for k in fps} == fps and L.fingerprints["pairs_fingerprint"] == pfp["pairs_fingerprint"]
    assert L.pairs["r"].shape == (10, tiny_clf.n_units) and L.clf.n_units == tiny_clf.n_units
    with pytest.raises(UserError) as e:
        load_linked(gs, cs, tmp_path / "bad.pt", pairs_p, "test", ("r",), "cpu")
    assert "\n" not in str(e.value)
    # A link fitted on other pairs is refused: it would give silently wrong numbers.
    with pytest.raises(UserError, match="stale.pt: link was fitted with pairs_fingerprint=0+ but the current one"):
        load_linked(gs, cs, tmp_path / "stale.pt", pairs_p, "test", ("r",), "cpu")
    other = tmp_path / "c2.pt"
    save_module(other, "classifier", tiny_clf, note="another file")
    with pytest.raises(UserError, match="fingerprint"):
        load_linked(gs, ClassifierSpec(path=str(other)), tmp_path / "ok.pt", pairs_p, "test", ("r",), "cpu")
