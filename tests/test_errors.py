"""The error policy, tried as a new user would: bad input to every stage script.

Each case runs a real stage script in a fresh copy of a small project (tiny models and
artifacts made by the fixture) with one thing wrong, and checks what the user sees: a
non-zero status (2 for bad input), exactly one line `error: <culprit>: ...` that names
the file or parameter at fault, and no output or temp file left behind. Then signals:
SIGINT, SIGTERM and SIGKILL in the middle of a write leave no partial output, a
non-zero status, and the next run completes (and removes a killed run's temp file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from linkstyle.models.class_means import ClassMeansConfig, class_means, write_class_means
from linkstyle.models.registry import GeneratorSpec, load_generator
from PIL import Image

from linkstyle.core.checkpoint import fingerprint, save_module
from linkstyle.explain.tuning import TuningConfig, tune_units
from linkstyle.link.fit import fit_link
from linkstyle.link.inn import INNConfig, fit_inn, save_inn
from linkstyle.link.linear import RidgeConfig
from linkstyle.link.pairs import PairsConfig, load_pairs, sample_pairs
from linkstyle.link.store import save_link
from linkstyle.measure.quantify import QuantifyConfig, quantify_tuning
from linkstyle.measure.quantify_motion import QuantifyMotionConfig, quantify_motion
from linkstyle.measure.segmenter import save_segmenter
from linkstyle.measure.segmenter_training import (
    FewShotConfig,
    SegmenterConfig,
    fit_segmenter,
)
from linkstyle.world.procedural import WorldConfig
from linkstyle.world.store import write_world

ROOT = Path(__file__).resolve().parents[1]
QUICK = yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())

# The arguments of every stage (paths relative to the project) and the outputs they name.
ARGS = {
    "world": "--out data/o_world.h5",
    "train_generator": "--world data/world.h5 --out data/o_gen.pt --metrics reports/o.json --curves reports/o_c.tsv",
    "train_classifier": "--world data/world.h5 --out data/o_clf.pt --metrics reports/o.json --curves reports/o_c.tsv",
    "class_means": "--out data/o_means.json",
    "check_models": "--real data/world.h5 --metrics reports/o.json --figure reports/o.png "
                    "--class-means data/class_means.json",
    "sample_pairs": "--out data/o_pairs.h5 --metrics reports/o.json --class-means data/class_means.json",
    "similarity": "--pairs data/pairs.h5 --metrics reports/o.json --plot reports/o_plot.json --figure reports/o.png",
    "fit_link": "--kind ridge --pairs data/pairs.h5 --out data/o_link.pt --metrics reports/o.json",
    "fit_inn": "--pairs data/pairs.h5 --out data/o_inn.pt --metrics reports/o.json --curves reports/o_c.tsv",
    "invariances": "--pairs data/pairs.h5 --inn data/inn.pt --out data/o_inv.h5 --metrics reports/o.json "
                   "--figure-samples reports/o_s.png --figure-factors reports/o_f.png",
    "evaluate_link": "--pairs data/pairs.h5 --link data/links/ridge.pt --metrics reports/o.json --figure reports/o.png",
    "train_segmenter": "--masks masks --out data/o_seg.pt --metrics reports/o.json --curves reports/o_c.tsv "
                       "--class-means data/class_means.json",
    "tune_units": "--pairs data/pairs.h5 --link data/links/ridge.pt --out data/o_tuning.h5 --metrics reports/o.json",
    "compare_tuning": "--open-loop data/tuning_open.h5 --closed-loop data/tuning.h5 --table reports/o.csv "
                      "--labels reports/o_labels.csv --metrics reports/o.json --figure reports/o.png",
    "quantify_parts": "--tuning data/tuning.h5 --segmenter data/segmenter.pt --measures data/o_m.parquet "
                      "--changes data/o_c.parquet --metrics reports/o.json",
    "quantify_motion": "--tuning data/tuning.h5 --segmenter data/segmenter.pt "
                       "--out data/o_motion.parquet --metrics reports/o.json",
    "analyze_units": "--changes data/changes.parquet --motion data/motion.parquet --tuning data/tuning.h5 "
                     "--table reports/o.csv --motion-table reports/o_motion.csv --metrics reports/o.json "
                     "--figures reports/o_figures",
    "motion_fields": "--tuning data/tuning.h5 --motion data/motion.parquet --units reports/units_motion.csv "
                     "--figure reports/o.png",
    "counterfactuals": "--pairs data/pairs.h5 --link data/links/ridge.pt --segmenter data/segmenter.pt "
                       "--units reports/units.csv --out data/o_cf.h5 --changes data/o_cf.parquet "
                       "--units-table reports/o_cf.csv --metrics reports/o.json --figures reports/o_figures",
    "attribute_units": "--units reports/units.csv --tuning data/tuning.h5 --pairs data/pairs.h5 "
                       "--link data/links/ridge.pt --out data/o_attribution.h5 --scores reports/o_s.csv "
                       "--table reports/o_t.csv --sanity reports/o_sanity.csv --metrics reports/o.json "
                       "--figures reports/o_figures",
}


def _env() -> dict:
    return dict(os.environ, LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="1")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_gen, tiny_clf) -> Path:
    """A small project whose every artifact is valid: each case breaks one thing in a copy."""
    d = tmp_path_factory.mktemp("project")
    (d / "data" / "links").mkdir(parents=True)
    (d / "reports").mkdir()
    shutil.copytree(ROOT / "masks", d / "masks")
    params = {k: dict(v) if isinstance(v, dict) else v for k, v in QUICK.items()}
    params["world"] = {**QUICK["world"], "n_train_per_class": 12, "n_test_per_class": 4}
    params["train_generator"] = {**QUICK["train_generator"], "epochs": 1, "w_dim": 16}
    params["train_classifier"] = {**QUICK["train_classifier"], "epochs": 1, "batch_size": 16}
    params["check_models"] = {**QUICK["check_models"], "n_per_class": 10, "n_figure": 1}
    params["sample_pairs"] = {**QUICK["sample_pairs"], "n_train_per_class": 200, "n_test_per_class": 4,
                              "keep_correct": False}
    params["tune_units"] = {**QUICK["tune_units"], "unit_range": [0, 2], "n_seeds": 2, "n_steps": 2}
    params["train_segmenter"] = {**QUICK["train_segmenter"], "n_eval": 5,
                                 "model": {**QUICK["train_segmenter"]["model"], "epochs": 1, "n_shots": 2}}
    params["attribute_units"] = {**QUICK["attribute_units"], "n_seeds": 2, "am_seeds": 1, "sanity_units": 1,
                                 "sanity_link_pairs": 40}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    write_world(d / "data/world.h5", WorldConfig(n_train_per_class=12, n_test_per_class=4), progress=False)
    save_module(d / "data/generator.pt", "generator", tiny_gen)
    save_module(d / "data/classifier.pt", "classifier", tiny_clf)
    fps = {"generator_fingerprint": fingerprint(d / "data/generator.pt"),
           "classifier_fingerprint": fingerprint(d / "data/classifier.pt")}
    loaded = load_generator(GeneratorSpec(path=str(d / "data/generator.pt")))
    write_class_means(d / "data/class_means.json", loaded, *class_means(loaded, ClassMeansConfig(), progress=False))
    cfg = PairsConfig(**{k: v for k, v in params["sample_pairs"].items()})
    sample_pairs(tiny_gen, tiny_clf, cfg, d / "data/pairs.h5", fps, progress=False)
    train = load_pairs(d / "data/pairs.h5", "train", ("w", "r"))
    link, info = fit_link("ridge", train["r"], train["w"], RidgeConfig(cv_folds=3), progress=False)
    save_link(d / "data/links/ridge.pt", link, info, pairs_fingerprint=fingerprint(d / "data/pairs.h5"), **fps)
    inn, inn_info = fit_inn(train["r"], train["w"], INNConfig(mean="ridge", n_blocks=1, hidden=8, embed_dim=4,
                                                              embed_hidden=8, epochs=1), progress=False)
    save_inn(d / "data/inn.pt", inn, inn_info, pairs_fingerprint=fingerprint(d / "data/pairs.h5"), **fps)
    seg_cfg = FewShotConfig(n_eval=5, model=SegmenterConfig(n_shots=2, epochs=1, channels=(8,), dilations=(1, 1)))
    seg, _, _ = fit_segmenter(tiny_gen, seg_cfg, d / "masks", progress=False)
    save_segmenter(d / "data/segmenter.pt", seg, fps["generator_fingerprint"])
    test = load_pairs(d / "data/pairs.h5", "test", ("r", "label", "seed"))
    r, units = test["r"][:2], np.arange(2)
    tune_units(tiny_gen, tiny_clf, link, r, test["seed"][:2], test["label"][:2], units, r[:, units].min(0),
               r[:, units].max(0) + 1.0, TuningConfig(n_seeds=2, n_steps=2, device="cpu", mode="open_loop"),
               d / "data/tuning.h5",
               attrs={**fps, "link_fingerprint": fingerprint(d / "data/links/ridge.pt")}, progress=False)
    _, changes = quantify_tuning(d / "data/tuning.h5", tiny_gen, seg, QuantifyConfig(min_part_area=0.0),
                                 progress=False)
    changes.to_parquet(d / "data/changes.parquet", index=False)
    motion, _ = quantify_motion(d / "data/tuning.h5", tiny_gen, seg, QuantifyMotionConfig(min_part_area=0.0),
                                progress=False)
    motion.to_parquet(d / "data/motion.parquet", index=False)
    import pandas as pd
    units = pd.DataFrame({"unit": [0, 1], "strongest_part": ["body", "head"], "metric": ["area", "area"],
                          "selectivity": [1.0, 0.5]})
    units.to_csv(d / "reports/units.csv", index=False)
    units.to_csv(d / "reports/units_motion.csv", index=False)
    return d


# ----------------------------------------------------------------------------- mutations

def set_param(key: str, value):
    def apply(d: Path) -> None:
        params = yaml.safe_load((d / "params.yaml").read_text())
        node = params
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return apply


def drop_section(name: str):
    def apply(d: Path) -> None:
        params = yaml.safe_load((d / "params.yaml").read_text())
        del params[name]
        (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return apply


def params_text(edit):
    def apply(d: Path) -> None:
        (d / "params.yaml").write_text(edit((d / "params.yaml").read_text()))
    return apply


def delete(rel: str):
    return lambda d: (d / rel).unlink()


def empty(rel: str):
    return lambda d: (d / rel).write_bytes(b"")


def truncate(rel: str):
    def apply(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: len(data) // 2])
    return apply


def corrupt_middle(rel: str, n: int = 64 << 10):
    """`n` random bytes over the middle of the file (the header survives)."""
    def apply(d: Path) -> None:
        data = bytearray((d / rel).read_bytes())
        n_ = min(n, len(data) // 3)
        start = len(data) // 2 - n_ // 2
        data[start:start + n_] = np.random.default_rng(0).integers(0, 256, n_, dtype=np.uint8).tobytes()
        (d / rel).write_bytes(bytes(data))
    return apply


def foreign(rel: str, content: bytes = b"%PDF-1.4 not what you think\n" * 50):
    return lambda d: (d / rel).write_bytes(content)


def edit_json(rel: str, **changes):
    def apply(d: Path) -> None:
        doc = json.loads((d / rel).read_text())
        (d / rel).write_text(json.dumps({**doc, **changes}))
    return apply


def copy(src: str, dst: str):
    return lambda d: shutil.copy(d / src, d / dst)


def masks(size: int = 32, value: int = 1, labels: str = "background\nbody\n", rows: str | None = None):
    """A user mask folder; `size`, `value` or the files can be wrong."""
    def apply(d: Path) -> None:
        set_param("train_segmenter.labels", "masks")(d)
        (d / "masks" / "labels.txt").write_text(labels)
        (d / "masks" / "samples.csv").write_text(rows if rows is not None else "file,seed,class\nm0.png,7,0\n")
        Image.fromarray(np.full((size, size), value, np.uint8), mode="L").save(d / "masks" / "m0.png")
    return apply


def retrained_generator(d: Path) -> None:
    """The generator changed after the segmenter was trained on its features."""
    payload = torch.load(d / "data/generator.pt", weights_only=True)
    payload["note"] = "retrained"
    torch.save(payload, d / "data/generator.pt")


def edit_h5(rel: str, edit):
    def apply(d: Path) -> None:
        import h5py
        with h5py.File(d / rel, "a") as f:
            edit(f)
    return apply


def open_of_other_seeds(d: Path) -> None:
    """An open-loop tuning file of other seeds than the faithful sweep."""
    shutil.copy(d / "data/tuning.h5", d / "data/tuning_open.h5")
    edit_h5("data/tuning_open.h5", lambda f: f["seeds"].__setitem__(0, 12345))(d)


def stale_link(d: Path) -> None:
    """A link fitted on other pairs (the pairs were resampled after it was fitted)."""
    import h5py
    with h5py.File(d / "data/pairs.h5", "a") as f:
        f["test"]["r"][0, 0] += 1.0


def nan_class_means(d: Path) -> None:
    """A class mean that is NaN (json writes and reads NaN)."""
    doc = json.loads((d / "data/class_means.json").read_text())
    doc["class_mean_w"][0][0] = float("nan")
    (d / "data/class_means.json").write_text(json.dumps(doc))


def _replace_r(d: Path, make) -> None:
    import h5py
    with h5py.File(d / "data/pairs.h5", "a") as f:
        r = f["train"]["r"][:]
        del f["train"]["r"]
        f["train"].create_dataset("r", data=make(r))


def narrow_r(d: Path) -> None:
    """Train r one unit narrower than the file's r_dim (and test r)."""
    _replace_r(d, lambda r: r[:, :-1])


def int8_r(d: Path) -> None:
    """Train r stored as int8 by some other code."""
    _replace_r(d, lambda r: r.astype(np.int8))


def nan_r(d: Path) -> None:
    """One NaN in train r."""
    edit_h5("data/pairs.h5", lambda f: f["train"]["r"].__setitem__((0, 0), np.nan))(d)


PLUGIN = """
from linkstyle.models.registry import ClassifierSpec, load_classifier


def make(path, mode):
    clf = load_classifier(ClassifierSpec(path=path))
    if mode == "wrong_width":
        clf.n_units += 1  # declares a unit its r does not have
    else:
        features = clf.features
        clf.features = lambda x: features(x) * float("nan")
    return clf
"""


def plugin_classifier(mode: str):
    """models.classifier: a plugin wrapping the project's classifier, broken as `mode` says."""
    def apply(d: Path) -> None:
        (d / "plugins").mkdir()
        (d / "plugins" / "bad_clf.py").write_text(PLUGIN)
        set_param("models.classifier", {"kind": "plugin", "code": "plugins", "factory": "bad_clf:make",
                                        "path": "data/classifier.pt", "options": {"mode": mode}})(d)
    return apply


# (id, stage, mutation, culprit named in the one error line)
CASES = [
    # params.yaml itself
    ("params-missing", "world", delete("params.yaml"), "params.yaml: params file not found"),
    ("params-invalid-yaml", "world", params_text(lambda t: t + "\nworld: [unclosed\n"), "params.yaml: not valid YAML at line"),
    ("params-duplicate-key", "world", params_text(lambda t: t.replace("world:\n", "world:\n  chunk: 64\n  chunk: 128\n", 1)),
     "duplicate key 'chunk'"),
    ("params-no-section", "world", drop_section("world"), "params.yaml: no section 'world'"),
    # params of every stage
    ("world-resolution-20", "world", set_param("world.resolution", 20), "world.resolution must be 16, 32, 64 or 128"),
    ("world-unknown-key", "world", set_param("world.colour", 1), "unknown key world.colour"),
    ("generator-epochs-0", "train_generator", set_param("train_generator.epochs", 0), "train_generator.epochs"),
    ("classifier-lr-string", "train_classifier", set_param("train_classifier.lr", "fast"), "train_classifier.lr must be a number"),
    ("check-psi-2", "check_models", set_param("check_models.psi", 2.0), "check_models.psi"),
    ("means-n-0", "class_means", set_param("class_means.n_samples", 0), "class_means.n_samples must be >= 1"),
    ("means-kind-xl", "class_means", set_param("models.generator.kind", "stylegan_xl"),
     "models.generator.kind must be one of builtin, stylegan, plugin"),
    ("means-missing", "sample_pairs", delete("data/class_means.json"), "data/class_means.json: class means not found"),
    ("means-other-generator", "train_segmenter", edit_json("data/class_means.json", generator="0123456789abcdef"),
     "data/class_means.json: written for another generator"),
    ("means-truncated", "sample_pairs", truncate("data/class_means.json"), "data/class_means.json: not valid JSON"),
    ("means-nan", "check_models", nan_class_means, "data/class_means.json: class_mean_w has 1 non-finite values"),
    ("means-wrong-shape", "sample_pairs", edit_json("data/class_means.json", class_mean_w=[[0.0, 0.0]]),
     "data/class_means.json: class_mean_w has shape [1, 2] but the generator has"),
    ("plugin-declares-other-width", "sample_pairs", plugin_classifier("wrong_width"),
     "models.classifier: the classifier returned r of shape"),
    ("plugin-returns-nan", "sample_pairs", plugin_classifier("nan"),
     "models.classifier: the classifier returned"),
    ("pairs-device-gpu", "sample_pairs", set_param("sample_pairs.device", "gpu"), "sample_pairs.device: unknown device 'gpu'"),
    pytest.param("pairs-device-cuda", "sample_pairs", set_param("sample_pairs.device", "cuda"),
                 "sample_pairs.device: device 'cuda'", id="pairs-device-cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")),
    ("similarity-per-class-0", "similarity", set_param("similarity.per_class", 0), "similarity.per_class"),
    ("fit-link-unknown-kind", "fit_link", lambda d: None, "--kind: unknown link kind 'lasso'"),
    ("fit-link-cv-1", "fit_link", set_param("fit_link.ridge.cv_folds", 1), "fit_link.ridge.cv_folds must be at least 2"),
    ("fit-link-use-unknown", "attribute_units", set_param("fit_link.use", "lasso"),
     "fit_link.use is an unknown link kind 'lasso'"),
    ("fit-link-use-not-fitted", "attribute_units",
     lambda d: (set_param("fit_link.kinds", ["ridge"])(d), set_param("fit_link.use", "mlp")(d)),
     "fit_link.use 'mlp' is not in fit_link.kinds"),
    ("fit-inn-mean-bad", "fit_inn", set_param("fit_inn.mean", "gam"), "fit_inn.mean must be one of mlp, ridge, none"),
    ("fit-inn-no-section", "fit_inn", drop_section("fit_inn"), "params.yaml: no section 'fit_inn'"),
    ("invariances-n-samples-1", "invariances", set_param("invariances.n_samples", 1), "invariances.n_samples must be >= 2"),
    ("invariances-too-many-seeds", "invariances", set_param("invariances.n_seeds", 999),
     "invariances.n_seeds: asked for 999 seeds"),
    ("evaluate-batch-0", "evaluate_link", set_param("evaluate_link.batch_size", 0), "evaluate_link.batch_size"),
    ("evaluate-figure-per-class-0", "evaluate_link", set_param("evaluate_link.n_figure_per_class", 0),
     "evaluate_link.n_figure_per_class must be >= 1"),
    ("segmenter-model-list", "train_segmenter", set_param("train_segmenter.model", [1, 2]),
     "train_segmenter.model must be a mapping"),
    ("segmenter-labels-bad", "train_segmenter", set_param("train_segmenter.labels", "paint"), "train_segmenter.labels"),
    ("tune-units-empty", "tune_units", set_param("tune_units.units", []), "tune_units.units"),
    ("tune-units-out-of-range", "tune_units",
     lambda d: (set_param("tune_units.unit_range", None)(d), set_param("tune_units.units", [0, 999])(d)),
     "tune_units.units: unit ids [999]"),
    ("tune-units-mode-bad", "tune_units", set_param("tune_units.mode", "both"),
     "tune_units.mode must be one of open_loop, closed_loop"),
    ("tune-units-min-transfer-2", "tune_units", set_param("tune_units.min_transfer", 2.0),
     "tune_units.min_transfer must be in [0, 1]"),
    ("closed-loop-tolerance-1", "tune_units", set_param("tune_units.closed_loop.tolerance", 1.0),
     "tune_units.closed_loop.tolerance must be in [0, 1)"),
    ("closed-loop-units-every-0", "tune_units", set_param("tune_units.closed_loop.units_every", 0),
     "tune_units.closed_loop.units_every must be >= 1"),
    ("compare-strip-seeds-0", "compare_tuning", set_param("compare_tuning.n_strip_seeds", 0), "compare_tuning.n_strip_seeds"),
    ("quantify-n-jobs-0", "quantify_parts", set_param("quantify_parts.n_jobs", 0), "quantify_parts.n_jobs"),
    ("analyze-source-bad", "analyze_units", set_param("analyze_units.source", "oracle"), "analyze_units.source"),
    ("models-kind-unknown", "sample_pairs", set_param("models.generator.kind", "stylegan9"), "models.generator.kind"),
    ("models-path-missing", "sample_pairs", set_param("models.generator.path", "data/nope.pt"),
     "data/nope.pt: model file not found; fix models.generator.path"),
    # files: missing, empty, truncated, corrupted in the middle, foreign, of the wrong kind
    ("world-h5-missing", "train_classifier", delete("data/world.h5"), "data/world.h5: not found"),
    ("world-h5-empty", "train_generator", empty("data/world.h5"), "data/world.h5: truncated or not an HDF5 file"),
    ("generator-empty", "sample_pairs", empty("data/generator.pt"), "data/generator.pt: corrupt or unreadable"),
    ("generator-truncated", "check_models", truncate("data/generator.pt"), "data/generator.pt: corrupt or unreadable"),
    ("generator-foreign", "sample_pairs", foreign("data/generator.pt"), "data/generator.pt: corrupt or unreadable"),
    ("classifier-is-a-generator", "sample_pairs", copy("data/generator.pt", "data/classifier.pt"),
     "data/classifier.pt: checkpoint holds a 'generator', expected a 'classifier'"),
    ("pairs-missing", "similarity", delete("data/pairs.h5"), "data/pairs.h5: not found"),
    ("pairs-empty", "fit_link", empty("data/pairs.h5"), "data/pairs.h5: truncated or not an HDF5 file"),
    ("pairs-truncated", "similarity", truncate("data/pairs.h5"), "data/pairs.h5: truncated or not an HDF5 file"),
    ("pairs-corrupt-middle", "fit_link", corrupt_middle("data/pairs.h5"), "data/pairs.h5: "),
    ("pairs-foreign", "tune_units", foreign("data/pairs.h5"), "data/pairs.h5: truncated or not an HDF5 file"),
    ("pairs-r-narrower-than-r-dim", "fit_link", narrow_r, "data/pairs.h5: train/r has 15 columns but the file's r_dim is 16"),
    ("pairs-r-int8", "fit_link", int8_r, "data/pairs.h5: train/r is stored as int8"),
    ("pairs-r-nan", "fit_link", nan_r, "data/pairs.h5: train/r has 1 non-finite values"),
    ("link-missing", "evaluate_link", delete("data/links/ridge.pt"), "data/links/ridge.pt: checkpoint not found"),
    ("link-truncated", "tune_units", truncate("data/links/ridge.pt"), "data/links/ridge.pt: corrupt or unreadable"),
    ("link-is-a-segmenter", "evaluate_link", copy("data/segmenter.pt", "data/links/ridge.pt"),
     "data/links/ridge.pt: checkpoint holds a 'segmenter', expected a 'link'"),
    ("link-fitted-on-other-pairs", "tune_units", stale_link, "data/links/ridge.pt: link was fitted with pairs_fingerprint"),
    ("pairs-empty-inn", "fit_inn", empty("data/pairs.h5"), "data/pairs.h5: truncated or not an HDF5 file"),
    ("inn-missing", "invariances", delete("data/inn.pt"), "data/inn.pt: checkpoint not found"),
    ("inn-is-a-link", "invariances", copy("data/links/ridge.pt", "data/inn.pt"),
     "data/inn.pt: checkpoint holds a 'link', expected a 'inn'"),
    ("inn-fitted-on-other-pairs", "invariances", stale_link, "data/inn.pt: INN was fitted with pairs_fingerprint"),
    ("segmenter-of-other-generator", "quantify_parts", retrained_generator,
     "data/segmenter.pt: segmenter was trained for generator"),
    ("generator-is-a-classifier", "quantify_parts", copy("data/classifier.pt", "data/generator.pt"),
     "data/generator.pt: checkpoint holds a 'classifier'"),
    ("segmenter-missing", "quantify_parts", delete("data/segmenter.pt"), "data/segmenter.pt: checkpoint not found"),
    ("tuning-missing", "quantify_parts", delete("data/tuning.h5"), "data/tuning.h5: not found"),
    ("tuning-corrupt-middle", "analyze_units", corrupt_middle("data/tuning.h5"), "data/tuning.h5: "),
    ("tuning-before-faithfulness", "analyze_units", edit_h5("data/tuning.h5", lambda f: f.__delitem__("r_tilde_off")),
     "data/tuning.h5: missing 'r_tilde_off'"),
    ("compare-open-missing", "compare_tuning", lambda d: None, "data/tuning_open.h5: not found"),
    ("compare-other-seeds", "compare_tuning", open_of_other_seeds, "data/tuning.h5: tunes other seeds than"),
    ("changes-foreign", "analyze_units", foreign("data/changes.parquet"), "data/changes.parquet: not a readable parquet"),
    ("motion-backend-unknown", "quantify_motion", set_param("quantify_motion.motion.backend", "raft"),
     "quantify_motion.motion.backend must be one of"),
    ("motion-fields-units-missing", "motion_fields", delete("reports/units_motion.csv"),
     "reports/units_motion.csv: not found"),
    ("motion-fields-motion-missing", "motion_fields", delete("data/motion.parquet"), "data/motion.parquet: not found"),
    ("analyze-motion-missing", "analyze_units", delete("data/motion.parquet"), "data/motion.parquet: not found"),
    ("analyze-motion-metric-unknown", "analyze_units", set_param("analyze_units.motion_metrics", ["area"]),
     "analyze_units.motion_metrics 'area' is no motion metric"),
    ("cf-class-id-out-of-range", "counterfactuals", set_param("counterfactuals.class_pairs", [[0, 9]]),
     "counterfactuals.class_pairs: class id 9 out of range"),
    ("cf-origin-is-target", "counterfactuals", set_param("counterfactuals.class_pairs", [[2, 2]]),
     "counterfactuals.class_pairs: [2, 2] has origin = target"),
    ("cf-geometry-unknown", "counterfactuals", set_param("counterfactuals.geometry", "euclid"),
     "counterfactuals.geometry must be one of"),
    ("cf-motion-backend-unknown", "counterfactuals", set_param("counterfactuals.motion.backend", "raft"),
     "counterfactuals.motion.backend must be one of"),
    ("cf-too-few-test-pairs", "counterfactuals", set_param("counterfactuals.n_seeds", 50),
     "counterfactuals.n_seeds: 50 base samples per pair"),
    ("cf-units-missing", "counterfactuals", delete("reports/units.csv"), "reports/units.csv: not found"),
    ("cf-units-header-only", "counterfactuals",
     lambda d: (d / "reports/units.csv").write_text("unit,strongest_part,metric,selectivity\n"),
     "reports/units.csv: the table has its header but no units"),
    ("motion-pump-without-code", "quantify_motion", set_param("quantify_motion.motion.backend", "pump"),
     "motion.pump_code: not set, and backend 'pump' needs a naver/pump checkout"),
    ("attribution-method-unknown", "attribute_units", set_param("attribute_units.methods", ["lrp", "gradcam"]),
     "attribute_units.methods: unknown attribution method 'gradcam'"),
    ("attribution-too-many-seeds", "attribute_units", set_param("attribute_units.n_seeds", 9),
     "attribute_units.n_seeds: 9 seeds asked but the tuning file holds 2"),
    ("attribution-occlusion-border", "attribute_units", set_param("attribute_units.occlusion.patch", 5),
     "attribute_units.occlusion: patch 5 and stride 4 leave the image border"),
    ("attribution-units-missing", "attribute_units", delete("reports/units.csv"), "reports/units.csv: not found"),
    ("attribution-units-foreign", "attribute_units", lambda d: (d / "reports/units.csv").write_text("a,b\n1,2\n"),
     "reports/units.csv: no column 'unit'"),
    ("attribution-tuning-other-link", "attribute_units", stale_link, "data/links/ridge.pt: link was fitted with"),
    # user masks
    ("masks-wrong-size", "train_segmenter", masks(size=20), "m0.png: mask is 20x20 but the generator resolution is 32x32"),
    ("masks-unknown-label", "train_segmenter", masks(value=9), "m0.png: mask holds label ids [9]"),
    ("masks-no-labels-file", "train_segmenter", lambda d: (masks()(d), (d / "masks/labels.txt").unlink()),
     "masks/labels.txt: label names file not found"),
    ("masks-bad-class", "train_segmenter", masks(rows="file,seed,class\nm0.png,7,99\n"), "samples.csv: line 2: class 99"),
]


def _outputs(stage: str) -> list[str]:
    words = ARGS[stage].split()
    return [v for v in words if Path(v).name.startswith("o")]  # every output is named o* in ARGS


def _run(d: Path, stage: str, extra: str = "") -> subprocess.CompletedProcess:
    args = ARGS[stage].replace("--kind ridge", "--kind lasso") if extra == "lasso" else ARGS[stage]
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args.split()], cwd=d,
                          capture_output=True, text=True, env=_env(), timeout=300)


def _leftovers(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.tmp"))


@pytest.mark.parametrize("case_id, stage, mutate, culprit",
                         CASES, ids=[c.id if hasattr(c, "marks") else c[0] for c in CASES])
def test_bad_input_is_one_clear_line(project, tmp_path, case_id, stage, mutate, culprit):
    d = tmp_path / "p"
    shutil.copytree(project, d)
    mutate(d)
    out = _run(d, stage, "lasso" if case_id == "fit-link-unknown-kind" else "")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert culprit in lines[0], lines[0]
    assert not [o for o in _outputs(stage) if (d / o).exists()], "an output was written"
    assert _leftovers(d) == []


def test_there_are_at_least_30_cases_covering_every_stage():
    stages = {(c.values if hasattr(c, "marks") else c)[1] for c in CASES}
    assert len(CASES) >= 30 and stages == set(ARGS)


def test_full_disk_is_one_line_and_leaves_nothing(project, tmpfs):
    mnt = tmpfs("4m")
    for stage, args in (("world", f"--out {mnt}/world.h5"),
                        ("tune_units", ARGS["tune_units"].replace("data/o_tuning.h5", f"{mnt}/tuning.h5"))):
        out = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args.split()], cwd=project,
                             capture_output=True, text=True, env=_env(), timeout=300)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
        assert "cannot write: no space left on the device" in lines[0] and str(mnt) in lines[0]
        assert list(mnt.iterdir()) == []


def test_read_only_output_folder_is_one_line(project, tmpfs):
    mnt = tmpfs("1m", read_only=True)
    out = subprocess.run([sys.executable, str(ROOT / "stages" / "world.py"), "--out", f"{mnt}/world.h5"], cwd=project, capture_output=True, text=True, env=_env(), timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "read-only file system" in lines[0] and str(mnt) in lines[0]


# ----------------------------------------------------------------------------- signals

def _start_world(d: Path) -> subprocess.Popen:
    """Stage world on a world large enough to take several seconds, once it is writing."""
    set_param("world.n_train_per_class", 3000)(d)
    p = subprocess.Popen([sys.executable, str(ROOT / "stages" / "world.py"), "--out", "data/o_world.h5"], cwd=d,
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list((d / "data").glob(".o_world.h5.*.tmp")):
        assert p.poll() is None and time.time() - t0 < 60, "the stage never started writing"
        time.sleep(0.05)
    time.sleep(0.5)
    return p


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_killed_mid_write_leaves_no_output_and_the_rerun_completes(project, tmp_path, sig, status):
    d = tmp_path / "p"
    shutil.copytree(project, d)
    p = _start_world(d)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == status, err[-2000:]
    assert not (d / "data/o_world.h5").exists()
    if sig != signal.SIGKILL:  # nothing can clean up after SIGKILL: the next run does
        assert _leftovers(d) == [] and err.strip().splitlines()[-1].startswith("error: ")
        # true under dvc repro too, which removes a stage's previous outputs before running it
        assert "nothing of this run was written" in err and "run dvc repro again" in err, err[-2000:]
    set_param("world.n_train_per_class", 12)(d)
    out = _run(d, "world")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (d / "data/o_world.h5").exists() and _leftovers(d) == []
