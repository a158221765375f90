"""End to end: the quick parameter set through real `dvc repro` in a fresh git repository.

One repository is built per test session (the module fixture): the whole pipeline runs
once, then the tests read its outputs and metrics, check that a second `dvc repro`
reruns nothing, that forced reruns write the same bytes, and that a classifier parameter
reruns the classifier and what depends on it but neither the world nor the generator.
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
                 "data/links/ols.pt", "data/segmenter.pt", "data/tuning.h5", "data/tuning_open.h5", "data/changes.parquet",
                 "data/inn.pt", "data/invariances.h5", "reports/figures/invariance_samples.png",
                 "reports/figures/invariant_factors.png",
                 "data/motion.parquet", "reports/units_motion.csv", "reports/figures/motion_fields.png",
                 "data/counterfactuals.h5", "data/counterfactual_changes.parquet", "reports/counterfactual_units.csv",
                 "reports/figures/counterfactual_strips.png", "reports/figures/generated_samples.png",
                 "reports/figures/similarity.png", "reports/figures/cycle.png"):
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
    for kind in ("ols", "ridge", "mlp", "inn"):  # inn: the INN link at v = 0 (stage fit_inn)
        link = _metrics(d, f"link/{kind}.json")
        assert link["kind"] == kind and link["test_r2"] > 0.5
    inv = _metrics(d, "invariances.json")
    assert inv["n_seeds"] == 10 and 0 <= inv["class_agreement"] <= 1 and -1 <= inv["cosine_to_r"]["mean"] <= 1
    cycle = _metrics(d, "cycle.json")
    assert cycle["ssim_distance"]["mean"] < cycle["ssim_distance_baseline"]["mean"]


def test_report_page_is_whole(repo):
    """The report stage's page on the real quick outputs: every section, every figure embedded."""
    import re

    from linkstyle.report.page import SECTIONS

    text = (repo["dir"] / "reports/index.html").read_text()
    for spec in [*SECTIONS, "provenance"]:
        assert f'<section id="{getattr(spec, "id", spec)}">' in text
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert len(srcs) >= len(SECTIONS) and all(s.startswith("data:image/png;base64,") for s in srcs)
    n_units = len(pd.read_csv(repo["dir"] / "reports/units.csv"))
    assert len(re.findall(r'<tr id="unit-\d+">', text)) == n_units


@pytest.mark.parametrize("n_workers", [0])  # 1 vs 2 workers: tests/core/test_distribute.py
def test_quantify_parts_same_bytes_on_one_worker_and_in_process(repo, tmp_path, n_workers):
    """The quick pipeline ran quantify_parts on 2 Dask workers; the stage's own process writes the same bytes."""
    d = repo["dir"]
    params = yaml.safe_load((d / "params.yaml").read_text())
    assert params["cluster"]["n_workers"] == 2
    params["cluster"]["n_workers"] = n_workers
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "stages/quantify_parts.py", "--tuning", "data/tuning.h5", "--segmenter", "data/segmenter.pt",
          "--measures", str(tmp_path / "m.parquet"), "--changes", str(tmp_path / "c.parquet"),
          "--metrics", str(tmp_path / "q.json"), "--params", str(tmp_path / "params.yaml")], d)
    assert (tmp_path / "m.parquet").read_bytes() == (d / "data/measures.parquet").read_bytes()
    assert (tmp_path / "c.parquet").read_bytes() == (d / "data/changes.parquet").read_bytes()


def test_quantify_motion_same_bytes_in_process_as_on_two_workers(repo, tmp_path):
    d = repo["dir"]
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["cluster"]["n_workers"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "stages/quantify_motion.py", "--tuning", "data/tuning.h5", "--segmenter", "data/segmenter.pt",
          "--out", str(tmp_path / "m.parquet"), "--metrics", str(tmp_path / "m.json"),
          "--params", str(tmp_path / "params.yaml")], d)
    assert (tmp_path / "m.parquet").read_bytes() == (d / "data/motion.parquet").read_bytes()
    assert (tmp_path / "m.json").read_text() == (d / "reports/motion.json").read_text()


def test_tune_units_same_bytes_in_process_as_on_two_workers(repo, tmp_path):
    """The quick pipeline tuned on 2 Dask workers; the stage's own process writes the same file."""
    d = repo["dir"]
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["cluster"]["n_workers"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "stages/tune_units.py", "--pairs", "data/pairs.h5", "--link",
          f"data/links/{params['fit_link']['use']}.pt", "--out", str(tmp_path / "t.h5"),
          "--metrics", str(tmp_path / "t.json"), "--params", str(tmp_path / "params.yaml")], d)
    assert (tmp_path / "t.h5").read_bytes() == (d / "data/tuning.h5").read_bytes()
    assert (tmp_path / "t.json").read_text() == (d / "reports/tuning.json").read_text()


def test_both_tuning_modes_side_by_side(repo):
    d = repo["dir"]
    open_, closed = _metrics(d, "tuning_open.json"), _metrics(d, "tuning.json")
    assert (open_["mode"], closed["mode"]) == ("open_loop", "closed_loop"), "the faithful sweep is the default"
    assert closed["unit_transfer_median"] > open_["unit_transfer_median"]
    assert open_["n_units"] == closed["n_units"]
    modes = pd.read_csv(d / "reports/tuning_modes.csv")
    assert {"transfer_open_loop", "transfer_closed_loop", "off_target_closed_loop"} <= set(modes.columns)
    assert (d / "reports/figures/tuning_modes.png").exists()
    m = _metrics(d, "tuning_modes.json")
    changed = pd.read_csv(d / "reports/tuning_label_changes.csv")
    assert m["label_changes"] == len(changed) and 0 <= m["label_change_fraction"] <= 1
    units = pd.read_csv(d / "reports/units.csv")
    assert {"transfer", "off_target", "tuning_corr", "reachable", "unreachable_reason"} <= set(units.columns)
    assert (units["tuning_mode"] == "closed_loop").all(), "analyze_units reads the faithful sweep"
    assert units.loc[~units["reachable"], "strongest_part"].isna().all(), "unreachable units get no label"


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


def test_attribute_units_scores_every_method_and_the_link(repo):
    d = repo["dir"]
    metrics = _metrics(d, "attribution.json")
    methods = yaml.safe_load(QUICK.read_text())["attribute_units"]["methods"]
    assert set(metrics["methods"]) == set(methods) | {"link"}
    summary = pd.read_csv(d / "reports/attribution/summary.csv")
    assert summary["part_mass"].dropna().between(0, 1).all() and summary["chance"].dropna().between(0, 1).all()
    sanity = pd.read_csv(d / "reports/attribution/sanity.csv")
    assert sanity["randomised"].iloc[0] == "none" and (sanity[methods + ["link"]].iloc[0].dropna() == 1.0).all()
    for name in ("attribution_grid", "attribution_scores", "attribution_sanity"):
        assert (d / "reports/figures" / f"{name}.png").exists(), name


def test_second_repro_reruns_nothing(repo):
    assert _ran(repo["second"]) == set()


def _outs(lock: dict) -> dict:
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


# Rerun elsewhere against this pipeline's bytes: the training stages (test_reproducible,
# under two CPU settings) and the Dask stages (in process vs on workers, above).
RECHECKED = {"world", "train_generator", "train_classifier", "tune_units", "quantify_parts", "quantify_motion"}


def test_forced_rerun_gives_the_same_bytes(repo):
    """Same params, same bytes: every stage not rerun by another test here is forced to run
    again on its own (`dvc repro -f -s`), and every output (checkpoints, HDF5, parquet,
    figures, metrics) hashes as before. Batch-size independence, which holds up to float
    rounding only, is tested per module (test_pairs, test_tuning, ...)."""
    d = repo["dir"]
    before = _outs(yaml.safe_load((d / "dvc.lock").read_text()))
    stages = sorted(_stage_names() - RECHECKED)
    out = _dvc("repro", "-f", "-s", *stages, cwd=d).stdout
    assert _ran(out) == set(stages)
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
    """Changing the MLP link reruns its own fit and nothing that uses the ridge link (but the
    stages that read the whole fit_link section: attribute_units refits the used link with its
    options, and the report shows every param)."""
    d = repo["dir"]
    original = (d / "params.yaml").read_text()
    params = yaml.safe_load(original)
    try:
        params["fit_link"]["mlp"]["epochs"] += 1
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert _ran(_dvc("repro", "--dry", cwd=d).stdout) == {"fit_link@mlp", "attribute_units", "report"}
        params["fit_link"]["mlp"]["epochs"] -= 1
        params["fit_link"]["use"] = "ols"
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        ran = _ran(_dvc("repro", "--dry", cwd=d).stdout)  # a dry run cannot know which outputs will change
        assert {"evaluate_link", "tune_units"} <= ran and not {s for s in ran if s.startswith("fit_link")}
    finally:
        (d / "params.yaml").write_text(original)


def test_editing_a_mask_reruns_the_segmenter(repo):
    d = repo["dir"]
    (d / "masks" / "note.txt").write_text("a user's edit\n")
    ran = _ran(_dvc("repro", "--dry", cwd=d).stdout)
    (d / "masks" / "note.txt").unlink()
    assert "train_segmenter" in ran and "train_generator" not in ran


def _cached_outs(d: Path) -> dict:
    """Path -> bytes of every output DVC caches (data/ and the report), the ones a remote holds."""
    files = [p for p in sorted((d / "data").rglob("*")) if p.is_file()] + [d / "reports/index.html"]
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in files}


def _round_trip(d: Path, remote_name: str) -> None:
    """Push to `remote_name`, delete the cache and every cached output, pull, compare."""
    before = _cached_outs(d)
    _dvc("push", "-r", remote_name, cwd=d)
    shutil.rmtree(d / "data")
    (d / "reports/index.html").unlink()
    shutil.rmtree(d / ".dvc" / "cache")
    _dvc("pull", "-r", remote_name, cwd=d)
    assert _cached_outs(d) == before
    status = _dvc("status", cwd=d).stdout
    assert "up to date" in status, status
    assert _ran(_dvc("repro", cwd=d).stdout) == set()


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
    _dvc("remote", "add", "-f", "test", str(tmp_path / "remote"), cwd=d)
    _round_trip(d, "test")


def _skip(why: str):
    print(f"SKIPPED SSH round trip: {why}", file=sys.stderr)
    pytest.skip(why)


@pytest.fixture()
def sshd(tmp_path):
    """An OpenSSH server on 127.0.0.1, key login only, for this test's user; stopped afterwards."""
    import getpass
    import socket
    import time

    server = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if server is None:
        _skip("no OpenSSH server (Debian: apt-get install openssh-server; `make test` does it as root)")
    try:
        import dvc_ssh  # noqa: F401
    except ImportError:
        _skip("the dvc-ssh plugin is not installed (pip install -e '.[test]')")
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host_key", "user_key"):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], d)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([server, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for _ in range(50):
        if proc.poll() is not None:
            _skip(f"sshd did not start: {proc.stdout.read()[-300:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield {"user": getpass.getuser(), "port": port, "key": d / "user_key", "known_hosts": d / "known_hosts"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_push_then_pull_through_a_real_ssh_server(repo, tmp_path, sshd):
    d = repo["dir"]
    url = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}{tmp_path / 'ssh-remote'}"
    _dvc("remote", "add", "-f", "viassh", url, cwd=d)
    _dvc("remote", "modify", "--local", "viassh", "keyfile", str(sshd["key"]), cwd=d)
    _round_trip(d, "viassh")
    assert any((tmp_path / "ssh-remote").rglob("*")), "nothing arrived on the SSH side"


def test_experiment_reruns_only_dependent_stages_and_diffs_the_metric(repo):
    d = repo["dir"]
    _run(["git", "add", "-A"], d)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "quick pipeline"], d)
    before = _metrics(d, "similarity.json")["rsa_correlation"]["W-R"]["mean"]
    out = _dvc("exp", "run", "-S", "similarity.seed=1", cwd=d).stdout
    assert _ran(out) == {"similarity", "report"}  # the report shows the similarity numbers and params
    assert _metrics(d, "similarity.json")["rsa_correlation"]["W-R"]["mean"] != before
    diff = json.loads(_dvc("metrics", "diff", "--json", cwd=d).stdout)
    assert any(k.startswith("rsa_correlation") for k in diff["reports/similarity.json"]), diff
    shown = json.loads(_dvc("exp", "show", "--json", cwd=d).stdout)
    assert _has_param(shown, "similarity", "seed", 1), "dvc exp show lists the experiment's similarity.seed"
    plots = _dvc("plots", "show", "--json", cwd=d).stdout
    assert "reports/curves/classifier.tsv" in plots
