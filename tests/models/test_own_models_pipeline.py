"""A researcher's own models through the whole pipeline to the report, as the README's
researcher section says: profiles/own-cpu.yaml with `models` pointed at a StyleGAN3-like
network pickle (NVlabs' format, built offline) and a torchvision ResNet-18
state dict for 3 classes, a few labelled masks and a folder of real images. No built-in
model is trained, and nothing on the page comes from the built-in world."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from .stylegan_toy import write_toy_pickle
from .test_backends_pipeline import ROOT, _dvc, _ran, _run

NAMES = ["cat", "dog", "fox"]
BUILTIN = {"world", "train_generator", "train_classifier"}


def _shrink(p: dict) -> dict:
    """The own-cpu profile at test size (every stage still runs its real code)."""
    p["class_means"].update(n_samples=30)
    p["check_models"].update(n_per_class=10, n_figure=2)
    p["sample_pairs"].update(n_train_per_class=24, n_test_per_class=6, keep_correct=False)
    p["similarity"].update(n_repetitions=3, per_class=8, n_init=2)
    p["fit_inn"].update(mean="none", n_blocks=2, hidden=16, embed_dim=8, embed_hidden=16, epochs=2, mean_samples=2)
    p["invariances"].update(n_seeds=3, n_samples=2, n_baseline_per_class=4, n_figure_seeds=2, n_figure_samples=2,
                            metrics=["area"])
    p["evaluate_link"].update(n_figure_per_class=1)
    p["train_segmenter"].update(n_eval=4)
    p["train_segmenter"]["model"].update(n_shots=6, channels=[8], dilations=[1, 1], epochs=5)
    p["tune_units"].update(unit_range=[0, 3], n_seeds=2)
    p["tune_units"]["closed_loop"].update(walk_steps=2, polish_steps=0)
    p["compare_tuning"].update(n_strip_units=2, n_strip_seeds=2)
    p["analyze_units"].update(n_strip_seeds=2, tsne_perplexity=1.0)
    p["attribute_units"].update(n_per_part=1, n_control=1, n_seeds=2, am_seeds=1, sanity_units=1, sanity_seeds=1,
                                sanity_link_pairs=20, occlusion={"patch": 4, "stride": 4, "baseline": 0.5,
                                                                 "perturbations_per_eval": 16},
                                am_pixel={**p["attribute_units"]["am_pixel"], "steps": 2},
                                am_latent={**p["attribute_units"]["am_latent"], "steps": 2})
    p["motion_fields"].update(n_units=2)
    p["counterfactuals"].update(class_pairs=[[0, 1]], n_seeds=1, max_steps=5, n_strips=1)
    return p


def _own_repo(d, generator: str) -> None:
    for name in ("stages", "linkstyle"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, d / name)
    pkl, code = write_toy_pickle(d / "models", per_class_avg=False, generator=generator)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), d / "models" / "resnet18.pth")
    p = yaml.safe_load((ROOT / "profiles" / "own-cpu.yaml").read_text())
    p["models"] = {"generator": {"kind": "stylegan", "path": "models/network-snapshot.pkl", "code": "models/code",
                                 "class_indices": [0, 1, 2], "class_names": NAMES},
                   "classifier": {"kind": "torchvision", "arch": "resnet18", "path": "models/resnet18.pth",
                                  "class_indices": [0, 1, 2], "class_names": NAMES},
                   "real_images": "real"}
    (d / "params.yaml").write_text(yaml.safe_dump(_shrink(p), sort_keys=False))
    # A few labelled masks (a box: the segmenter's labels need not be anatomy to be a part) ...
    (d / "masks").mkdir()
    (d / "masks" / "labels.txt").write_text("background\nbox\n")
    rows = ["file,seed,class"]
    for k in range(6):
        mask = np.zeros((16, 16), np.uint8)
        mask[4 + k % 3: 12, 3: 11 + k % 3] = 1
        Image.fromarray(mask).save(d / "masks" / f"m{k}.png")
        rows.append(f"m{k}.png,{30000000 + k},{k % 3}")
    (d / "masks" / "samples.csv").write_text("\n".join(rows) + "\n")
    # ... and real images, one folder per class (noise here: the numbers only have to exist).
    rng = np.random.default_rng(0)
    for name in NAMES:
        (d / "real" / name).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / "real" / name / f"{k}.png")
    (d / ".gitignore").write_text("/data/\n__pycache__/\n")
    _run(["git", "init", "-q"], d)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"], d)
    _dvc("init", "-q", cwd=d)
    _dvc("config", "core.analytics", "false", cwd=d)


# StyleGAN3-like: the harder case (margins, in-place writes, reverse-mode Jacobians). A
# StyleGAN2-like pickle ("Generator") passes the same test (183 s); test_backends_pipeline
# runs it through tune_units at a quarter of the cost.
@pytest.mark.parametrize("generator", ["Generator3"], ids=["stylegan3"])
def test_own_models_reach_the_report_without_training_a_builtin_model(tmp_path, generator):
    d = tmp_path / "repo"
    d.mkdir()
    _own_repo(d, generator)
    out = _dvc("repro", cwd=d).stdout
    ran = _ran(out)
    assert "report" in ran and (d / "reports" / "index.html").is_file()
    # The built-in stages ran as notes: no training, no world.
    for stage, what in (("world", "world: skipped"), ("train_generator", "train_generator: skipped"),
                        ("train_classifier", "train_classifier: skipped")):
        assert what in out, f"{stage} did not say it was skipped"
    assert "epoch" not in (d / "reports" / "curves" / "generator.tsv").read_text()
    assert (d / "data" / "world.h5").stat().st_size < 1000
    assert _ran(_dvc("repro", cwd=d).stdout) == set()
    assert "changed" not in _dvc("status", cwd=d).stdout
    with h5py.File(d / "data" / "pairs.h5") as f:  # one recorded seed per sample, r of the classifier's width
        assert f["train"]["r"].shape == (72, 512) and len(set(f["train"]["seed"][:].tolist())) == 72
    means = yaml.safe_load((d / "data" / "class_means.json").read_text())
    assert means["source"] == "estimated" and means["class_names"] == NAMES  # StyleGAN2/3: one w_avg, not per class
    quality = yaml.safe_load((d / "reports" / "quality.json").read_text())
    assert quality["n_units"] == 512 and quality["real_images"]["n"] == 12
    assert set(quality["real_images"]["accuracy"]) == set(NAMES)
    page = (d / "reports" / "index.html").read_text()
    assert "What the 512 units" in page and "resnet18" in page and "network-snapshot.pkl" in page
    assert "classifier test accuracy" not in page and "procedural world" not in page
    assert "train_generator" not in page.split("Where this came from")[-1]  # its params are not shown


def test_real_image_folder_reads_one_folder_per_class_and_names_what_is_wrong(tmp_path):
    from linkstyle.core.errors import UserError
    from linkstyle.models.quality import real_image_folder

    rng = np.random.default_rng(0)
    assert real_image_folder(tmp_path, ("cat", "dog"), 8) is None  # no class folder: skipped
    for name, n in (("cat", 3), ("dog", 2)):
        (tmp_path / name).mkdir()
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(tmp_path / name / f"{k}.png")
    real = real_image_folder(tmp_path, ("cat", "dog"), 8)
    assert real.a.shape == (3, 8, 8, 3) and real.b.shape == (2, 8, 8, 3) and real.a.dtype == np.uint8
    assert real.labels_a.tolist() == [0, 0, 1]  # alternate within each class: both halves hold every class
    with pytest.raises(UserError, match="no folder for class fox"):
        real_image_folder(tmp_path, ("cat", "dog", "fox"), 8)
    (tmp_path / "dog" / "1.png").unlink()
    with pytest.raises(UserError, match="dog: 1 image"):
        real_image_folder(tmp_path, ("cat", "dog"), 8)
    (tmp_path / "dog" / "1.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="1.png: not a readable image"):
        real_image_folder(tmp_path, ("cat", "dog"), 8)
    with pytest.raises(UserError, match="must name a folder"):
        real_image_folder(tmp_path / "nope", ("cat",), 8)
