"""Tests for linkstyle.parts: each measure on hand-drawn masks with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from linkstyle.core.errors import UserError
from linkstyle.measure.parts import (
    CHANGE_METRICS,
    PART_METRICS,
    angle_change,
    find_regions,
    local_entropy,
    match_regions,
    measure_parts,
    pair_changes,
    part_changes,
)

NAMES = ("background", "body", "head")


def value(table, metric, part, image=0):
    row = table[(table.image == image) & (table.part == part) & (table.metric == metric)]
    assert len(row) == 1, (metric, part, image)
    return float(row["value"].iloc[0]) if "value" in row else float(row["change"].iloc[0])


def ellipse_mask(size, center, axes, angle, part=1):
    """Filled ellipse of `part` on a background 0 map; axes are semi-axes (first = along `angle`)."""
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, center, axes, angle, 0, 360, part, thickness=-1)
    return m


def grey_images(masks):
    return np.zeros(masks.shape + (3,), np.uint8)


# ----------------------------------------------------------------------------- measure_parts


def test_area_and_luminance_by_hand():
    mask = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 1],
                     [2, 2, 2, 0],
                     [0, 0, 0, 0]], np.uint8)
    img = np.zeros((4, 4, 3), np.uint8)
    img[mask == 1] = (255, 255, 255)         # white: luminance 85
    img[2, 0] = (100, 0, 0)                   # head pixels: 29.9/3, 58.7/3, 11.4/3
    img[2, 1] = (0, 100, 0)
    img[2, 2] = (0, 0, 100)
    t = measure_parts(img[None], mask[None], NAMES)
    assert list(t.columns) == ["image", "part", "metric", "value"]
    assert len(t) == len(NAMES) * len(PART_METRICS)
    assert value(t, "area", "background") == 9
    assert value(t, "area", "body") == 4
    assert value(t, "area", "head") == 3
    assert value(t, "luminance", "body") == pytest.approx(85.0)
    assert value(t, "luminance", "background") == pytest.approx(0.0)
    assert value(t, "luminance", "head") == pytest.approx((29.9 + 58.7 + 11.4) / 3 / 3)


def test_constant_image_has_zero_entropy_and_absent_part_is_nan():
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 4:10, 4:10] = 1  # no head
    img = np.full((1, 16, 16, 3), 120, np.uint8)
    t = measure_parts(img, mask, NAMES, entropy_radius=3)
    for part in ("background", "body"):
        for m in ("entropy_mean", "entropy_std", "entropy_min", "entropy_max"):
            assert value(t, m, part) == pytest.approx(0.0, abs=1e-12)
    assert value(t, "area", "head") == 0
    for m in PART_METRICS[1:]:
        assert np.isnan(value(t, m, "head"))


def test_entropy_statistics_match_direct_rank_entropy():
    from skimage.filters import rank
    from skimage.morphology import disk

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (2, 20, 20)).astype(np.int64)
    t = measure_parts(img, mask, NAMES)
    grey = cv2.cvtColor(img[1], cv2.COLOR_RGB2GRAY)
    ent = rank.entropy(grey, disk(5))[mask[1] == 2]
    assert value(t, "entropy_mean", "head", 1) == pytest.approx(ent.mean())
    assert value(t, "entropy_std", "head", 1) == pytest.approx(ent.std())
    assert value(t, "entropy_min", "head", 1) == pytest.approx(ent.min())
    assert value(t, "entropy_max", "head", 1) == pytest.approx(ent.max())


def test_keys_replace_image_column():
    mask = np.zeros((2, 8, 8), np.uint8)
    keys = pd.DataFrame({"unit": [3, 3], "seed": [10, 11], "step": [0, 0]})
    t = measure_parts(grey_images(mask), mask, NAMES, keys=keys)
    assert list(t.columns) == ["unit", "seed", "step", "part", "metric", "value"]
    assert t.seed.tolist() == [10] * 18 + [11] * 18


# ----------------------------------------------------------------------------- regions


def test_disc_has_low_eccentricity():
    mask = ellipse_mask(64, (32, 30), (12, 12), 0)
    r = find_regions(mask[None], NAMES)
    body = r[r.part == "body"]
    assert len(body) == 1
    assert body.eccentricity.iloc[0] < 0.1
    assert body.cx.iloc[0] == pytest.approx(32, abs=0.1)
    assert body.cy.iloc[0] == pytest.approx(30, abs=0.1)


def test_axis_aligned_ellipse_eccentricity_and_axes():
    a, b = 20, 10
    mask = ellipse_mask(64, (32, 32), (a, b), 0)
    body = find_regions(mask[None], NAMES).query("part == 'body'").iloc[0]
    assert body.eccentricity == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.02)
    # Full axis lengths; cv2 fills pixel centres out to the semi-axis, so the drawn
    # shape spans 2a + 1 by 2b + 1 pixels.
    assert body.width == pytest.approx(2 * a + 1, abs=0.5)
    assert body.height == pytest.approx(2 * b + 1, abs=0.5)
    assert min(body.angle, 180 - body.angle) < 1.0


@pytest.mark.parametrize("angle", [30, 120, 0, 90, 175])
def test_rotated_ellipse_angle_follows_cv2_convention(angle):
    mask = ellipse_mask(64, (32, 32), (22, 8), angle)
    body = find_regions(mask[None], NAMES).query("part == 'body'").iloc[0]
    assert abs(angle_change(angle, body.angle)) < 2.0
    assert 0 <= body.angle < 180


def test_two_blobs_give_two_regions_in_raster_order_and_tiny_ones_drop():
    mask = np.zeros((32, 32), np.uint8)
    mask[20:26, 2:8] = 1    # lower-left blob
    mask[3:7, 20:30] = 1    # upper-right blob: first in raster order
    mask[0, 0:2] = 2        # 2-px head speck, under min_region_px=3
    r = find_regions(mask[None], NAMES)
    body = r[r.part == "body"]
    assert body.region.tolist() == [0, 1]
    assert body.area.tolist() == [40, 36]
    assert body.cx.tolist() == pytest.approx([24.5, 4.5])
    assert body.cy.tolist() == pytest.approx([4.5, 22.5])
    assert (r.part == "head").sum() == 0
    assert (find_regions(mask[None], NAMES, min_region_px=2).part == "head").sum() == 1


def test_regions_match_skimage_regionprops():
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(3)
    masks = np.stack([cv2.GaussianBlur(rng.random((24, 24)), (0, 0), 2) for _ in range(3)])
    masks = np.digitize(masks, np.quantile(masks, [0.4, 0.7])).astype(np.uint8)
    r = find_regions(masks, NAMES)
    ref = []
    for i, m in enumerate(masks):
        for p, name in enumerate(NAMES):
            for rp in regionprops(label(m == p, connectivity=2)):
                if rp.area >= 3:
                    ref.append((i, name, rp.area, rp.centroid[1], rp.centroid[0], rp.eccentricity,
                                (90 - np.degrees(rp.orientation)) % 180, rp.axis_major_length,
                                rp.axis_minor_length))
    cols = ["image", "part", "area", "cx", "cy", "eccentricity", "angle", "width", "height"]
    ref = pd.DataFrame(ref, columns=cols).sort_values(["image", "part", "cy", "cx"]).reset_index(drop=True)
    got = r[cols].sort_values(["image", "part", "cy", "cx"]).reset_index(drop=True)
    assert len(got) == len(ref) > 10
    same = [c for c in cols[2:] if c != "angle"]
    np.testing.assert_allclose(got[same].to_numpy(float), ref[same].to_numpy(float), atol=1e-8)
    # 0 and 180 are one angle; isotropic regions have no major axis (we say 0, skimage 45).
    axis = got.eccentricity > 1e-9
    assert (~axis).sum() <= 3
    np.testing.assert_allclose(angle_change(got.angle[axis], ref.angle[axis]), 0, atol=1e-6)


def test_works_at_256_pixels():
    mask = ellipse_mask(256, (128, 100), (90, 30), 30)
    img = np.repeat(mask[..., None] * 200, 3, axis=-1).astype(np.uint8)
    t = measure_parts(img[None], mask[None], NAMES)
    body = find_regions(mask[None], NAMES).query("part == 'body'").iloc[0]
    assert value(t, "area", "body") == (mask == 1).sum()
    assert abs(angle_change(30, body.angle)) < 1.0


# ----------------------------------------------------------------------------- matching and changes


def test_angle_change_wraps_mod_180():
    assert angle_change(179, 1) == pytest.approx(2)
    assert angle_change(1, 179) == pytest.approx(-2)
    assert angle_change(10, 100) == pytest.approx(-90)  # 90 either way; [-90, 90)
    np.testing.assert_allclose(angle_change([0, 45], [135, 50]), [-45, 5])


def test_match_pairs_regions_when_order_differs():
    a = np.zeros((32, 32), np.uint8)
    a[2:8, 20:28] = 1     # region 0 in a (upper right)
    a[12:18, 2:10] = 1    # region 1 in a (left)
    b = np.zeros((32, 32), np.uint8)
    b[1:7, 3:11] = 1      # moved up: now first in raster order -> region 0 in b
    b[4:10, 21:29] = 1    # region 1 in b; overlaps a's region 0
    b[13:18, 3:9] = 1     # region 2 in b: overlaps a's region 1 more than b's region 0 does
    m = match_regions(a[None], b[None], NAMES)
    body = m[m.part == "body"].sort_values("region_a")
    assert list(zip(body.region_a, body.region_b)) == [(0, 1), (1, 2)]
    assert (body.iou > 0).all()


def test_match_uses_hungarian_for_contested_overlaps():
    a = np.zeros((20, 24), np.uint8)
    a[0:10, 0:20] = 1     # a0: 200 px
    a[11:14, 9:20] = 1    # a1: 33 px
    b = np.zeros((20, 24), np.uint8)
    b[0:10, 0:8] = 1      # b0: inside a0, IoU 0.40
    b[0:14, 9:20] = 1     # b1: IoU 0.45 with a0, 0.21 with a1
    m = match_regions(a[None], b[None], NAMES).query("part == 'body'")
    # Greedy (best IoU first) would pair a0-b1 and leave a1 alone (total 0.45); the
    # assignment maximising total IoU is a0-b0 + a1-b1 (0.61).
    assert sorted(zip(m.region_a, m.region_b)) == [(0, 0), (1, 1)]
    assert m.iou.tolist() == pytest.approx([80 / 200, 33 / 154])


def tables_for(first_masks, last_masks, first_imgs=None, last_imgs=None, **kw):
    fi = grey_images(first_masks) if first_imgs is None else first_imgs
    li = grey_images(last_masks) if last_imgs is None else last_imgs
    return dict(
        first=measure_parts(fi, first_masks, NAMES), last=measure_parts(li, last_masks, NAMES),
        regions_first=find_regions(first_masks, NAMES), regions_last=find_regions(last_masks, NAMES),
        matches=match_regions(first_masks, last_masks, NAMES), **kw)


def change(table, metric, part, image=0):
    row = table[(table.image == image) & (table.part == part) & (table.metric == metric)]
    assert len(row) == 1, (metric, part)
    return float(row.change.iloc[0])


def test_changes_are_normalised_and_shape_changes_use_matched_regions():
    first = ellipse_mask(64, (30, 32), (20, 8), 170)
    last = ellipse_mask(64, (32, 33), (24, 8), 10)
    fi = np.zeros((64, 64, 3), np.uint8)
    li = np.zeros((64, 64, 3), np.uint8)
    fi[first == 1] = 30
    li[last == 1] = 81
    t = part_changes(**tables_for(first[None], last[None], fi[None], li[None]))
    assert list(t.columns) == ["image", "part", "metric", "change"]
    assert t.metric.tolist()[: len(CHANGE_METRICS)] == list(CHANGE_METRICS)
    a0, a1 = (first == 1).sum(), (last == 1).sum()
    assert change(t, "area", "body") == pytest.approx((a1 - a0) / a0)
    assert change(t, "luminance", "body") == pytest.approx((81 - 30) / 3 / 85)  # grey g has luminance g/3
    assert change(t, "angle", "body") == pytest.approx(20, abs=2)
    assert change(t, "cx", "body") == pytest.approx(2, abs=0.2)
    assert change(t, "cy", "body") == pytest.approx(1, abs=0.2)
    assert change(t, "width", "body") == pytest.approx(8, abs=1)
    assert change(t, "height", "body") == pytest.approx(0, abs=1)
    assert change(t, "n_regions", "body") == 0
    assert "head" not in set(t.part)  # absent at both steps: mean area 0 < 20


def test_small_parts_left_out_by_mean_area_and_area_by():
    first = np.zeros((2, 16, 16), np.uint8)
    first[:, 2:12, 2:12] = 1        # body 100 px
    first[0, 13:16, 13:16] = 2      # head 9 px in item 0
    first[1, 13:16, 10:16] = 2      # head 18 px in item 1
    last = first.copy()
    imgs = grey_images(first)
    tab = dict(first=measure_parts(imgs, first, NAMES), last=measure_parts(imgs, last, NAMES))
    t = part_changes(**tab)
    assert set(t.part) == {"background", "body"}  # head mean 13.5 < 20
    assert "head" in set(part_changes(**tab, min_part_area=13).part)
    # Grouped filter: with each item its own group, head stays for item 1 (18 >= 15) only.
    t = part_changes(**tab, min_part_area=15, area_by=["image"])
    assert set(t[t.part == "head"].image) == {1}
    assert t[t.part == "head"].metric.tolist() == list(PART_METRICS)


def test_area_change_is_nan_for_parts_absent_at_step_zero():
    first = np.zeros((1, 16, 16), np.uint8)
    last = first.copy()
    last[0, 2:10, 2:10] = 1
    t = part_changes(**tables_for(first, last), min_part_area=0)
    assert np.isnan(change(t, "area", "body"))
    assert np.isnan(change(t, "eccentricity", "body"))  # nothing to match
    assert change(t, "n_regions", "body") == 1


@pytest.fixture(scope="module")
def world_batch():
    from linkstyle.world.procedural import PART_NAMES, WorldConfig, make_split

    cfg = WorldConfig(resolution=32, n_train_per_class=8, n_test_per_class=1, chunk=40)
    _, _, _, images, labels = next(make_split(cfg, "train"))
    return images, labels, PART_NAMES


def test_results_do_not_depend_on_chunking_or_jobs(world_batch):
    images, labels, names = world_batch
    half = len(images) // 2
    args = (images[:half], labels[:half], images[half:], labels[half:], names)
    keys = pd.DataFrame({"unit": 5, "seed": np.arange(half)})
    ref = pair_changes(*args, keys=keys)
    assert set(ref.columns) == {"unit", "seed", "part", "metric", "change"}
    for kw in (dict(chunk_size=3), dict(chunk_size=7, n_jobs=2)):
        pd.testing.assert_frame_equal(pair_changes(*args, keys=keys, **kw), ref)
    pd.testing.assert_frame_equal(find_regions(labels, names, chunk_size=6, n_jobs=2), find_regions(labels, names))
    pd.testing.assert_frame_equal(measure_parts(images, labels, names, chunk_size=11),
                                  measure_parts(images, labels, names))
    # the entropy map computed once (as quantify_parts shares it between sources) changes nothing
    ent = local_entropy(images, 5, n_jobs=2, chunk_size=5)
    assert ent.shape == labels.shape
    pd.testing.assert_frame_equal(measure_parts(images, labels, names, entropy=ent, chunk_size=7),
                                  measure_parts(images, labels, names))
    with pytest.raises(UserError, match="entropy must have"):
        measure_parts(images, labels, names, entropy=ent[:, :5])


def test_stage_style_tables_with_step_keys_give_the_pair_changes(world_batch):
    images, labels, names = world_batch
    half = len(images) // 2
    keys = pd.DataFrame({"unit": 2, "seed": np.tile(np.arange(half), 2), "step": np.repeat([0, 2], half)})
    measures = measure_parts(images, labels, names, keys=keys)
    assert list(measures.columns) == ["unit", "seed", "step", "part", "metric", "value"]
    regions = find_regions(labels, names, keys=keys)
    matches = match_regions(labels[:half], labels[half:], names, keys=keys[:half].drop(columns="step"))
    t = part_changes(measures[measures.step == 0], measures[measures.step == 2],
                     regions_first=regions[regions.step == 0], regions_last=regions[regions.step == 2],
                     matches=matches, on=["unit", "seed"])
    ref = pair_changes(images[:half], labels[:half], images[half:], labels[half:], names,
                       keys=keys[:half].drop(columns="step"))
    pd.testing.assert_frame_equal(t, ref)
    assert set(t.metric) == set(CHANGE_METRICS)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("images, masks, match", [
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), r"shape \[N, H, W\]"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.float32), "integer"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 8, 8), 3, np.uint8), "label id 3"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 8, 8), -1, np.int16), "label id -1"),
    (np.zeros((2, 8, 9, 3), np.uint8), np.zeros((2, 8, 8), np.uint8), "matching masks"),
    (np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8), "uint8"),
])
def test_bad_inputs_raise_user_error(images, masks, match):
    with pytest.raises(UserError, match=match):
        measure_parts(images, masks, NAMES)


def test_bad_options_raise_user_error():
    masks = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(UserError, match="same shape"):
        match_regions(masks, masks[:1], NAMES)
    with pytest.raises(UserError, match="connectivity"):
        find_regions(masks, NAMES, connectivity=6)
    with pytest.raises(UserError, match="keys"):
        find_regions(masks, NAMES, keys=pd.DataFrame({"seed": [1]}))
    with pytest.raises(UserError, match="part_names"):
        find_regions(masks, ("a", "a"))
    t = measure_parts(grey_images(masks), masks, NAMES)
    with pytest.raises(UserError, match="same items"):
        part_changes(t, t[t.image == 0])
    with pytest.raises(UserError, match="identify one item"):
        part_changes(t, t, on=["part"])
