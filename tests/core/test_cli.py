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


def _stage_outputs(stage: dict) -> set[str]:
    """The paths dvc.yaml says a stage writes (outs, metrics, plots)."""
    out = set()
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key, []):
            out.add(next(iter(item)) if isinstance(item, dict) else item)
    return out


def test_output_options_are_exactly_what_dvc_yaml_says_each_stage_writes():
    # The writability check before a stage's work finds outputs by their help text; this holds
    # that convention to dvc.yaml, so an output option with other wording cannot slip past.
    import importlib.util
    import shlex

    import yaml

    from linkstyle.core.cli import output_options

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        if "foreach" in stage:
            stage = stage["do"]
        words = shlex.split(stage["cmd"].replace("${item}", "ridge").replace("${key}", "ridge"))
        script = next(w for w in words if w.startswith("stages/"))
        spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        given = {words[i][2:].replace("-", "_"): words[i + 1] for i in range(len(words) - 1)
                 if words[i].startswith("--") and not words[i + 1].startswith("--")}
        written = {given[o] for o in output_options(module.main) if o in given}
        expected = {p.replace("${item}", "ridge").replace("${key}", "ridge") for p in _stage_outputs(stage)}
        # A folder option ("folder for" figures) covers the outs under it.
        def covers(w: str, e: str) -> bool:
            return e == w or e.startswith(w.rstrip("/") + "/")

        assert all(any(covers(w, e) for w in written) for e in expected), (name, written, expected)
        assert all(any(covers(w, e) for e in expected) for w in written), (name, written, expected)
        checked += 1
    assert checked >= 20


def test_read_only_output_is_found_before_any_input_is_read(tmp_path, tmpfs):
    mnt = tmpfs("1m", read_only=True)
    # The input does not exist: an error about the output proves the check came first.
    out = _run("stages/similarity.py", "--pairs", "missing.h5", "--metrics", f"{mnt}/s.json", "--plot", "p.json",
               "--figure", "f.png", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"error: {mnt}/s.json: cannot write: read-only file system; write the outputs somewhere writable"]
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob(".linkstyle-probe*"))
