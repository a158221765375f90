"""The command line of the scripts under the error policy: usage errors are one line, exit 2.

typer parses with its own copy of click, so a missing or unknown option must be caught as
that copy's exception too; these run the real scripts as a user would (no project needed:
each fails before reading anything).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("script, args, line", [
    ("stages/similarity.py", ["--bogus"], "error: --bogus: no such option"),
    ("stages/similarity.py", ["--pairs", "p.h5", "--metric", "m.json"], "did you mean --metrics?"),
    ("stages/similarity.py", [], "error: --pairs: missing option; pass --pairs <file>"),
    ("stages/fit_link.py", ["--pairs", "p.h5", "--out", "l.pt", "--metrics", "m.json"],
     "error: --kind: missing option; pass --kind <value>"),
    ("stages/similarity.py", ["--pairs", "p", "--metrics", "m", "--plot", "p", "--figure", "f", "--n-jobs", "x"],
     "error: --n-jobs: "),
    ("tools/label_images.py", [], "error: --out: missing option; pass --out <file>"),
    ("tools/label_images.py", ["--out", "o", "--preset", "dogs", "--per-class", "-3"],
     "error: --per-class: must be at least 1"),
    ("tools/label_images.py", ["--out", "o", "--preset", "dogs", "--per-class", "0"],
     "error: --per-class: must be at least 1"),
], ids=["unknown-option", "misspelt-option", "missing-option", "missing-kind", "bad-int",
        "label-images-no-args", "label-images-per-class-negative", "label-images-per-class-0"])
def test_usage_error_is_one_line(tmp_path, script, args, line):
    out = _run(script, *args, cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and line in lines[0], out.stderr[-2000:]
    assert list(tmp_path.iterdir()) == [], "something was written"


def test_help_still_exits_0(tmp_path):
    out = _run("stages/similarity.py", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "--pairs" in out.stdout, out.stderr[-2000:]
