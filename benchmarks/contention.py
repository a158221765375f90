"""Steady under load: CPU-heavy stages alone, then beside a busy loop on one core, in one run.

Usage: python benchmarks/contention.py [--repetitions 30] [--repeats 2] [--policy auto --policy ACTIVE]

Two stages, each run alone and then beside a second process that spins on core 0:
- `similarity` (k-means and RSA over resamples of the pairs, cut to --repetitions) on
  data/pairs.h5 (run `dvc repro sample_pairs` first): scikit-learn's OpenMP k-means opens
  many small parallel regions, the case where waiting threads matter most;
- `train_classifier` on the small `quick` world (tests/params_quick.yaml), built here by
  stage `world` first: torch's convolutions, forward and backward.
Once per OpenMP wait policy: `auto` leaves OMP_WAIT_POLICY unset, so the stage chooses as it
starts (linkstyle/core/runtime.py: passive waits where other work holds the cores its
threads need, OpenMP's default spinning where they are free), which is what every stage
does; ACTIVE spins throughout; PASSIVE sleeps throughout. Prints seconds alone, seconds
beside the loop and their ratio; the lower of the repeats counts. Goal: <= 2x. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


def _env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(LINKSTYLE_PROGRESS="0", PYTHONPATH=str(ROOT))
    if policy != "auto":
        env["OMP_WAIT_POLICY"] = policy
    return env


def _seconds(args: list[str], cwd: Path, policy: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=_env(policy), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs.h5")
    ap.add_argument("--repetitions", type=int, default=30, help="similarity.n_repetitions for the run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--policy", action="append", default=None,
                    help="auto (the stage chooses), ACTIVE or PASSIVE; default: auto, ACTIVE, PASSIVE")
    args = ap.parse_args()
    if not args.pairs.is_file():
        sys.exit(f"error: --pairs {args.pairs}: not found; run `dvc repro sample_pairs` first")
    policies = args.policy or ["auto", "ACTIVE", "PASSIVE"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["similarity"]["n_repetitions"] = args.repetitions
        (d / "similarity.yaml").write_text(yaml.safe_dump(params))
        (d / "params.yaml").write_text((ROOT / "tests" / "params_quick.yaml").read_text())
        _seconds([str(ROOT / "stages" / "world.py"), "--out", "world.h5"], d, "auto")
        stages = {
            "similarity": [str(ROOT / "stages" / "similarity.py"), "--pairs", str(args.pairs), "--params",
                           "similarity.yaml", "--metrics", "s.json", "--plot", "p.json", "--figure", "s.png"],
            "train_classifier": [str(ROOT / "stages" / "train_classifier.py"), "--world", "world.h5", "--out", "c.pt",
                                 "--metrics", "c.json", "--curves", "c.tsv"],
        }
        rows = []
        for stage, cmd in stages.items():
            for policy in policies:
                alone = min(_seconds(cmd, d, policy) for _ in range(args.repeats))
                busy = subprocess.Popen([sys.executable, "-c", BUSY])
                try:
                    time.sleep(1.0)  # long enough for the stage's load sample to see it
                    loaded = min(_seconds(cmd, d, policy) for _ in range(args.repeats))
                finally:
                    busy.kill()
                    busy.wait()
                rows.append((stage, policy, alone, loaded))
    print(f"{os.cpu_count()} cores; busy loop on core 0; similarity with {args.repetitions} repetitions, "
          "train_classifier on the quick world")
    print(f"{'stage':<18}{'OMP_WAIT_POLICY':<17}{'alone s':>9}{'beside loop s':>15}{'ratio':>7}")
    for stage, policy, alone, loaded in rows:
        print(f"{stage:<18}{policy:<17}{alone:>9.1f}{loaded:>15.1f}{loaded / alone:>7.2f}")


if __name__ == "__main__":
    main()
