import numpy as np
import pytest
import torch

from linkstyle.core.checkpoint import save_module
from linkstyle.core.errors import UserError
from linkstyle.models.classifier_training import (
    ClassifierTrainConfig,
    augment,
    evaluate,
    train_classifier,
)
from linkstyle.models.registry import ClassifierSpec, load_classifier
from linkstyle.models.small_resnet import SmallResNet
from linkstyle.world.procedural import CLASS_NAMES, WorldConfig, make_split


def test_uint8_and_float_inputs_preprocess_alike(tiny_clf):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    f = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.testing.assert_close(tiny_clf.preprocess(u8), tiny_clf.preprocess(f), atol=1e-6, rtol=0)


def test_represent_contract(tiny_clf):
    x = torch.rand(10, 3, 32, 32) * 2 - 1
    r, logits = tiny_clf.represent(x, batch_size=3)
    assert r.shape == (10, tiny_clf.n_units) and logits.shape == (10, 5)
    assert (r >= 0).all(), "r is taken after ReLU and global average pooling"
    r1, l1 = tiny_clf.represent(x[4:5], batch_size=1)
    torch.testing.assert_close(r[4:5], r1, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_clf.logits_from_r(r), logits, atol=1e-5, rtol=0)


def test_augment_keeps_shape_range_and_is_seeded():
    x = torch.rand(6, 3, 32, 32)
    cfg = ClassifierTrainConfig()
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)


def test_training_learns_the_world_and_is_deterministic(tmp_path):
    cfg_w = WorldConfig(n_train_per_class=60, n_test_per_class=20)
    (_, cl, _, img, _), = list(make_split(cfg_w, "train"))
    (_, cl_t, _, img_t, _), = list(make_split(cfg_w, "test"))
    cfg = ClassifierTrainConfig(epochs=4, batch_size=32, widths=(8, 16, 32), lr=0.01)
    m1, h1 = train_classifier(img, cl, cfg, CLASS_NAMES, progress=False)
    m2, _ = train_classifier(img, cl, cfg, CLASS_NAMES, progress=False)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert evaluate(m1, img_t, cl_t)["accuracy"] > 0.5  # chance is 0.2
    p = tmp_path / "c.pt"
    save_module(p, "classifier", m1)
    m3 = load_classifier(ClassifierSpec(path=str(p)))
    torch.testing.assert_close(m3.represent(img_t[:8])[1], m1.represent(img_t[:8])[1])


def test_bad_training_params_are_one_line_errors():
    with pytest.raises(UserError, match="batch_size"):
        ClassifierTrainConfig(batch_size=1)
    with pytest.raises(UserError, match="stem_stride"):
        ClassifierTrainConfig(stem_stride=3)
