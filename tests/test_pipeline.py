"""End to end: the quick parameter set through real `dvc repro` in a fresh git repository.

One repository is built per test session (the module fixture): the whole pipeline runs
once, then the tests read its outputs and metrics, check that a second `dvc repro`
reruns nothing, that a forced rerun writes the same bytes, and that a classifier parameter reruns the classifier and what depends
on it but neither the world nor the generator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "tests" / "params_quick.yaml"


def _env() -> dict:
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    # The stages run `python` from PATH: make it this interpreter, so the pipeline sees
    # the same environment (and the same installed linkstyle) as the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd, check)


def _ran(output: str) -> set[str]:
    """Stages that `dvc repro` ran, from its 'Running stage' lines."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("pipeline")
    for name in ("stages", "linkstyle", "masks"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    shutil.copy(QUICK, d / "params.yaml")
    shutil.copy(ROOT / ".dvcignore", d / ".dvcignore")
    (d / ".gitignore").write_text("/data/\n__pycache__/\n")
    _run(["git", "init", "-q"], d)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], d)
    _dvc("init", "-q", cwd=d)
    _dvc("config", "core.analytics", "false", cwd=d)
    first = _dvc("repro", cwd=d)
    second = _dvc("repro", cwd=d)
    return {"dir": d, "first": first.stdout, "second": second.stdout}


def _stage_names() -> set[str]:
    """dvc.yaml's stages, with each foreach stage expanded over its params list."""
    params = yaml.safe_load(QUICK.read_text())
    names = set()
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in st:
            node = params
            for key in st["foreach"].strip("${} ").split("."):
                node = node[key]
            names.update(f"{name}@{item}" for item in node)
        else:
            names.add(name)
    return names


def _metrics(d: Path, name: str) -> dict:
    return json.loads((d / "reports" / name).read_text())


def test_every_stage_ran_and_wrote_its_outputs(repo):
    d = repo["dir"]
    assert _ran(repo["first"]) == _stage_names()
    for path in ("data/world.h5", "data/generator.pt", "data/classifier.pt", "data/pairs.h5", "data/links/ridge.pt",
                 "data/links/ols.pt", "data/segmenter.pt", "data/tuning.h5", "data/changes.parquet",
                 "data/motion.parquet", "reports/units_motion.csv", "reports/figures/motion_fields.png",
                 "data/counterfactuals.h5", "data/counterfactual_changes.parquet", "reports/counterfactual_units.csv",
                 "reports/figures/counterfactual_strips.png", "reports/figures/generated_samples.png", "reports/figures/similarity.png", "reports/figures/cycle.png"):
        assert (d / path).exists(), path
    assert (d / "dvc.lock").exists()


def test_metrics_are_written_and_sane(repo):
    d = repo["dir"]
    clf = _metrics(d, "classifier.json")
    assert 0.8 <= clf["test_accuracy"] <= 1.0
    quality = _metrics(d, "quality.json")
    fd = quality["frechet_r"]
    assert fd["real_vs_real"] >= 0 and fd["real_vs_generated_psi1"] > fd["real_vs_real"]
    pairs = _metrics(d, "pairs.json")
    assert set(pairs["acceptance"]) == {"train", "test"}
    assert all(0 < a <= 1 for a in pairs["acceptance"]["train"].values())
    sim = _metrics(d, "similarity.json")
    assert sim["ari"]["R"]["mean"] > sim["ari"]["control_shuffled"]["mean"] + 0.3
    for kind in ("ols", "ridge", "mlp"):
        link = _metrics(d, f"link/{kind}.json")
        assert link["kind"] == kind and link["test_r2"] > 0.5
    cycle = _metrics(d, "cycle.json")
    assert cycle["ssim_distance"]["mean"] < cycle["ssim_distance_baseline"]["mean"]


def test_motion_and_counterfactual_outputs(repo):
    d = repo["dir"]
    moved = pd.read_csv(d / "reports/units_motion.csv")
    assert len(moved) and set(moved["metric"].dropna()) <= set(_metrics(d, "analysis.json")["motion"]["metrics"])
    cf = _metrics(d, "counterfactuals.json")
    with h5py.File(d / "data/counterfactuals.h5", "r") as f:
        n = len(f["trajectories/steps"])
        assert n == cf["n_trajectories"] > 0 and len(f["path/step"]) == int((f["trajectories/steps"][:] + 1).sum())
    assert 0.0 <= cf["success_rate"] <= 1.0
    changes = pd.read_parquet(d / "data/counterfactual_changes.parquet")
    assert {"parts", "motion"} == set(changes["family"])


def test_pairs_file_schema(repo):
    with h5py.File(repo["dir"] / "data/pairs.h5", "r") as f:
        for split in ("train", "test"):
            n = {len(f[split][k]) for k in ("w", "r", "logits", "label", "seed")}
            assert len(n) == 1
            assert f[split]["r"].chunks is not None and f[split]["r"].compression == "gzip"
        seeds = list(f["train"]["seed"][:]) + list(f["test"]["seed"][:])
        assert len(set(seeds)) == len(seeds), "every sample has its own seed"
        assert "generator_fingerprint" in f.attrs and "classifier_fingerprint" in f.attrs


def test_changes_table_is_tidy(repo):
    changes = pd.read_parquet(repo["dir"] / "data/changes.parquet")
    assert {"unit", "seed", "class", "part", "metric", "change"} <= set(changes.columns)
    assert {"segmenter", "ground_truth"} == set(changes["source"])


def test_second_repro_reruns_nothing(repo):
    assert _ran(repo["second"]) == set()


def _outs(lock: dict) -> dict:
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


def test_forced_rerun_gives_the_same_bytes(repo):
    """Same params, same bytes: every stage forced to rerun, and every output (checkpoints,
    HDF5, parquet, figures, metrics) hashes as before. Batch-size independence, which holds
    up to float rounding only, is tested per module (test_pairs, test_tuning, ...)."""
    d = repo["dir"]
    before = _outs(yaml.safe_load((d / "dvc.lock").read_text()))
    _dvc("repro", "-f", cwd=d)
    after = _outs(yaml.safe_load((d / "dvc.lock").read_text()))
    assert after.keys() == before.keys()
    assert sorted(p for p in before if before[p] != after[p]) == []


def test_classifier_param_reruns_only_what_depends_on_it(repo):
    d = repo["dir"]
    params = yaml.safe_load((d / "params.yaml").read_text())
    original = (d / "params.yaml").read_text()
    params["train_classifier"]["epochs"] += 1
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _dvc("repro", "--dry", cwd=d).stdout
    (d / "params.yaml").write_text(original)
    ran = _ran(out)
    assert "train_classifier" in ran
    assert not {"world", "train_generator", "train_segmenter"} & ran


def test_each_link_kind_is_its_own_output(repo):
    """Changing the MLP link reruns its own fit and nothing that uses the ridge link."""
    d = repo["dir"]
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["fit_link"]["mlp"]["epochs"] += 1
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(_dvc("repro", "--dry", cwd=d).stdout) == {"fit_link@mlp"}
    params["fit_link"]["mlp"]["epochs"] -= 1
    params["fit_link"]["use"] = "ols"
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_dvc("repro", "--dry", cwd=d).stdout)  # a dry run cannot know which outputs will change
    assert {"evaluate_link", "tune_units"} <= ran and not {s for s in ran if s.startswith("fit_link")}
    params["fit_link"]["use"] = "ridge"
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_editing_a_mask_reruns_the_segmenter(repo):
    d = repo["dir"]
    (d / "masks" / "note.txt").write_text("a user's edit\n")
    ran = _ran(_dvc("repro", "--dry", cwd=d).stdout)
    (d / "masks" / "note.txt").unlink()
    assert "train_segmenter" in ran and "train_generator" not in ran


def _cached_outs(d: Path) -> dict:
    """Path -> bytes of every output DVC caches (data/), the ones a remote holds."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted((d / "data").rglob("*")) if p.is_file()}


def _has_param(node, section: str, key: str, value) -> bool:
    """Whether some `section: {key: value}` mapping appears anywhere in a JSON tree."""
    if isinstance(node, dict):
        sec = node.get(section)
        if isinstance(sec, dict) and sec.get(key) == value:
            return True
        return any(_has_param(v, section, key, value) for v in node.values())
    if isinstance(node, list):
        return any(_has_param(v, section, key, value) for v in node)
    return False


def test_push_then_pull_restores_every_output_byte_for_byte(repo, tmp_path):
    d = repo["dir"]
    remote = tmp_path / "remote"
    _dvc("remote", "add", "-f", "-d", "test", str(remote), cwd=d)
    before = _cached_outs(d)
    _dvc("push", cwd=d)
    shutil.rmtree(d / "data")
    shutil.rmtree(d / ".dvc" / "cache")
    _dvc("pull", cwd=d)
    assert _cached_outs(d) == before
    status = _dvc("status", cwd=d).stdout
    assert "up to date" in status, status
    assert _ran(_dvc("repro", cwd=d).stdout) == set()


def test_experiment_reruns_only_dependent_stages_and_diffs_the_metric(repo):
    d = repo["dir"]
    _run(["git", "add", "-A"], d)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "quick pipeline"], d)
    before = _metrics(d, "similarity.json")["rsa_correlation"]["W-R"]["mean"]
    out = _dvc("exp", "run", "-S", "similarity.seed=1", cwd=d).stdout
    assert _ran(out) == {"similarity"}
    assert _metrics(d, "similarity.json")["rsa_correlation"]["W-R"]["mean"] != before
    diff = json.loads(_dvc("metrics", "diff", "--json", cwd=d).stdout)
    assert any(k.startswith("rsa_correlation") for k in diff["reports/similarity.json"]), diff
    shown = json.loads(_dvc("exp", "show", "--json", cwd=d).stdout)
    assert _has_param(shown, "similarity", "seed", 1), "dvc exp show lists the experiment's similarity.seed"
    plots = _dvc("plots", "show", "--json", cwd=d).stdout
    assert "reports/curves/classifier.tsv" in plots
