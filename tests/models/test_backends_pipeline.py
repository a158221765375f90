"""A user's own models through `dvc repro`: a StyleGAN2-style pickle with a torchvision
classifier, and a plugin pair, each driven through class_means, sample_pairs, fit_link and
tune_units exactly as params.yaml would name them (no built-in model is trained). A
StyleGAN3-style pickle runs the whole pipeline to the report in test_own_models_pipeline.py."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import torch
import torchvision
import yaml

from .stylegan_toy import write_toy_pickle

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from test_pipeline import QUICK, ROOT, _dvc, _ran, _run  # noqa: E402

STAGES = {"class_means", "sample_pairs", "fit_link@ridge", "tune_units"}


def _repo(d, models: dict) -> None:
    for name in ("stages", "linkstyle", "masks"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", d / ".dvcignore")
    params = yaml.safe_load(QUICK.read_text())
    params["models"] = {**models, "real_images": "data/world.h5"}  # check_models is not run here
    params["sample_pairs"].update(n_train_per_class=40, n_test_per_class=6, keep_correct=False, batch_size=16)
    params["fit_link"]["kinds"] = ["ridge"]
    params["tune_units"].update(units=[0, 1], unit_range=None, n_seeds=2, batch_size=16)
    params["cluster"]["n_workers"] = 0
    params["class_means"]["n_samples"] = 50
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / ".gitignore").write_text("/data/\n__pycache__/\n")
    _run(["git", "init", "-q"], d)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], d)
    _dvc("init", "-q", cwd=d)
    _dvc("config", "core.analytics", "false", cwd=d)


def _check_outputs(d, n_units: int, w_dim: int, class_names: list[str]) -> None:
    with h5py.File(d / "data" / "pairs.h5") as f:
        assert f["train"]["r"].shape == (80, n_units) and f["train"]["w"].shape == (80, w_dim)
        assert len(set(f["train"]["seed"][:].tolist())) == 80  # one recorded seed per sample
    with h5py.File(d / "data" / "tuning.h5") as f:
        assert any(v.ndim >= 2 for v in f.values() if isinstance(v, h5py.Dataset))
    means = yaml.safe_load((d / "data" / "class_means.json").read_text())
    assert means["class_names"] == class_names


def test_stylegan_pickle_and_torchvision_classifier_through_dvc_repro(tmp_path):
    d = tmp_path / "repo"
    d.mkdir()
    pkl, code = write_toy_pickle(d / "models", per_class_avg=False)  # StyleGAN2/3-like: means are estimated
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), d / "models" / "resnet18.pth")
    names = ["cat", "dog"]
    _repo(d, {"generator": {"kind": "stylegan", "path": "models/network-snapshot.pkl", "code": "models/code",
                            "class_indices": [3, 7], "class_names": names},
              "classifier": {"kind": "torchvision", "arch": "resnet18", "path": "models/resnet18.pth",
                             "class_indices": [281, 207], "class_names": names}})
    out = _dvc("repro", "tune_units", cwd=d)
    assert _ran(out.stdout) == STAGES
    _check_outputs(d, 512, 16, names)
    means = yaml.safe_load((d / "data" / "class_means.json").read_text())
    assert means["source"] == "estimated" and means["n_samples"] == 50
    assert _ran(_dvc("repro", "tune_units", cwd=d).stdout) == set()


def test_plugin_models_through_dvc_repro(tmp_path):
    d = tmp_path / "repo"
    (d / "models").mkdir(parents=True)
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        import toy_plugin
    finally:
        sys.path.remove(str(ROOT / "docs" / "examples"))
    torch.save(toy_plugin.make_generator(n_classes=2).state_dict(), d / "models" / "gen.pt")
    torch.save(toy_plugin.make_classifier(n_classes=2).state_dict(), d / "models" / "clf.pt")
    shutil.copytree(ROOT / "docs" / "examples", d / "plugins")
    plugin = {"kind": "plugin", "code": "plugins", "options": {"n_classes": 2}}
    _repo(d, {"generator": {**plugin, "factory": "toy_plugin:make_generator", "path": "models/gen.pt"},
              "classifier": {**plugin, "factory": "toy_plugin:make_classifier", "path": "models/clf.pt"}})
    assert _ran(_dvc("repro", "tune_units", cwd=d).stdout) == STAGES
    _check_outputs(d, 12, 8, ["toy_0", "toy_1"])
    bad = yaml.safe_load((d / "params.yaml").read_text())
    bad["models"]["classifier"]["factory"] = "toy_plugin:no_such_function"
    (d / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    err = _run([sys.executable, "stages/sample_pairs.py", "--out", "x.h5", "--metrics", "x.json", "--class-means",
                "data/class_means.json"], d, check=False)
    assert err.returncode != 0 and "models.classifier.factory: toy_plugin has no function 'no_such_function'" in err.stderr
    assert "Traceback" not in err.stderr
    # A classifier swapped after the pairs were made: tune_units names the width mismatch.
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), d / "models" / "r18.pth")
    bad["models"]["classifier"] = {"kind": "torchvision", "arch": "resnet18", "path": "models/r18.pth",
                                   "class_names": ["toy_0", "toy_1"], "class_indices": [0, 1]}
    (d / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    err = _run([sys.executable, "stages/tune_units.py", "--pairs", "data/pairs.h5", "--link", "data/links/ridge.pt",
                "--out", "t.h5", "--metrics", "t.json"], d, check=False)
    assert err.returncode != 0 and "Traceback" not in err.stderr
    assert "pairs have r of 12 units but the classifier in models.classifier has a 512-unit penultimate layer" in err.stderr
