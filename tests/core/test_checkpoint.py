"""Checkpoints: same content, same bytes (DVC hashes and downstream fingerprints rely on it)."""


import pytest
import torch

from linkstyle.core.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from linkstyle.core.errors import UserError


def test_same_model_gives_same_bytes_under_any_name(tmp_path):
    sd = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(3)}
    save_checkpoint(tmp_path / "a.pt", "thing", {"n": 3}, sd, info={"x": 1})
    save_checkpoint(tmp_path / "sub" / "other.pt", "thing", {"n": 3}, sd, info={"x": 1})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "other.pt").read_bytes()
    assert fingerprint(tmp_path / "a.pt") == fingerprint(tmp_path / "sub" / "other.pt")
    back = load_checkpoint(tmp_path / "a.pt", "thing")
    assert torch.equal(back["state_dict"]["w"], sd["w"]) and back["info"] == {"x": 1}


def test_wrong_kind_missing_and_corrupt_are_one_line_errors(tmp_path):
    save_checkpoint(tmp_path / "a.pt", "thing", {}, {"w": torch.ones(1)})
    with pytest.raises(UserError, match="expected a 'segmenter'"):
        load_checkpoint(tmp_path / "a.pt", "segmenter")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt", "thing")
    (tmp_path / "bad.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:50])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / "bad.pt", "thing")


def test_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmpfs):
    mnt = tmpfs("256k")
    # Nearly full: torch's own zip writer then fails on its last small write, which it
    # reported as a bare RuntimeError ("unexpected pos").
    (mnt / "filler").write_bytes(bytes(250 * 1024))
    with pytest.raises(UserError, match=f"{mnt}/model.pt: cannot write: no space left on the device"):
        save_checkpoint(mnt / "model.pt", "thing", {}, {"w": torch.ones(1 << 11)})  # 8 kB
    assert [p.name for p in mnt.iterdir()] == ["filler"]
