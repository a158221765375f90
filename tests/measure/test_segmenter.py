"""Tests for linkstyle.segmenter: feature stacking, training on recoverable synthetic parts,
batch independence, IoU, determinism, persistence and the user mask folder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.measure.features import (
    generator_maps,
    stack_features,
)
from linkstyle.measure.masks import load_mask_folder
from linkstyle.measure.segmenter import (
    FewShotSegmenter,
    load_segmenter,
    save_segmenter,
    segment,
    segment_w,
)
from linkstyle.measure.segmenter_training import (
    SegmenterConfig,
    iou_table,
    train_segmenter,
)

RES = 32
LABELS = ("background", "body", "spot")
SIZES = (4, 8, 8, 16, 16, 32, 32)  # a StyleGAN-like synthesis: 4, then two maps per resolution


def blob_masks(n, seed):
    """A large disc (body) holding a small disc (spot), at random places and sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:RES, :RES] + 0.5
    masks = np.zeros((n, RES, RES), dtype=np.uint8)
    for k in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(6, 10)
        masks[k][(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = 1
        a = rng.uniform(0, 2 * np.pi)
        sy, sx = cy + 0.5 * r * np.sin(a), cx + 0.5 * r * np.cos(a)
        masks[k][(yy - sy) ** 2 + (xx - sx) ** 2 < (0.35 * r) ** 2] = 2
    return masks


def fake_maps(masks, seed, noise=0.7, junk=6):
    """Maps like synthesis_features: even indices carry the (area-averaged, noisy) one-hot
    mask at their resolution, odd indices are pure noise the default layers skip."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(torch.as_tensor(masks).long(), len(LABELS)).permute(0, 3, 1, 2).float()
    maps = []
    for i, s in enumerate(SIZES):
        if i % 2 == 0:
            sig = F.adaptive_avg_pool2d(onehot, s) * 3.0
            m = torch.cat([sig, torch.randn(len(masks), junk, s, s, generator=g)], 1)
            m = m + noise * torch.randn(m.shape, generator=g)
        else:
            m = 5.0 * torch.randn(len(masks), 4, s, s, generator=g)
        maps.append(m)
    return maps


class FakeGenerator:
    resolution = RES

    def synthesis_features(self, w):
        masks = blob_masks(len(w), int(w[0, 0]))
        with torch.inference_mode():  # the real generator returns inference tensors
            return fake_maps(masks, int(w[0, 0]))


# Narrower than the reference S net and fewer epochs, to keep the test fast. The small
# "spot" part is only picked up after ~30 epochs (before that it is labelled body), so
# the LR drop comes late.
CFG = SegmenterConfig(channels=(32, 32, 32, 16), epochs=60, lr_step=50, batch_size=4, seed=3)


@pytest.fixture(scope="module")
def data():
    train_m, test_m = blob_masks(8, 0), blob_masks(16, 1)
    return (stack_features(fake_maps(train_m, 10), RES), train_m,
            stack_features(fake_maps(test_m, 11), RES), test_m)


@pytest.fixture(scope="module")
def trained(data):
    x, m, _, _ = data
    return train_segmenter(x, m, LABELS, CFG, progress=False)


# ---------------------------------------------------------------------------- features

def test_stack_features_shapes_and_exact_nearest():
    maps = [torch.randn(3, c, s, s) for c, s in zip((2, 3, 4, 5, 6, 7, 8), SIZES)]
    out = stack_features(maps, 32, batch_size=2)  # default: every other map -> 2 + 4 + 6 + 8 channels
    assert out.shape == (3, 20, 32, 32)
    assert torch.equal(out[:, :2], maps[0].repeat_interleave(8, -1).repeat_interleave(8, -2))
    assert torch.equal(out[:, 2:6], maps[2].repeat_interleave(4, -1).repeat_interleave(4, -2))
    assert torch.equal(out[:, 12:], maps[6])
    sel = stack_features(maps, 16, layers=(5, 1))
    assert sel.shape == (3, 10, 16, 16)
    assert torch.equal(sel[:, :7], maps[5][..., ::2, ::2])  # nearest downsampling keeps every other pixel
    assert torch.equal(sel[:, 7:], maps[1].repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert stack_features(maps, 32, batch_size=1, dtype=torch.float16).dtype == torch.float16
    with pytest.raises(UserError, match="outside"):
        stack_features(maps, 32, layers=(7,))


# ---------------------------------------------------------------------------- training

def test_segmenter_recovers_parts(data, trained):
    _, _, xt, mt = data
    model, hist = trained
    assert hist["loss"][-1] < hist["loss"][0] and len(hist["lr"]) == CFG.epochs
    assert hist["lr"][-1] == pytest.approx(CFG.lr * CFG.lr_gamma)
    table = iou_table(segment(model, xt), mt, LABELS)
    assert table["mean_iou"] >= 0.8, table["iou"]
    assert table["n_scored"] == 3


def test_reference_architecture_shapes():
    model = FewShotSegmenter(20, LABELS)  # default S: 4 hidden convs + 3x3 output conv
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 64, 64, 32, 3]
    assert [c.dilation[0] for c in convs] == [1, 2, 1, 2, 1]
    assert model(torch.randn(2, 20, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("dilations", [(1, 2, 1, 2, 1), (2, 1, 1, 2, 1), (3, 1, 1, 1, 1)])
def test_maps_path_equals_stacked_path(upsample, dilations):
    """The transposed-conv first layer on unstacked maps gives the stacked path's logits."""
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(3, c, s, s, generator=g) * (1 + i) + i for i, (c, s) in enumerate(zip((5, 6, 7, 8), (4, 8, 16, 32)))]
    torch.manual_seed(1)
    model = FewShotSegmenter(26, LABELS, (16, 8, 8, 8), dilations, upsample=upsample).eval()
    model.in_mean.normal_(generator=g)
    model.in_std.uniform_(0.5, 2.0, generator=g)
    with torch.no_grad():
        stacked = model(stack_features(maps, RES, layers=range(4), mode=upsample))
        unstacked = model(maps, RES)
        assert torch.allclose(stacked, unstacked, atol=1e-5), (stacked - unstacked).abs().max()
        # no full-size map at all: only transposed convs
        coarse = FewShotSegmenter(18, LABELS, (4, 4, 4, 4), dilations, upsample=upsample).eval()
        assert torch.allclose(coarse(maps[:3], RES), coarse(stack_features(maps[:3], RES, layers=range(3), mode=upsample)),
                              atol=1e-5)
    with pytest.raises(UserError, match="larger than"):
        segment(model, maps, size=16)


def test_generator_maps_and_segment_w_match_stacked(data, trained):
    model, _ = trained
    gen = FakeGenerator()
    w = torch.full((6, 4), 5.0)
    maps = generator_maps(gen, w, model.layers, batch_size=6)
    assert [m.shape[-1] for m in maps] == [4, 8, 16, 32] and not maps[0].is_inference()
    stacked = stack_features(gen.synthesis_features(w), gen.resolution, model.layers)
    assert np.array_equal(segment(model, maps, batch_size=4), segment(model, stacked, batch_size=4))
    assert np.array_equal(segment_w(model, gen, w, batch_size=6), segment(model, stacked))


def test_training_on_maps_matches_training_on_stacked(data):
    train_m = blob_masks(4, 0)
    maps = [m for i, m in enumerate(fake_maps(train_m, 10)) if i % 2 == 0]
    cfg = dataclasses.replace(CFG, epochs=3, hflip=True)
    a, ha = train_segmenter(stack_features(maps, RES, layers=range(4)), train_m, LABELS, cfg, progress=False)
    b, hb = train_segmenter(maps, train_m, LABELS, cfg, progress=False)
    assert np.allclose(ha["loss"], hb["loss"], rtol=1e-4)
    assert torch.allclose(a.in_mean, b.in_mean) and torch.allclose(a.in_std, b.in_std)
    assert torch.allclose(a.net[0].weight, b.net[0].weight, atol=1e-4)


def test_segment_is_batch_size_independent(data, trained):
    _, _, xt, _ = data
    model, _ = trained
    one = segment(model, xt, batch_size=1)
    assert one.dtype == np.uint8 and one.shape == (16, RES, RES)
    assert np.array_equal(one, segment(model, xt, batch_size=5))
    assert np.array_equal(one, segment(model, xt, batch_size=64))


def test_training_is_deterministic(data):
    x, m, _, _ = data
    cfg = dataclasses.replace(CFG, epochs=2, hflip=True)
    a, ha = train_segmenter(x[:4], m[:4], LABELS, cfg, progress=False)
    b, hb = train_segmenter(x[:4], m[:4], LABELS, cfg, progress=False)
    assert ha["loss"] == hb["loss"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    c, _ = train_segmenter(x[:4], m[:4], LABELS, dataclasses.replace(cfg, seed=4), progress=False)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_bad_inputs_raise_user_errors(data):
    x, m, _, _ = data
    with pytest.raises(UserError, match="label ids"):
        train_segmenter(x[:2], m[:2], LABELS[:2], CFG, progress=False)
    with pytest.raises(UserError, match="masks must be"):
        train_segmenter(x[:2], m[:3], LABELS, CFG, progress=False)
    with pytest.raises(UserError, match="dilations"):
        from_params(SegmenterConfig, {"dilations": [1, 2]}, "segmenter")
    assert from_params(SegmenterConfig, {"layers": None}, "segmenter").layers is None
    assert from_params(SegmenterConfig, {"layers": [0, 2]}, "segmenter").layers == (0, 2)


# ---------------------------------------------------------------------------- scoring

def test_iou_table_hand_cases():
    a = np.array([[[0, 0, 1, 1]]])
    perfect = iou_table(a, a, ("bg", "x", "y"))
    assert perfect["iou"] == {"bg": 1.0, "x": 1.0, "y": None} and perfect["mean_iou"] == 1.0
    disjoint = iou_table(np.array([[[1, 1, 0, 0]]]), a, ("bg", "x"))
    assert disjoint["iou"] == {"bg": 0.0, "x": 0.0} and disjoint["pixel_accuracy"] == 0.0
    # x: truth {2,3}, prediction {1,2} -> intersection 1, union 3; bg: truth {0,1}, prediction {0,3} -> 1/3
    half = iou_table(np.array([[[0, 1, 1, 0]]]), a, ("bg", "x"))
    assert half["iou"]["x"] == pytest.approx(1 / 3) and half["iou"]["bg"] == pytest.approx(1 / 3)
    assert half["confusion"] == [[1, 1], [1, 1]]
    # a label present in only one image still counts over all pixels of all images
    two = iou_table(np.array([[[1, 1]], [[0, 0]]]), np.array([[[1, 0]], [[0, 0]]]), ("bg", "x"))
    assert two["iou"]["x"] == pytest.approx(0.5) and two["iou"]["bg"] == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="outside"):
        iou_table(np.array([[[5]]]), np.array([[[0]]]), ("bg", "x"))


# ---------------------------------------------------------------------------- persistence

def test_save_load_roundtrip_and_fingerprint(tmp_path, data, trained):
    _, _, xt, _ = data
    model, hist = trained
    path = tmp_path / "seg.pt"
    save_segmenter(path, model, "abc123", info=hist)
    back = load_segmenter(path, expected_generator_fingerprint="abc123")
    assert back.label_names == LABELS and back.layers is None and back.generator_fingerprint == "abc123"
    assert back.info["n_train"] == 8
    assert np.array_equal(segment(back, xt), segment(model, xt))
    mismatch = r"trained for generator abc123 but the generator is def456.*dvc repro train_segmenter"
    with pytest.raises(UserError, match=mismatch):
        load_segmenter(path, expected_generator_fingerprint="def456")
    with pytest.raises(UserError, match="trained on"):
        segment(back, xt[:, :5])


# ---------------------------------------------------------------------------- mask folder

def write_folder(root, masks, labels=LABELS, rows=None):
    root.mkdir(exist_ok=True)
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    lines = ["file,seed,class"]
    for k, m in enumerate(masks):
        Image.fromarray(m).save(root / f"m{k}.png")
        lines.append(f"m{k}.png,{100 + k},{k % 2}")
    (root / "samples.csv").write_text("\n".join(rows or lines) + "\n")
    return root


def test_mask_folder_loads(tmp_path):
    masks = blob_masks(3, 5)
    root = write_folder(tmp_path / "masks", masks)
    Image.fromarray(masks[2].astype(np.uint16)).save(root / "m2.png")  # 16-bit grey is fine too
    seeds, classes, got, names = load_mask_folder(root, RES)
    assert seeds.tolist() == [100, 101, 102] and classes.tolist() == [0, 1, 0]
    assert got.dtype == np.uint8 and np.array_equal(got, masks) and names == list(LABELS)


def test_mask_folder_errors(tmp_path):
    masks = blob_masks(2, 6)
    with pytest.raises(UserError, match="mask folder not found"):
        load_mask_folder(tmp_path / "nope", RES)
    root = write_folder(tmp_path / "a", masks)
    with pytest.raises(UserError, match=r"m0\.png: mask is 32x32 but the generator resolution is 64x64"):
        load_mask_folder(root, 64)
    bad = masks[1].copy()
    bad[0, :2] = (7, 9)
    Image.fromarray(bad).save(root / "m1.png")
    with pytest.raises(UserError, match=r"m1\.png: mask holds label ids \[7, 9\].*3 labels"):
        load_mask_folder(root, RES)
    Image.fromarray(np.stack([masks[1]] * 3, -1)).save(root / "m1.png")
    with pytest.raises(UserError, match=r"m1\.png: mask must be a single-channel"):
        load_mask_folder(root, RES)
    (root / "m1.png").unlink()
    with pytest.raises(UserError, match=r"m1\.png: mask listed in samples.csv not found"):
        load_mask_folder(root, RES)
    (root / "labels.txt").unlink()
    with pytest.raises(UserError, match=r"labels\.txt: label names file not found"):
        load_mask_folder(root, RES)
    root = write_folder(tmp_path / "b", masks, rows=["file,seed", "m0.png,1"])
    with pytest.raises(UserError, match=r"samples\.csv: header must have columns file,seed,class"):
        load_mask_folder(root, RES)
    root = write_folder(tmp_path / "c", masks, rows=["file,seed,class", "m0.png,1,3"])
    with pytest.raises(UserError, match=r"line 2: class 3 is not a generator class id \(0\.\.1\)"):
        load_mask_folder(root, RES, n_classes=2)
