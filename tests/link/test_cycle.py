import numpy as np

from linkstyle.core.stats import rowwise_corr
from linkstyle.link.cycle import derangement, part_iou, ssim_distance
from linkstyle.models.quality import frechet_distance


def test_derangement_stays_in_class_without_fixed_points():
    labels = np.repeat([0, 1, 2], [5, 2, 7])
    p = derangement(labels, seed=3)
    assert sorted(p) == list(range(len(labels)))
    assert (p != np.arange(len(labels))).all()
    assert (labels[p] == labels).all()


def test_part_iou_by_hand():
    a = np.zeros((1, 4, 4), np.uint8)
    b = np.zeros((1, 4, 4), np.uint8)
    a[0, :2, :2] = 1  # 4 px
    b[0, :2, :1] = 1  # 2 px inside them: IoU 0.5
    a[0, 3, 3] = 2
    b[0, 3, 3] = 2  # IoU 1
    np.testing.assert_allclose(part_iou(a, b, 3), [0.75])


def test_rowwise_corr_and_ssim():
    x = np.random.default_rng(0).normal(size=(3, 50))
    np.testing.assert_allclose(rowwise_corr(x, 2 * x + 1), 1.0)
    np.testing.assert_allclose(rowwise_corr(x, -x), -1.0)
    img = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(ssim_distance(img, img), 0.0, atol=1e-12)
    assert (ssim_distance(img, 255 - img) > 0.5).all()


def test_frechet_distance_known_cases():
    x = np.random.default_rng(0).normal(size=(2000, 3))
    assert abs(frechet_distance(x, x)) < 1e-6
    shift = np.array([1.0, 2.0, 0.0])
    np.testing.assert_allclose(frechet_distance(x, x + shift), 5.0, atol=1e-6)
