import numpy as np
import pytest
import torch

from linkstyle.core.checkpoint import save_module
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8
from linkstyle.models.registry import GeneratorSpec, load_generator
from linkstyle.models.stylegen import StyleGen, StyleGenConfig
from linkstyle.world.procedural import CLASS_NAMES, PART_NAMES


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    g = StyleGen(StyleGenConfig(w_dim=16, channels=(32, 32, 16, 8), encoder_channels=(8, 8, 8)), CLASS_NAMES, PART_NAMES)
    rng = np.random.default_rng(0)
    g.fit_prior(rng.normal(size=(500, 16)) + np.repeat(np.arange(5), 100)[:, None], np.repeat(np.arange(5), 100))
    return g.eval()


def test_metadata(gen):
    assert gen.w_dim == 16 and gen.n_classes == 5 and gen.resolution == 32
    assert gen.num_ws == 8 and gen.class_names == tuple(CLASS_NAMES)


def test_shapes_and_ranges(gen):
    w = gen.sample_w([1, 2, 3], [0, 1, 4], psi=0.7)
    assert w.shape == (3, 16) and w.dtype == torch.float32
    img = gen.synthesize(w)
    assert img.shape == (3, 3, 32, 32) and img.min() >= -1 and img.max() <= 1
    parts = gen.part_maps(w)
    assert parts.shape == (3, 32, 32) and parts.dtype == torch.uint8 and int(parts.max()) < len(PART_NAMES)
    feats = gen.synthesis_features(w)
    assert [f.shape[-1] for f in feats] == [4, 8, 8, 16, 16, 32, 32]
    u8 = to_uint8(img)
    assert u8.shape == (3, 32, 32, 3) and u8.dtype == torch.uint8
    # one pass for both, same answers as the two separate calls
    img2, parts2 = gen.render(w, batch_size=2)
    assert torch.equal(img2, gen.synthesize(w, batch_size=2)) and torch.equal(parts2, gen.part_maps(w, batch_size=2))


def test_same_seed_same_sample_whatever_the_batch(gen):
    seeds, classes = np.arange(100, 140), np.arange(40) % 5
    w_all = gen.sample_w(seeds, classes, 0.7)
    w_one = gen.sample_w(seeds[17:18], classes[17:18], 0.7)
    assert torch.equal(w_all[17:18], w_one)
    img_all = gen.synthesize(w_all, batch_size=16)
    img_one = gen.synthesize(w_one, batch_size=1)
    torch.testing.assert_close(img_all[17:18], img_one, atol=1e-5, rtol=0)


def test_truncation_pulls_toward_class_mean(gen):
    seeds, classes = np.arange(200), np.zeros(200, int)
    mean = gen.class_mean_w()[0]
    d1 = (gen.sample_w(seeds, classes, 1.0) - mean).norm(dim=1)
    d5 = (gen.sample_w(seeds, classes, 0.5) - mean).norm(dim=1)
    torch.testing.assert_close(d5, 0.5 * d1)
    assert torch.allclose(gen.sample_w(seeds[:3], classes[:3], 0.0), mean.expand(3, -1))


def test_ws_copies_accepted(gen):
    w = gen.sample_w([5], [2])
    ws = w[:, None].repeat(1, gen.num_ws, 1)
    torch.testing.assert_close(gen.synthesize(ws), gen.synthesize(w))


def test_bad_inputs(gen):
    with pytest.raises(UserError, match="class ids"):
        gen.sample_w([1], [7])
    with pytest.raises(UserError, match="w must have shape"):
        gen.synthesize(torch.zeros(2, 3))
    with pytest.raises(UserError, match="seeds"):
        gen.sample_w([-1], [0])


def test_checkpoint_roundtrip_and_errors(gen, tmp_path):
    p = tmp_path / "g.pt"
    save_module(p, "generator", gen)
    g2 = load_generator(GeneratorSpec(path=str(p)))
    w = gen.sample_w([3, 4], [1, 2])
    assert torch.equal(g2.sample_w([3, 4], [1, 2]), w)
    torch.testing.assert_close(g2.synthesize(w), gen.synthesize(w))
    with pytest.raises(UserError, match="not found"):
        load_generator(GeneratorSpec(path=str(tmp_path / "missing.pt")))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(p.read_bytes()[:100])
    with pytest.raises(UserError, match=r"bad\.pt.*corrupt"):
        load_generator(GeneratorSpec(path=str(bad)))
