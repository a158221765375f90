"""StyleGAN-family network pickles through the path a user takes (models.generator kind: stylegan)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from linkstyle.core.errors import UserError
from linkstyle.models.class_means import ClassMeansConfig, class_means, read_class_means, write_class_means
from linkstyle.models.registry import GeneratorSpec, load_generator

from .stylegan_toy import write_toy_pickle


@pytest.fixture(scope="module")
def xl_pickle(tmp_path_factory):
    return write_toy_pickle(tmp_path_factory.mktemp("xl"), per_class_avg=True)


@pytest.fixture(scope="module")
def sg2_pickle(tmp_path_factory):
    return write_toy_pickle(tmp_path_factory.mktemp("sg2"), per_class_avg=False)


def _spec(pkl, code, **kw) -> GeneratorSpec:
    return GeneratorSpec(kind="stylegan", path=str(pkl), code=str(code), **{"class_indices": (3, 7), **kw})


def test_pickle_loads_through_the_named_code_and_samples_per_seed(xl_pickle):
    gen = load_generator(_spec(*xl_pickle, class_names=("cat", "dog")))
    assert (gen.n_classes, gen.w_dim, gen.num_ws, gen.resolution, gen.z_dim) == (2, 16, 3, 16, 12)
    assert gen.class_names == ("cat", "dog") and gen.part_names is None
    w = gen.sample_w([5, 6, 7], [0, 1, 0], psi=0.7)
    w_alone = gen.sample_w([6], [1], psi=0.7)
    torch.testing.assert_close(w[1:2], w_alone, rtol=0, atol=1e-6)  # one RNG per seed, not per batch
    # Class k of the pipeline is the pickle's condition class_indices[k] (one-hot over c_dim).
    z = torch.as_tensor(gen.sample_z([5]), dtype=torch.float32)
    c = torch.nn.functional.one_hot(torch.tensor([3]), 10).float()
    raw = gen.G.mapping(z, c)[:, 0]
    mean = gen.G.mapping.w_avg[3]
    torch.testing.assert_close(w[0:1], mean + 0.7 * (raw - mean), rtol=0, atol=1e-5)


def test_synthesis_is_deterministic_and_hooks_give_feature_maps(xl_pickle):
    gen = load_generator(_spec(*xl_pickle))
    w = gen.sample_w([1, 2], [0, 1], psi=1.0)
    a, b = gen.synthesize(w), gen.synthesize(w, batch_size=1)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # noise_mode const: no per-call noise
    feats = gen.synthesis_features(w)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 4, 4), (8, 8, 8), (8, 16, 16)]  # blocks b4, b8, b16
    images, parts = gen.render(w)
    torch.testing.assert_close(images, a) and parts is None
    only = load_generator(_spec(*xl_pickle, feature_layers=("b8",)))
    assert [f.shape[-1] for f in only.synthesis_features(w)] == [8]


def test_class_means_from_checkpoint_or_estimated(xl_pickle, sg2_pickle, tmp_path):
    cfg = ClassMeansConfig(n_samples=200, batch_size=64)
    xl = load_generator(_spec(*xl_pickle))
    means, prov = class_means(xl, cfg, progress=False)
    assert prov == {"source": "checkpoint"}
    np.testing.assert_array_equal(means, xl.G.mapping.w_avg[[3, 7]].numpy())
    sg2 = load_generator(_spec(*sg2_pickle))
    with pytest.raises(UserError, match="dvc repro class_means"):
        sg2.sample_w([1], [0], psi=0.7)  # a single w_avg over all classes is not a class mean
    means, prov = class_means(sg2, cfg, progress=False)
    assert prov["source"] == "estimated" and means.shape == (2, 16)
    again, _ = class_means(sg2, ClassMeansConfig(n_samples=200, batch_size=7), progress=False)
    np.testing.assert_allclose(means, again, rtol=0, atol=1e-6)  # the batch size does not matter
    seeds = cfg.seed_base + cfg.class_stride + np.arange(200)
    np.testing.assert_allclose(means[1], sg2.sample_w(seeds, np.ones(200, int)).numpy().mean(0), atol=1e-5)
    out = tmp_path / "means.json"
    write_class_means(out, sg2, means, prov)
    back, doc = read_class_means(out)
    assert np.array_equal(back, means) and doc["generator"] == sg2.fingerprint  # exact round trip
    truncating = load_generator(_spec(*sg2_pickle), class_means=out)
    w = truncating.sample_w([1], [1], psi=0.0)
    torch.testing.assert_close(w[0], torch.from_numpy(means[1]))
    with pytest.raises(UserError, match="written for another generator"):
        load_generator(_spec(*xl_pickle), class_means=out)


def test_one_line_errors(xl_pickle, tmp_path):
    pkl, code = xl_pickle
    with pytest.raises(UserError, match="missing.pkl: generator pickle not found"):
        load_generator(_spec(tmp_path / "missing.pkl", code))
    with pytest.raises(UserError, match="nowhere: code checkout not found; set models.generator.code"):
        load_generator(_spec(pkl, tmp_path / "nowhere"))
    no_g = tmp_path / "no_g.pkl"
    no_g.write_bytes(pickle.dumps({"G": 1, "D": 2}))
    with pytest.raises(UserError, match="no 'G_ema' in this pickle"):
        load_generator(_spec(no_g, code))
    with pytest.raises(UserError, match="class_indices: must be distinct class ids in \\[0, 10\\)"):
        load_generator(_spec(pkl, code, class_indices=(3, 10)))
    with pytest.raises(UserError, match="code must name the checkout"):
        GeneratorSpec(kind="stylegan", path=str(pkl))
    with pytest.raises(UserError, match="feature_layers"):
        load_generator(_spec(pkl, code, feature_layers=("b32",)))
    with pytest.raises(UserError, match="preset.*class_indices"):
        load_generator(GeneratorSpec(kind="stylegan", path=str(pkl), code=str(code), preset="dogs", class_indices=(1,)))


def test_pickle_needing_other_code_names_the_module(tmp_path):
    pkl, _ = write_toy_pickle(tmp_path / "a")
    other = tmp_path / "other_code"
    other.mkdir()
    import sys

    for name in [m for m in sys.modules if m == "training" or m.startswith("training.")]:
        del sys.modules[name]
    paths = [p for p in sys.path if p.endswith("code")]
    for p in paths:
        sys.path.remove(p)
    try:
        with pytest.raises(UserError, match="unpickling needs module 'training'"):
            load_generator(_spec(pkl, other))
    finally:
        sys.path[:0] = paths


def test_label_images_tool_exports_what_the_masks_folder_reads(tmp_path):
    """tools/label_images.py: images to paint, samples.csv and labels.txt for the masks folder."""
    import subprocess
    import sys

    import yaml
    from PIL import Image

    from linkstyle.measure.masks import read_label_names

    pkl, code = write_toy_pickle(tmp_path / "imagenet", c_dim=1000)  # ImageNet-conditioned, as StyleGAN-XL
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "models": {"generator": {"kind": "stylegan", "path": str(pkl), "code": str(code), "preset": "fungi"}},
        "train_segmenter": {"psi": 0.7, "seed_base": 30000000, "device": "cpu"}}))
    gen = load_generator(_spec(pkl, code, preset="fungi", class_indices=None))
    means = tmp_path / "means.json"
    write_class_means(means, gen, *class_means(gen, ClassMeansConfig(), progress=False))
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "tools" / "label_images.py"), "--out", str(tmp_path / "to_label"),
                          "--per-class", "2", "--preset", "fungi", "--class-means", str(means), "--params", str(params)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "to_label"
    rows = (folder / "samples.csv").read_text().splitlines()
    assert rows[0] == "file,seed,class" and len(rows) == 1 + 4 * 2  # fungi: 4 classes
    file, seed, cls = rows[1].split(",")
    assert (file, seed, cls) == ("agaric_30000000_mask.png", "30000000", "0")
    assert Image.open(folder / "agaric_30000000.png").size == (16, 16)
    assert read_label_names(folder / "labels.txt") == ["background", "cap", "stem"]
    bad = subprocess.run([sys.executable, str(root / "tools" / "label_images.py"), "--out", "x", "--params", str(params)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "give exactly one of --preset" in bad.stderr and "Traceback" not in bad.stderr
    # Before stage class_means has run, the tool computes the means as that stage does: same images.
    doc = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**doc, "class_means": {}}))
    again = subprocess.run([sys.executable, str(root / "tools" / "label_images.py"), "--out", str(tmp_path / "again"),
                            "--per-class", "2", "--preset", "fungi", "--params", str(params)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "data/class_means.json not found; class means taken from the checkpoint" in again.stdout
    assert (tmp_path / "again" / "agaric_30000000.png").read_bytes() == (folder / "agaric_30000000.png").read_bytes()
    doc = __import__("ast").get_docstring(__import__("ast").parse((root / "tools" / "label_images.py").read_text()))
    assert "--psi" not in doc  # psi is train_segmenter.psi in params.yaml, not an option


@pytest.fixture(scope="module")
def sg3_pickle(tmp_path_factory):
    return write_toy_pickle(tmp_path_factory.mktemp("sg3"), per_class_avg=False, generator="Generator3")


NAMES3 = ("L0_10_8", "L1_14_8", "L2_22_8", "L3_16_8", "L4_16_3")


def test_stylegan3_maps_are_cut_from_their_margins_to_the_image_frame(sg3_pickle):
    gen = load_generator(_spec(*sg3_pickle, feature_layers=NAMES3))
    w = torch.randn(3, gen.w_dim)
    raw = []
    hooks = [getattr(gen.G.synthesis, n).register_forward_hook(lambda _m, _i, out: raw.append(out.clone()))
             for n in NAMES3]
    try:
        every = gen.synthesis_features(w)
    finally:
        for h in hooks:
            h.remove()
    # sampling rates 4, 8, 16, 16, 16 with a margin of 3 samples on the first three
    assert [m.shape[-1] for m in raw] == [10, 14, 22, 16, 16]
    assert [tuple(m.shape[1:]) for m in every] == [(8, 4, 4), (8, 8, 8), (8, 16, 16), (8, 16, 16), (3, 16, 16)]
    # Channel 0 marks the image frame (1 inside, 0 in the margin; resampling blurs its edge):
    # along the middle row and column, what the crop keeps is exactly where the mark is > 0.5.
    for full, cut in zip(raw[:4], every[:4]):
        n, k, mid = full.shape[-1], cut.shape[-1], full.shape[-1] // 2
        kept = torch.zeros(n, dtype=torch.bool)
        kept[(n - k) // 2:(n + k) // 2] = True
        for line in (full[:, 0, mid, :], full[:, 0, :, mid]):
            assert torch.equal(line > 0.5, kept.expand_as(line))
        torch.testing.assert_close(cut, full[..., (n - k) // 2:(n + k) // 2, (n - k) // 2:(n + k) // 2])
    torch.testing.assert_close(every[-1], torch.atanh(gen.synthesize(w).clamp(-0.999, 0.999)), rtol=1e-3, atol=1e-3)
    assert gen.G.synthesis.layer_names == list(NAMES3)
    default = load_generator(_spec(*sg3_pickle)).synthesis_features(w)  # every layer: the pickle's layer_names
    assert [m.shape[-1] for m in default] == [4, 8, 16, 16, 16]


def test_segmenter_trains_on_all_stylegan3_layers_and_jacobians_tolerate_its_in_place_input(sg3_pickle):
    from linkstyle.explain.closed_loop import seed_jacobians
    from linkstyle.measure.features import generator_maps
    from linkstyle.measure.segmenter import segment_w
    from linkstyle.measure.segmenter_training import SegmenterConfig, train_segmenter

    gen = load_generator(_spec(*sg3_pickle))
    w = torch.randn(4, gen.w_dim)
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[:, 4:12, 4:12] = 1
    cfg = SegmenterConfig(channels=(8,), dilations=(1, 1), epochs=30, lr=1e-2, batch_size=4)
    model, _ = train_segmenter(generator_maps(gen, w), masks, ["background", "box"], cfg, progress=False)
    assert segment_w(model, gen, w).shape == (4, 16, 16)

    class Mean(torch.nn.Module):  # a stand-in classifier: r = per-channel image means
        n_units = 3

        def preprocess(self, x):
            return x

        def features(self, x):
            return x.mean((2, 3))

    with pytest.warns(RuntimeWarning, match="reverse mode"):
        jac = seed_jacobians(gen, Mean(), w[:2], batch=2)
    assert jac.shape == (2, 3, gen.w_dim) and jac.abs().sum() > 0
    eps = 1e-3 * torch.eye(gen.w_dim)[0]
    with torch.no_grad():
        fd = (gen._synthesis(w[:1] + eps, False)[0] - gen._synthesis(w[:1] - eps, False)[0]).mean((2, 3)) / 2e-3
    torch.testing.assert_close(jac[0, :, 0].float(), fd[0], rtol=2e-2, atol=2e-3)


def test_class_ids_from_a_preset_that_does_not_fit_name_the_preset(xl_pickle):
    pkl, code = xl_pickle  # c_dim 10; the preset's ImageNet ids are far beyond it
    with pytest.raises(UserError) as e:
        load_generator(GeneratorSpec(kind="stylegan", path=str(pkl), code=str(code), preset="dogs"))
    msg = str(e.value)
    assert msg.startswith("models.generator.preset: preset 'dogs' does not fit this model") and "[0, 10)" in msg
    assert "remove the preset and set class_indices and class_names" in msg and "\n" not in msg
