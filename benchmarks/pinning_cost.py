"""What pinning the CPU arithmetic costs: the same work pinned (AVX2 kernels, 2 threads) and
unpinned (this machine's best kernels, 2 threads), side by side in one run.

Usage: python benchmarks/pinning_cost.py [--repeats 2]

Each setting runs in a fresh process, since the maths libraries read the pins as they
load: the quick world's train_generator and train_classifier stages (training: the
convolutions' forward and backward passes), and a forward pass of the default
architectures over 4,096 latents (inference, as tune_units and the quantify stages
do). Prints seconds per setting and the pinned / unpinned ratio; the lower of the
repeats counts. Run it on an idle machine: this torch build slows sharply when the
cores are oversubscribed.
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

INFERENCE = """
import time, torch
from linkstyle.core import runtime
runtime.resolve_device("cpu")
from linkstyle.models.small_resnet import SmallResNet
from linkstyle.models.stylegen import StyleGen, StyleGenConfig
from linkstyle.world.procedural import CLASS_NAMES, PART_NAMES
torch.manual_seed(0)
g = StyleGen(StyleGenConfig(w_dim=64, channels=(128, 128, 64, 32), encoder_channels=(32, 64, 128)), CLASS_NAMES, PART_NAMES).eval()
f = SmallResNet(CLASS_NAMES).eval()
w = torch.randn(4096, 64)
t0 = time.perf_counter()
with torch.inference_mode():
    for a in range(0, len(w), 256):
        f.features(f.preprocess(g._synthesis(w[a:a + 256], False)[0]))
print(time.perf_counter() - t0)
"""


def _env(pinned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LINKSTYLE_UNPINNED"}
    env.update(LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="2", PYTHONPATH=str(ROOT))
    if not pinned:
        env["LINKSTYLE_UNPINNED"] = "1"
    return env


def _stage(d: Path, env: dict, name: str, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=d, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _inference(env: dict) -> float:
    # cli first, as in a stage: it pins before torch loads
    code = "from linkstyle.core import cli\n" + INFERENCE
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())))
        subprocess.run([sys.executable, str(ROOT / "stages" / "world.py"), "--out", "world.h5"], cwd=d, env=_env(True),
                       check=True, stdout=subprocess.DEVNULL)
        work = {
            "train_generator (quick)": lambda env: _stage(d, env, "train_generator", "--world", "world.h5", "--out", "g.pt",
                                                          "--metrics", "g.json", "--curves", "g.tsv"),
            "train_classifier (quick)": lambda env: _stage(d, env, "train_classifier", "--world", "world.h5", "--out", "c.pt",
                                                           "--metrics", "c.json", "--curves", "c.tsv"),
            "G + f forward, 4,096 images (default sizes)": _inference,
        }
        print(f"{'work':<44} {'pinned s':>9} {'unpinned s':>10} {'ratio':>6}")
        for name, fn in work.items():
            # alternate the settings so drift in machine load hits both alike
            times = {True: [], False: []}
            for _ in range(a.repeats):
                for pin in (True, False):
                    times[pin].append(fn(_env(pin)))
            p, u = min(times[True]), min(times[False])
            print(f"{name:<44} {p:9.2f} {u:10.2f} {p / u:6.2f}", flush=True)


if __name__ == "__main__":
    main()
