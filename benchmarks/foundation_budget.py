"""Foundation budgets: world + train_generator + train_classifier through real `dvc repro`.

Usage: python benchmarks/foundation_budget.py [--params params.yaml | tests/params_quick.yaml]

In a temporary git + DVC repository holding this checkout's stages, library and the
given params, it times:
  1. `dvc repro train_generator train_classifier` (runs world, then both trainings);
  2. the same again with nothing changed (should rerun nothing, <= 10 s);
  3. which of these stages a changed `train_classifier` param would rerun (`dvc repro --dry`).
Budgets: default params <= 12 min, quick params <= 90 s on 2 CPU
cores. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    a = ap.parse_args()
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in ("stages", "linkstyle", "masks"):
            shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "dvc.yaml", d)
        shutil.copy(a.params, d / "params.yaml")
        sh(["git", "init", "-q"], d)
        sh(dvc + ["init", "-q"], d)
        first, out = sh(dvc + ["repro", "train_generator", "train_classifier"], d)
        stage_lines = [line for line in out.splitlines() if re.match(r"^(world|train_\w+):", line)]
        second, out2 = sh(dvc + ["repro", "train_generator", "train_classifier"], d)
        rerun2 = re.findall(r"Running stage '(\w+)'", out2)
        p = yaml.safe_load((d / "params.yaml").read_text())
        p["train_classifier"]["epochs"] += 1
        (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        _, out3 = sh(dvc + ["repro", "--dry", "train_generator", "train_classifier"], d)
        rerun3 = re.findall(r"Running stage '(\w+)'", out3)
    print(f"params: {a.params} ({os.cpu_count()} cores)")
    for line in stage_lines:
        print("  " + line)
    print(f"world + train_generator + train_classifier via dvc repro: {first:7.1f} s ({first / 60:.1f} min)")
    print(f"second dvc repro, nothing changed:                       {second:7.1f} s, reran {rerun2 or 'nothing'}")
    print(f"after changing train_classifier.epochs, dvc repro would run: {', '.join(rerun3)}")


if __name__ == "__main__":
    main()
