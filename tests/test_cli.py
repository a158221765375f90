"""Stage plumbing: malloc settings and device resolution."""

import platform

import pytest
import torch

from linkstyle import cli
from linkstyle.errors import UserError


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert cli.keep_freed_memory() is True


def test_device_resolution_and_missing_cuda(monkeypatch):
    assert cli.device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="device: auto or cpu"):
        cli.device("cuda:0")


def test_load_linked_checks_fingerprints_and_link_size(tiny_gen, tiny_clf, tmp_path):
    from linkstyle.checkpoint import fingerprint
    from linkstyle.classifier import save_classifier
    from linkstyle.link import fit_ols, save_link
    from linkstyle.pairs import PairsConfig, sample_pairs
    from linkstyle.stylegen import save_stylegen

    gen_p, clf_p, pairs_p = tmp_path / "g.pt", tmp_path / "c.pt", tmp_path / "p.h5"
    save_stylegen(gen_p, tiny_gen)
    save_classifier(clf_p, tiny_clf)
    fps = {"generator_fingerprint": fingerprint(gen_p), "classifier_fingerprint": fingerprint(clf_p)}
    cfg = PairsConfig(psi=0.7, n_train_per_class=4, n_test_per_class=2, keep_correct=False, batch_size=8, device="cpu")
    sample_pairs(tiny_gen, tiny_clf, cfg, pairs_p, fps, progress=False)
    rng = torch.Generator().manual_seed(0)
    r = torch.rand(40, tiny_clf.n_units, generator=rng)
    save_link(tmp_path / "ok.pt", fit_ols(r, torch.rand(40, tiny_gen.w_dim, generator=rng)), "ols")
    save_link(tmp_path / "bad.pt", fit_ols(r, torch.rand(40, tiny_gen.w_dim + 1, generator=rng)), "ols")

    gen, clf, link, test, got = cli.load_linked(gen_p, clf_p, tmp_path / "ok.pt", pairs_p, "test", ("r", "label"), "cpu")
    assert got == fps and test["r"].shape == (10, tiny_clf.n_units) and clf.n_units == tiny_clf.n_units
    with pytest.raises(UserError) as e:
        cli.load_linked(gen_p, clf_p, tmp_path / "bad.pt", pairs_p, "test", ("r",), "cpu")
    assert "\n" not in str(e.value)
    other = tmp_path / "c2.pt"
    save_classifier(other, tiny_clf, note="another file")
    with pytest.raises(UserError, match="fingerprint"):
        cli.load_linked(gen_p, other, tmp_path / "ok.pt", pairs_p, "test", ("r",), "cpu")
