import numpy as np
import pytest

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.world.procedural import (
    CLASS_NAMES,
    PART_NAMES,
    WorldConfig,
    make_split,
    render,
    sample_factors,
    split_seeds,
)


def test_same_seed_same_pixels_whatever_the_batch():
    seeds, classes = np.arange(40, 52), np.arange(12) % len(CLASS_NAMES)
    img, lab = render(sample_factors(seeds, classes), 32)
    img3, lab3 = render(sample_factors(seeds[3:4], classes[3:4]), 32)
    assert np.array_equal(img[3:4], img3) and np.array_equal(lab[3:4], lab3)
    img_again, _ = render(sample_factors(seeds, classes), 32)
    assert np.array_equal(img, img_again)


def test_splits_are_disjoint_and_classes_balanced():
    cfg = WorldConfig(n_train_per_class=20, n_test_per_class=4)
    tr, te = split_seeds(cfg, "train"), split_seeds(cfg, "test")
    assert not set(tr[0]) & set(te[0])
    assert np.bincount(tr[1]).tolist() == [20] * len(CLASS_NAMES)


def test_typical_image_covers_every_part_with_20px():
    cfg = WorldConfig(n_train_per_class=60, n_test_per_class=1)
    parts = np.concatenate([c[4] for c in make_split(cfg, "train")])
    labels = np.concatenate([c[1] for c in make_split(cfg, "train")])
    areas = np.stack([(parts == p).sum((1, 2)) for p in range(len(PART_NAMES))], 1)
    for c in range(len(CLASS_NAMES)):
        median = np.median(areas[labels == c], axis=0)
        assert (median[1:] >= 20).all(), (CLASS_NAMES[c], median)


def test_classes_differ_more_than_seeds_within_a_class():
    seeds = np.arange(200)
    classes = seeds % len(CLASS_NAMES)
    f = sample_factors(seeds, classes)
    img, _ = render(f, 32)
    x = img.reshape(len(img), -1).astype(float)
    means = np.stack([x[classes == c].mean(0) for c in range(len(CLASS_NAMES))])
    between = np.mean([np.linalg.norm(means[a] - means[b]) for a in range(5) for b in range(a)])
    within = np.mean([np.linalg.norm(x[classes == c] - means[c], axis=1).mean() for c in range(5)]) / np.sqrt(40)
    assert between > within


def test_factors_vary_inside_a_class():
    f = sample_factors(np.arange(0, 500, 5), np.zeros(100, int))
    assert (f[:, 1:].std(0) > 0).sum() >= 20


def test_bad_world_params_are_one_line_errors():
    with pytest.raises(UserError, match="world.resolution"):
        from_params(WorldConfig, {"resolution": 8}, "world")
    with pytest.raises(UserError, match="unknown key world.resolutoin"):
        from_params(WorldConfig, {"resolutoin": 32}, "world")
    with pytest.raises(UserError, match="must be an integer"):
        from_params(WorldConfig, {"n_train_per_class": "many"}, "world")
