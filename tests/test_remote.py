"""A damaged object on the DVC remote is refused at `dvc pull`, not checked out as the real file.

The project's default remote has `verify = true` (.dvc/config), so DVC recomputes the hash of
every file it downloads. Tried on a tiny DVC project with a remote configured the same way.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    return subprocess.run([dvc, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_default_remote_verifies_what_it_pulls():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    default = config["core"]["remote"]
    assert config[f"'remote \"{default}\"'"].get("verify") == "true"  # DVC quotes the section name


def test_a_corrupted_remote_object_is_refused(tmp_path):
    d, remote = tmp_path / "p", tmp_path / "remote"
    d.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=d, check=True)
    for args in (("init", "-q"), ("config", "core.analytics", "false"), ("remote", "add", "-d", "lab", str(remote)),
                 ("remote", "modify", "lab", "verify", "true")):
        assert _dvc(*args, cwd=d).returncode == 0
    (d / "a.txt").write_text("the real content\n")
    assert _dvc("add", "-q", "a.txt", cwd=d).returncode == 0
    assert _dvc("push", "-q", cwd=d).returncode == 0
    (obj,) = [p for p in remote.rglob("*") if p.is_file()]
    obj.chmod(0o644)
    obj.write_text("damaged\n")
    shutil.rmtree(d / ".dvc" / "cache")
    (d / "a.txt").unlink()
    out = _dvc("pull", cwd=d)
    assert out.returncode != 0, out.stdout + out.stderr
    assert not (d / "a.txt").exists() or (d / "a.txt").read_text() == "the real content\n"
