"""Same bytes on any x86-64 CPU: the training stages under two CPU settings give equal hashes.

A machine decides a run's arithmetic through its instruction set (AVX-512 or AVX2 kernels
in ATen, oneDNN and MKL round differently) and its thread count. The stages pin both
(linkstyle/core/runtime.py), so a run that asks for the best kernels of this machine and
one that emulates an AVX2-only machine must write the same files. Unpinned, the two
differ wherever the machine has AVX-512: the control that shows the test can fail.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("world.h5", "generator.pt", "classifier.pt")
BEST = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"}
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell"}


def _has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def _train(d: Path, env: dict) -> dict:
    """world, train_generator and train_classifier on a tiny world; md5 of each output."""
    full = {k: v for k, v in os.environ.items() if k not in ("LINKSTYLE_THREADS", "LINKSTYLE_UNPINNED")}
    full.update(env, LINKSTYLE_PROGRESS="0", PYTHONPATH=str(ROOT))
    stages = [("world", "--out", "world.h5"),
              ("train_generator", "--world", "world.h5", "--out", "generator.pt", "--metrics", "g.json", "--curves", "g.tsv"),
              ("train_classifier", "--world", "world.h5", "--out", "classifier.pt", "--metrics", "c.json", "--curves", "c.tsv")]
    for name, *args in stages:
        p = subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=d, env=full,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
    return {o: hashlib.md5((d / o).read_bytes()).hexdigest() for o in OUTPUTS}


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory) -> Path:
    params = yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())
    params["world"].update(n_train_per_class=40, n_test_per_class=8)
    params["train_generator"].update(epochs=2)
    params["train_classifier"].update(epochs=1)
    d = tmp_path_factory.mktemp("pinned")
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    return d


def _run_in(tiny_params: Path, tmp_path: Path, name: str, env: dict) -> dict:
    d = tmp_path / name
    d.mkdir()
    (d / "params.yaml").write_text((tiny_params / "params.yaml").read_text())
    return _train(d, env)


def test_training_stages_give_the_same_bytes_under_two_cpu_settings(tiny_params, tmp_path):
    best = _run_in(tiny_params, tmp_path, "best", BEST)
    avx2 = _run_in(tiny_params, tmp_path, "avx2", AVX2_ONLY)
    assert best == avx2
    if _has_avx512():
        unpinned = _run_in(tiny_params, tmp_path, "unpinned", {**BEST, "LINKSTYLE_UNPINNED": "1", "LINKSTYLE_THREADS": "2"})
        assert unpinned["world.h5"] == best["world.h5"], "the world is integer-exact arithmetic"
        assert unpinned["generator.pt"] != best["generator.pt"], \
            "unpinned AVX-512 kernels should round differently; if not, this test cannot tell pinning works"
