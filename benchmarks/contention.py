"""Steady under load: one CPU-heavy stage alone, then beside a busy loop on one core, in one run.

Usage: python benchmarks/contention.py [--repetitions 30] [--repeats 2] [--policy PASSIVE --policy ACTIVE]

The stage is `similarity` (k-means and RSA over 100 resamples of the pairs): its OpenMP
k-means opens many small parallel regions, the case where waiting threads matter most.
It runs on data/pairs.h5 (run `dvc repro sample_pairs` first) with the repetitions cut
to --repetitions, once per OpenMP wait policy: PASSIVE is what every stage gets
(linkstyle/core/runtime.py), ACTIVE is OpenMP's spinning, the old behaviour. The busy
loop is a second process pinned to core 0 for the whole measurement. Prints seconds alone,
seconds beside the loop, and their ratio per policy; the lower of the repeats counts.
Goal: beside the loop <= 2x alone. Run it on an otherwise idle machine.
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


def _stage_seconds(pairs: Path, params: Path, out: Path, policy: str) -> float:
    env = {**os.environ, "LINKSTYLE_PROGRESS": "0", "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": policy}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "stages" / "similarity.py"), "--pairs", str(pairs),
                    "--params", str(params), "--metrics", str(out / "s.json"), "--plot", str(out / "p.json"),
                    "--figure", str(out / "s.png")], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs.h5")
    ap.add_argument("--repetitions", type=int, default=30, help="similarity.n_repetitions for the run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--policy", action="append", default=None, help="OpenMP wait policies (default PASSIVE, ACTIVE)")
    args = ap.parse_args()
    if not args.pairs.is_file():
        sys.exit(f"error: --pairs {args.pairs}: not found; run `dvc repro sample_pairs` first")
    policies = args.policy or ["PASSIVE", "ACTIVE"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["similarity"]["n_repetitions"] = args.repetitions
        (out / "params.yaml").write_text(yaml.safe_dump(params))
        rows = []
        for policy in policies:
            alone = min(_stage_seconds(args.pairs, out / "params.yaml", out, policy) for _ in range(args.repeats))
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                time.sleep(0.5)
                loaded = min(_stage_seconds(args.pairs, out / "params.yaml", out, policy) for _ in range(args.repeats))
            finally:
                busy.kill()
                busy.wait()
            rows.append((policy, alone, loaded))
    print(f"similarity, {args.repetitions} repetitions, {os.cpu_count()} cores; busy loop on core 0")
    print(f"{'OMP_WAIT_POLICY':<16}{'alone s':>10}{'beside loop s':>16}{'ratio':>8}")
    for policy, alone, loaded in rows:
        print(f"{policy:<16}{alone:>10.1f}{loaded:>16.1f}{loaded / alone:>8.2f}")


if __name__ == "__main__":
    main()
