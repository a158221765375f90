"""FeatureVis's methods beside the link: hand-built models with known answers, the model
seam's attribution-ready copies, batch independence, determinism, one-line errors, the
scores, and the stage attribute_units on a tiny project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from linkstyle.core.checkpoint import fingerprint, save_module
from linkstyle.core.errors import UserError
from linkstyle.explain.attribution import METHODS, make_method
from linkstyle.explain.attribution.scores import part_scores, rank_similarity, summarize, unit_similarity
from linkstyle.explain.attribution.study import AttributeUnitsConfig, select_units
from linkstyle.explain.tuning import TuningConfig, tune_units
from linkstyle.link.fit import fit_link
from linkstyle.link.linear import RidgeConfig
from linkstyle.link.pairs import PairsConfig, load_pairs, sample_pairs
from linkstyle.link.store import save_link
from linkstyle.models.attribution_ready import attribution_ready, cascade_layers, randomised
from linkstyle.models.classifier import Classifier
from linkstyle.models.torchvision_classifier import TorchvisionClassifier
from linkstyle.world.procedural import CLASS_NAMES, PART_NAMES

ROOT = Path(__file__).resolve().parents[2]
FAST = {"am_pixel": {"steps": 3}, "am_latent": {"steps": 2}}


class Quadrant(Classifier):
    """Unit 0 = sum of the red channel over the top-left 16 x 16 quadrant; unit 1 = a fixed
    random linear function of the whole image (no bias). Inputs are not normalised."""

    arch = "quadrant"

    def __init__(self) -> None:
        super().__init__(("a", "b"), 2, 32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.conv = nn.Conv2d(3, 2, 32, bias=False)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, :16, :16] = 1.0
            self.conv.weight[1] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))

    def features(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def logits_from_r(self, r):
        return self.fc(r)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


QUADRANT = torch.zeros(32, 32, dtype=torch.bool)
QUADRANT[:16, :16] = True


# ---------------------------------------------------------------------------- known answers

@pytest.mark.parametrize("name", ["occlusion", "deconvnet", "guided_backprop", "lrp"])
def test_red_quadrant_unit_lights_up_exactly_its_quadrant(name):
    net = attribution_ready(Quadrant().eval(), "units")
    opts = {"patch": 4, "stride": 4, "baseline": 0.0} if name == "occlusion" else None
    maps = make_method(name, net, opts).attribute(_images(3), [0, 0, 0])
    assert (maps.heat[:, QUADRANT] > 0).all(), "every pixel of the quadrant carries evidence"
    assert (maps.heat[:, ~QUADRANT] == 0).all(), "nothing outside it"
    if name != "occlusion":  # occlusion hides all channels of a patch at once
        assert (maps.attribution[:, 1:] == 0).all(), "only the red channel"


def test_lrp_of_a_linear_model_is_input_times_weight():
    clf = Quadrant().eval()
    x = _images(2, seed=1)
    rel = make_method("lrp", attribution_ready(clf, "units"), {"epsilon": 1e-9}).attribute(x, [1, 1]).attribution
    want = x * clf.conv.weight[1][None]
    torch.testing.assert_close(rel, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(rel.sum((1, 2, 3)), clf.features(x)[:, 1], rtol=1e-4, atol=1e-5)


def test_gradients_of_a_class_logit_go_through_the_head():
    clf = Quadrant().eval()
    with torch.no_grad():
        clf.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    maps = make_method("guided_backprop", attribution_ready(clf, "logits")).attribute(_images(1), [0])
    torch.testing.assert_close(maps.attribution[0, 0, :16, :16], torch.full((16, 16), 2.0 / 1.0))
    assert (maps.heat[0, ~QUADRANT] == 0).all()


# ---------------------------------------------------------------------------- the model seam

def test_ready_copy_is_hook_safe_and_equal(tiny_clf):
    before = {k: v.clone() for k, v in tiny_clf.state_dict().items()}
    for output in ("units", "logits"):
        net = attribution_ready(tiny_clf, output)
        x = _images(4)
        want = tiny_clf.features(tiny_clf.normalise(x))
        if output == "logits":
            want = tiny_clf.logits_from_r(want)
        torch.testing.assert_close(net(x), want, rtol=1e-4, atol=1e-5)
        relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
        assert len(relus) == 1 + 2 * 2 and not any(m.inplace for m in relus), "stem + 2 per block, modules, not in place"
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), "folded into the convs"
    assert all(torch.equal(before[k], v) for k, v in tiny_clf.state_dict().items()), "the classifier is untouched"


def test_resnet50_reused_inplace_relus_become_separate_modules():
    torch.manual_seed(0)
    clf = TorchvisionClassifier("resnet50", class_indices=[3, 1]).eval()
    net = attribution_ready(clf, "logits", image_resolution=32)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 3 * 16 and len({id(m) for m in relus}) == len(relus) and not any(m.inplace for m in relus)
    x = _images(1)
    torch.testing.assert_close(net(x), clf(clf.preprocess(x * 2 - 1)), rtol=1e-3, atol=1e-4)
    maps = make_method("guided_backprop", net).attribute(x, [1])
    assert maps.heat.shape == (1, 32, 32) and torch.isfinite(maps.heat).all()


def test_unsupported_operation_is_one_line():
    class Sig(Quadrant):
        def features(self, x):
            return torch.sigmoid(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(UserError, match="operation 'sigmoid'.*no attribution rule"):
        attribution_ready(Sig().eval())


def test_cascade_randomises_from_the_top_with_shared_weights(tiny_clf):
    layers = cascade_layers(tiny_clf, "units")
    assert layers == ["stem", "blocks.0", "blocks.1"]
    assert cascade_layers(tiny_clf, "logits") == layers + ["fc"]
    s0 = tiny_clf.state_dict()
    s1, s2 = randomised(tiny_clf, layers[-1:], 3).state_dict(), randomised(tiny_clf, layers[-2:], 3).state_dict()
    changed = lambda s: {k.split(".")[0] + "." + k.split(".")[1] for k in s0 if not torch.equal(s0[k], s[k])}
    assert changed(s1) == {"blocks.1"} and changed(s2) == {"blocks.0", "blocks.1"}
    assert all(torch.equal(s1[k], s2[k]) for k in s0 if k.startswith("blocks.1.")), "a layer's weights do not depend on the others"
    again = randomised(tiny_clf, layers[-1:], 3).state_dict()
    assert all(torch.equal(s1[k], again[k]) for k in s0)


# ---------------------------------------------------------------------------- batching, seeds, errors

@pytest.mark.parametrize("name", list(METHODS))
def test_results_do_not_depend_on_batch_size_and_repeat_exactly(name, tiny_gen, tiny_clf):
    net = attribution_ready(tiny_clf, "units", image_resolution=tiny_gen.resolution)
    w = tiny_gen.sample_w([1, 2, 3], [0, 1, 2], 0.7)
    x = ((tiny_gen.synthesize(w) + 1) / 2).clamp(0, 1)
    inputs = w if METHODS[name].input_kind == "w" else x
    run = lambda bs: make_method(name, net, FAST.get(name), batch_size=bs, generator=tiny_gen).grid(inputs, [2, 5], [7, 8, 9])
    a, b, c = run(1), run(64), run(64)
    assert a.heat.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a.heat, b.heat, rtol=1e-4, atol=1e-5)
    assert torch.equal(b.heat, c.heat) and torch.equal(b.attribution, c.attribution)


def test_grid_equals_pairs_and_occlusion_shares_forwards(tiny_clf):
    net = attribution_ready(tiny_clf, "units")
    x = _images(3)
    occ = make_method("occlusion", net, {"patch": 8, "stride": 4})
    g = occ.grid(x, [1, 4], [0, 0, 0])
    p = occ.attribute(x[[0, 1, 2, 0, 1, 2]], [1, 1, 1, 4, 4, 4])
    torch.testing.assert_close(g.heat.reshape(6, 32, 32), p.heat, rtol=1e-4, atol=1e-5)


def test_pixel_maximisation_raises_the_unit_within_range(tiny_clf):
    net = attribution_ready(tiny_clf, "units")
    x = _images(2)
    maps = make_method("am_pixel", net, {"steps": 10, "lr": 0.05}).attribute(x, [3, 3], seeds=[0, 1])
    assert maps.result.min() >= 0 and maps.result.max() <= 1
    assert (net(maps.result)[:, 3] > net(x)[:, 3]).all()
    noise = make_method("am_pixel", net, {"steps": 2, "init": "noise"}).attribute(x, [3, 3], seeds=[5, 5])
    assert torch.equal(noise.start[0], noise.start[1]), "the noise start comes from the pair's seed, not the image"


def test_latent_maximisation_raises_the_unit_and_returns_part_maps(tiny_gen, tiny_clf):
    net = attribution_ready(tiny_clf, "units", image_resolution=tiny_gen.resolution)
    w = tiny_gen.sample_w([4, 5], [0, 3], 0.7)
    maps = make_method("am_latent", net, {"steps": 8, "lr": 0.1}, generator=tiny_gen).attribute(w, [6, 6])
    assert maps.parts_result.shape == (2, 32, 32) and maps.parts_result.dtype == torch.uint8
    assert (net(maps.result)[:, 6] >= net(maps.start)[:, 6]).all()
    with pytest.raises(UserError, match="am_latent: needs the generator"):
        make_method("am_latent", net)


def test_unknown_methods_and_targets_are_one_line_errors(tiny_clf):
    net = attribution_ready(tiny_clf, "units")
    with pytest.raises(UserError, match="unknown attribution method 'gradcam'; known methods are occlusion"):
        make_method("gradcam", net)
    with pytest.raises(UserError, match=r"guided_backprop: unit 16 out of range; the classifier has 16 units \(0..15\)"):
        make_method("guided_backprop", net).attribute(_images(1), [16])
    with pytest.raises(UserError, match=r"lrp: class logit 5 out of range; the classifier has 5 classes"):
        make_method("lrp", attribution_ready(tiny_clf, "logits")).attribute(_images(1), [5])
    with pytest.raises(UserError, match="occlusion.stride must be in"):
        make_method("occlusion", net, {"patch": 4, "stride": 5})
    with pytest.raises(UserError, match="leave the image border"):
        make_method("occlusion", net, {"patch": 5, "stride": 2}).attribute(_images(1), [0])
    with pytest.raises(UserError, match="methods: unknown attribution method 'nope'"):
        AttributeUnitsConfig(methods=("lrp", "nope"))


# ---------------------------------------------------------------------------- scores, selection

def test_part_scores_and_pointing_by_hand():
    heat = np.zeros((3, 2, 2))
    heat[0] = [[3.0, 1.0], [0.0, -5.0]]  # positive mass 4, 3 of it in the part (pixel 0,0)
    heat[2] = [[1.0, 1.0], [1.0, 1.0]]
    mask = np.array([[[True, False], [False, False]]] * 3)
    s = part_scores(heat, mask)
    np.testing.assert_allclose(s["mass"][[0, 2]], [0.75, 0.25])
    np.testing.assert_allclose(s["chance"], [0.25] * 3)
    np.testing.assert_allclose(s["hit"][[0, 2]], [1.0, 1.0])  # a tie points at the first pixel
    assert s["empty"].tolist() == [False, True, False] and np.isnan(s["mass"][1]) and np.isnan(s["hit"][1])
    a = np.arange(8.0).reshape(2, 2, 2)
    np.testing.assert_allclose(rank_similarity(a, a ** 2), [1.0, 1.0])
    assert np.isnan(rank_similarity(np.ones((1, 2, 2)), a[:1]))[0]
    same = np.stack([np.stack([a[0], a[1]])] * 3)  # 3 units with the same maps on 2 images
    assert unit_similarity(same, np.ones((3, 2), bool)) == pytest.approx(1.0)
    assert np.isnan(unit_similarity(same, np.array([[True, True], [False, False], [False, False]])))
    frame = pd.DataFrame({"method": "m", "unit": [1, 1, 2], "mass": [0.5, 1.0, 0.1], "chance": [0.2, 0.2, 0.4],
                          "hit": [1.0, 0.0, 0.0], "empty": False})
    row = summarize(frame, ["method"]).iloc[0]
    assert row["part_mass"] == pytest.approx((0.75 + 0.1) / 2) and row["units_above_chance"] == 1


def test_select_units_per_part_and_control():
    table = pd.DataFrame({"unit": range(8), "strongest_part": ["body", "head", "body", "head", "body", None, "eyes", "body"],
                          "selectivity": [1.0, 2.0, 3.0, 0.5, 3.0, 9.0, 1.0, 0.1]})
    sel = select_units(table, list(PART_NAMES), np.arange(8), AttributeUnitsConfig(n_per_part=2, n_control=2, seed=0))
    top = sel[sel["group"] == "selective"]
    assert top["unit"].tolist() == [2, 4, 1, 3, 6]  # body by selectivity (tie: lower unit), head, eyes
    control = sel[sel["group"] == "control"]["unit"].tolist()
    assert len(control) == 2 and set(control) <= {0, 7}
    with pytest.raises(UserError, match="part 'wings' is not one of the generator's parts"):
        select_units(table.assign(strongest_part="wings"), list(PART_NAMES), np.arange(8), AttributeUnitsConfig())
    with pytest.raises(UserError, match="no column 'selectivity'"):
        select_units(table.drop(columns="selectivity"), list(PART_NAMES), np.arange(8), AttributeUnitsConfig())


# ---------------------------------------------------------------------------- the stage

STAGE_PARAMS = {
    "methods": ["occlusion", "deconvnet", "guided_backprop", "lrp", "am_pixel", "am_latent"],
    "n_per_part": 1, "n_control": 1, "n_seeds": 3, "am_seeds": 2, "seed": 0,
    "occlusion": {"patch": 8, "stride": 4}, "am_pixel": {"steps": 2}, "am_latent": {"steps": 2},
    "sanity_units": 2, "sanity_seeds": 1, "sanity_link_pairs": 40, "batch_size": 16, "device": "cpu",
}
ARGS = ("--units reports/units.csv --tuning data/tuning.h5 --pairs data/pairs.h5 --link data/links/ridge.pt "
        "--out data/attribution.h5 --scores reports/a_scores.csv --table reports/a_table.csv "
        "--sanity reports/a_sanity.csv --metrics reports/attribution.json --figures reports/figures").split()


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_gen, tiny_clf) -> Path:
    d = tmp_path_factory.mktemp("attribution")
    (d / "data" / "links").mkdir(parents=True)
    (d / "reports").mkdir()
    quick = yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())
    params = {"models": quick["models"], "fit_link": quick["fit_link"], "attribute_units": STAGE_PARAMS}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    save_module(d / "data/generator.pt", "generator", tiny_gen)
    save_module(d / "data/classifier.pt", "classifier", tiny_clf)
    fps = {"generator_fingerprint": fingerprint(d / "data/generator.pt"),
           "classifier_fingerprint": fingerprint(d / "data/classifier.pt")}
    sample_pairs(tiny_gen, tiny_clf, PairsConfig(n_train_per_class=20, n_test_per_class=2, keep_correct=False,
                                                 device="cpu"), d / "data/pairs.h5", fps, progress=False)
    train = load_pairs(d / "data/pairs.h5", "train", ("w", "r"))
    link, info = fit_link("ridge", train["r"], train["w"], RidgeConfig(cv_folds=3), progress=False)
    save_link(d / "data/links/ridge.pt", link, info, pairs_fingerprint=fingerprint(d / "data/pairs.h5"), **fps)
    test = load_pairs(d / "data/pairs.h5", "test", ("r", "label", "seed"))
    r, units = test["r"][:3], np.arange(6)
    tune_units(tiny_gen, tiny_clf, link, r, test["seed"][:3], test["label"][:3], units, r[:, units].min(0),
               r[:, units].max(0) + 1.0, TuningConfig(n_seeds=3, n_steps=2, device="cpu", mode="open_loop"),
               d / "data/tuning.h5",
               attrs={**fps, "pairs_fingerprint": fingerprint(d / "data/pairs.h5"),
                      "link_fingerprint": fingerprint(d / "data/links/ridge.pt")}, progress=False)
    pd.DataFrame({"unit": units, "strongest_part": ["body", "head", "body", "eyes", "head", "legs"],
                  "selectivity": [1.0, 2.0, 3.0, 1.0, 0.5, 0.2]}).to_csv(d / "reports/units.csv", index=False)
    return d


def _stage(d: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "stages" / "attribute_units.py"), *ARGS, *extra], cwd=d, env=env,
                          capture_output=True, text=True)


def test_stage_writes_scores_maps_and_figures_byte_stable(project):
    out = _stage(project)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("attribute_units: 5 units x 3 seeds, 7 methods")
    scores = pd.read_csv(project / "reports/a_scores.csv")
    assert set(scores["method"]) == set(STAGE_PARAMS["methods"]) | {"link"}
    assert (scores.groupby("method").size()[["am_pixel", "am_latent"]] == 5 * 2).all()
    assert (scores.groupby("method").size()[["lrp", "link"]] == 5 * 3).all()
    assert ((scores["mass"].dropna() >= 0) & (scores["mass"].dropna() <= 1)).all()
    sanity = pd.read_csv(project / "reports/a_sanity.csv")  # one column per method, a dvc plot
    assert list(sanity.columns) == ["step", "randomised", *STAGE_PARAMS["methods"], "link"]
    assert sanity["randomised"].tolist() == ["none", "blocks.1", "blocks.0", "stem"]
    assert (sanity.iloc[0, 2:].dropna() == 1.0).all()
    with h5py.File(project / "data/attribution.h5") as f:
        assert f["heat"].shape == (7, 5, 3, 32, 32) and f["am_latent_result"].shape == (5, 2, 32, 32, 3)
    for name in ("attribution_grid", "attribution_scores", "attribution_sanity"):
        assert (project / "reports/figures" / f"{name}.png").stat().st_size > 1000
    first = {p: (project / p).read_bytes() for p in ("data/attribution.h5", "reports/a_scores.csv",
                                                     "reports/attribution.json", "reports/a_sanity.csv")}
    assert _stage(project).returncode == 0
    assert all((project / p).read_bytes() == b for p, b in first.items()), "same params, same bytes"


def test_stage_bad_input_is_one_line(project, tmp_path):
    d = tmp_path / "p"
    shutil.copytree(project, d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["attribute_units"]["methods"] = ["lrp", "smoothgrad"]
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    out = _stage(d)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "attribute_units.methods: unknown attribution method 'smoothgrad'" in out.stderr
    params["attribute_units"]["methods"] = ["lrp"]
    params["attribute_units"]["n_seeds"] = 9
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    out = _stage(d)
    assert out.returncode == 2 and "attribute_units.n_seeds: 9 seeds asked but the tuning file holds 3" in out.stderr


@pytest.fixture(scope="module")
def partless_project(tmp_path_factory) -> Path:
    """A generator without part maps (the plugin example), its tuning file and a segmenter trained for it."""
    from linkstyle.measure.features import generator_maps
    from linkstyle.measure.segmenter import save_segmenter
    from linkstyle.measure.segmenter_training import SegmenterConfig, train_segmenter
    from linkstyle.models.registry import ClassifierSpec, GeneratorSpec, load_classifier, load_generator

    d = tmp_path_factory.mktemp("partless")
    (d / "data" / "links").mkdir(parents=True)
    (d / "reports").mkdir()
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        import toy_plugin
    finally:
        sys.path.remove(str(ROOT / "docs" / "examples"))
    torch.save(toy_plugin.make_generator(n_classes=2).state_dict(), d / "gen.pt")
    torch.save(toy_plugin.make_classifier(n_classes=2).state_dict(), d / "clf.pt")
    plugin = {"kind": "plugin", "code": str(ROOT / "docs" / "examples"), "options": {"n_classes": 2}}
    models = {"generator": {**plugin, "factory": "toy_plugin:make_generator", "path": "gen.pt"},
              "classifier": {**plugin, "factory": "toy_plugin:make_classifier", "path": "clf.pt"}}
    quick = yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())
    stage = {**STAGE_PARAMS, "methods": ["lrp", "am_latent"], "sanity_units": 0, "n_seeds": 2}
    (d / "params.yaml").write_text(yaml.safe_dump({"models": models, "fit_link": quick["fit_link"],
                                                   "attribute_units": stage}, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(d)  # the model paths are relative to the project, as in params.yaml
    try:
        gen = load_generator(GeneratorSpec(**models["generator"]))
        clf = load_classifier(ClassifierSpec(**models["classifier"]))
    finally:
        os.chdir(cwd)
    assert gen.part_names is None
    fps = {"generator_fingerprint": gen.fingerprint, "classifier_fingerprint": clf.fingerprint}
    sample_pairs(gen, clf, PairsConfig(n_train_per_class=20, n_test_per_class=2, keep_correct=False, device="cpu"),
                 d / "data/pairs.h5", fps, progress=False)
    train = load_pairs(d / "data/pairs.h5", "train", ("w", "r"))
    link, info = fit_link("ridge", train["r"], train["w"], RidgeConfig(cv_folds=3), progress=False)
    save_link(d / "data/links/ridge.pt", link, info, pairs_fingerprint=fingerprint(d / "data/pairs.h5"), **fps)
    test = load_pairs(d / "data/pairs.h5", "test", ("r", "label", "seed"))
    r, units = test["r"][:2], np.arange(4)
    tune_units(gen, clf, link, r, test["seed"][:2], test["label"][:2], units, r[:, units].min(0),
               r[:, units].max(0) + 1.0, TuningConfig(n_seeds=2, n_steps=2, device="cpu", mode="open_loop"),
               d / "data/tuning.h5",
               attrs={**fps, "pairs_fingerprint": fingerprint(d / "data/pairs.h5"),
                      "link_fingerprint": fingerprint(d / "data/links/ridge.pt")}, progress=False)
    # the segmenter: "bright" where the render's red channel is above zero
    w = torch.as_tensor(train["w"][:8])
    masks = (gen.synthesize(w)[:, 0] > 0).to(torch.uint8)
    cfg = SegmenterConfig(channels=(8,), dilations=(1, 1), epochs=20, lr=1e-2, batch_size=8)
    seg, _ = train_segmenter(generator_maps(gen, w), masks, ["background", "bright"], cfg, progress=False)
    save_segmenter(d / "data/segmenter.pt", seg, gen.fingerprint)
    pd.DataFrame({"unit": units, "strongest_part": ["bright", "background", "bright", "background"],
                  "selectivity": [1.0, 2.0, 3.0, 1.0]}).to_csv(d / "reports/units.csv", index=False)
    return d


def test_stage_scores_on_the_segmenters_masks_where_the_generator_draws_no_part_maps(partless_project):
    from linkstyle.core.h5 import get_attr
    from linkstyle.measure.segmenter import load_segmenter, segment_w
    from linkstyle.models.registry import GeneratorSpec, load_generator

    d = partless_project
    out = _stage(d)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr[-2000:]
    assert "no part maps of its own; pass the segmenter trained for it (--segmenter data/segmenter.pt" in out.stderr
    assert "rerun" not in out.stderr
    out = _stage(d, "--segmenter", "data/segmenter.pt")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = yaml.safe_load((d / "reports/attribution.json").read_text())
    assert metrics["part_source"] == "segmenter" and metrics["n_units"]["selective"] == 2
    scores = pd.read_csv(d / "reports/a_scores.csv")
    assert set(scores["method"]) == {"lrp", "am_latent", "link"} and set(scores["part"]) <= {"background", "bright"}
    assert scores.loc[scores["method"] == "lrp", "mass"].notna().all()
    seg = load_segmenter(d / "data/segmenter.pt")
    with h5py.File(d / "data/attribution.h5") as f, h5py.File(d / "data/tuning.h5") as t:
        assert get_attr(f, "part_names") == ["background", "bright"] and get_attr(f, "part_source") == "segmenter"
        cwd = os.getcwd()
        os.chdir(d)
        try:
            gen = load_generator(GeneratorSpec(**yaml.safe_load((d / "params.yaml").read_text())["models"]["generator"]))
        finally:
            os.chdir(cwd)
        u = list(t["units"][:]).index(int(f["units"][0]))
        first = segment_w(seg, gen, torch.as_tensor(t["w"][u, :2, 0]))
        assert np.array_equal(f["link_parts_first"][0], first)  # the link's renders, labelled by the segmenter
        assert f["am_latent_parts_result"].shape == (3, 2, 16, 16)


def test_quantify_stages_say_that_ground_truth_agreement_is_skipped_without_part_maps(partless_project, tmp_path):
    d = tmp_path / "p"
    shutil.copytree(partless_project, d)
    quick = yaml.safe_load((ROOT / "tests" / "params_quick.yaml").read_text())
    params = yaml.safe_load((d / "params.yaml").read_text())
    params.update(cluster={**quick["cluster"], "n_workers": 0}, quantify_parts=quick["quantify_parts"],
                  quantify_motion=quick["quantify_motion"])
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="1", PYTHONPATH=str(ROOT))
    common = ["--tuning", "data/tuning.h5", "--segmenter", "data/segmenter.pt"]
    for script, args in (("quantify_parts", ["--measures", "m.parquet", "--changes", "c.parquet", "--metrics", "q.json"]),
                         ("quantify_motion", ["--out", "mo.parquet", "--metrics", "mo.json"])):
        out = subprocess.run([sys.executable, str(ROOT / "stages" / f"{script}.py"), *common, *args], cwd=d, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "no part maps: ground-truth agreement skipped" in out.stdout and "nan" not in out.stdout, out.stdout
