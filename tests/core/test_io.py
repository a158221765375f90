import json

"""Atomic writes: all or nothing, and the output gets an ordinary file mode."""

import os
import stat

import numpy as np
import pytest

from linkstyle.core.io import atomic_path, write_json


def test_crash_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_output_mode_follows_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "sub" / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "b.bin").stat().st_mode) == 0o644


def test_json_is_sorted_rounded_and_numpy_safe(tmp_path):
    write_json(tmp_path / "m.json", {"b": np.float32(0.1234567891), "a": np.arange(2), "c": float("nan")})
    text = (tmp_path / "m.json").read_text()
    assert text.index('"a"') < text.index('"b"')
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [0, 1], "b": 0.123457, "c": None}


def test_check_writable_sweeps_temps_of_dead_writers_from_any_output(tmp_path):
    from linkstyle.core.io import check_writable

    dead = tmp_path / ".pairs.h5.4194303.x1y2.tmp"  # above the largest pid Linux hands out
    live = tmp_path / f".pairs.h5.{os.getppid()}.x1y2.tmp"  # the test runner's parent: alive
    other = tmp_path / "notes.tmp"  # not an atomic_path temp
    for p in (dead, live, other):
        p.write_bytes(b"x")
    check_writable([tmp_path / "reports.json", tmp_path / "new" / "deeper" / "figure.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
