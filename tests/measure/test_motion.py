"""Tests for linkstyle.measure.motion / motion_pump / quantify_motion and report.motion:
known warps recovered, identity pairs still, hand-checked affine parameters and tables,
determinism over threads and batches, the PUMP adapter on a stub checkout, one-line errors."""

from __future__ import annotations

import dataclasses
import textwrap

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.measure.features import generator_maps
from linkstyle.measure.motion import (
    IMAGE_METRICS,
    PART_METRICS,
    Motion,
    MotionConfig,
    decompose_affine,
    estimate_motion,
    motion_table,
)
from linkstyle.measure.motion_pump import densify
from linkstyle.measure.quantify_motion import (
    QuantifyMotionConfig,
    centroid_affine,
    field_panels,
    quantify_motion,
    read_units,
)
from linkstyle.measure.segmenter import FewShotSegmenter
from linkstyle.report.motion import arrow_selection, plot_motion_fields

RES = 32
C = (RES - 1) / 2


def texture(seed: int, res: int = RES) -> np.ndarray:
    """Smooth random colour texture, uint8 [res, res, 3]: structure at every pixel for the flow."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.normal(size=(res, res, 3)).astype(np.float32), (0, 0), 1.2)
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(x * 255).astype(np.uint8)


def affine_of(deg=0.0, scale=1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """[2, 3] rotation by `deg` and zoom by `scale` about the centre, then `shift`."""
    a = np.radians(deg)
    lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([lin, (np.array([C, C]) + np.asarray(shift) - lin @ [C, C])[:, None]], 1)


def warp(img, affine, bump=None):
    """`img` moved so that pixel p lands on A p + bump(p); returns (image, true displacement [H, W, 2]).

    bump = (cx, cy, amp_x, amp_y, sigma): a Gaussian bump of local motion.
    """
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xx, yy], -1)
    lin, t = affine[:, :2], affine[:, 2]

    def b(p):
        if bump is None:
            return np.zeros_like(p)
        cx, cy, ax, ay, s = bump
        g = np.exp(-((p[..., 0] - cx) ** 2 + (p[..., 1] - cy) ** 2) / (2 * s * s))
        return np.stack([ax * g, ay * g], -1)

    inv = np.linalg.inv(lin)
    p = (grid - t) @ inv.T
    for _ in range(40):  # fixed point of A p + b(p) = q; b is small and smooth
        p = (grid - t - b(p)) @ inv.T
    out = cv2.remap(img, p[..., 0].astype(np.float32), p[..., 1].astype(np.float32), cv2.INTER_CUBIC,
                    borderMode=cv2.BORDER_REPLICATE)
    return out, grid @ lin.T + t + b(grid) - grid


INNER = (slice(4, -4), slice(4, -4))  # away from the border, where content came from outside


# ------------------------------------------------------------------------------ estimate


def test_known_affine_recovered():
    cases = [(4.0, 1.03, (1.0, -0.5)), (-5.0, 0.97, (-1.5, 1.2)), (2.0, 1.0, (0.6, 0.3)), (0.0, 1.02, (0.0, 0.0))]
    first, last, truth = [], [], []
    for i, (deg, s, t) in enumerate(cases):
        img = texture(i)
        a = affine_of(deg, s, t)
        moved, _ = warp(img, a)
        first.append(img), last.append(moved), truth.append(a)
    m = estimate_motion(np.stack(first), np.stack(last), MotionConfig())
    for i, (deg, s, t) in enumerate(cases):
        assert m.translation[i] == pytest.approx(np.array(t), abs=0.15)
        assert m.rotation_deg[i] == pytest.approx(deg, abs=0.5)
        assert m.scale[i] == pytest.approx(s, abs=0.01)
        assert abs(m.shear[i]) < 0.02
        # nothing but the affine moved: the residual is near zero
        assert np.abs(m.flow[i][INNER]).mean() < 0.1
    assert m.valid[:, 4:-4, 4:-4].mean() > 0.9
    assert m.inlier_fraction.min() > 0.5


def test_local_bump_lands_in_the_residual_not_the_affine():
    img = texture(7)
    a = affine_of(3.0, 1.0, (0.8, -0.4))
    moved, true = warp(img, a, bump=(12.0, 18.0, 1.2, -0.8, 4.0))
    m = estimate_motion(img[None], moved[None], MotionConfig())
    assert m.translation[0] == pytest.approx(np.array([0.8, -0.4]), abs=0.2)
    assert m.rotation_deg[0] == pytest.approx(3.0, abs=0.6)
    window = (0, slice(15, 22), slice(9, 16))  # around the bump's centre (x 12, y 18)
    truth = (true - m.affine_displacement()[0])[window[1:]].reshape(-1, 2).mean(0)
    near = m.flow[window].reshape(-1, 2).mean(0)
    # DIS smooths a 32 px bump: about half its size, in its direction.
    assert near @ truth / (np.linalg.norm(near) * np.linalg.norm(truth)) > 0.95
    assert 0.35 < np.linalg.norm(near) / np.linalg.norm(truth) < 1.2
    far = m.flow[0, 4:9, 20:28]  # > 3 sigma away
    assert np.abs(far).mean() < 0.12
    epe = np.linalg.norm(m.total()[0] - true, axis=-1)[INNER].mean()
    assert epe < 0.2 and np.linalg.norm(true, axis=-1)[INNER].mean() > 0.8  # zero motion: off by > 0.8 px


def test_identity_pairs_have_no_motion():
    imgs = np.stack([texture(i) for i in range(3)] + [np.full((RES, RES, 3), 90, np.uint8)])
    m = estimate_motion(imgs, imgs.copy(), MotionConfig())
    assert np.array_equal(m.affine, np.tile(np.eye(2, 3), (4, 1, 1)))
    assert not m.flow.any() and m.valid.all()
    assert np.all(m.translation == 0) and np.all(m.scale == 1) and np.all(m.rotation_deg == 0)
    masks = np.zeros((4, RES, RES), np.uint8)
    masks[:, 8:20, 8:20] = 1
    keys = pd.DataFrame({"unit": [0, 0, 1, 1], "seed": [5, 6, 5, 6], "class": [0, 1, 0, 1]})
    t = motion_table(m, masks, ("background", "body"), keys, "segmenter")
    direction = t["metric"] == "motion_direction"
    assert t.loc[direction, "change"].isna().all()  # a zero mean motion has no direction
    fractions = t["metric"].isin(["valid_fraction", "inlier_fraction"])
    assert (t.loc[fractions, "change"] == 1).all()
    assert (t.loc[~direction & ~fractions, "change"].abs() < 1e-12).all()


def test_results_do_not_depend_on_threads_or_batch():
    rng = np.random.default_rng(3)
    first = np.stack([texture(10 + i) for i in range(6)])
    last = np.stack([warp(f, affine_of(rng.uniform(-4, 4), 1.0, rng.uniform(-1, 1, 2)),
                          (16, 16, 1.0, 0.5, 4))[0] for f in first])
    one = estimate_motion(first, last, MotionConfig(n_threads=1))
    two = estimate_motion(first, last, MotionConfig(n_threads=2))
    split = Motion.concat([estimate_motion(first[:2], last[:2], MotionConfig(n_threads=2)),
                           estimate_motion(first[2:], last[2:], MotionConfig(n_threads=3))])
    for f in dataclasses.fields(Motion):
        assert np.array_equal(getattr(one, f.name), getattr(two, f.name), equal_nan=True), f.name
        assert np.array_equal(getattr(one, f.name), getattr(split, f.name), equal_nan=True), f.name
    assert np.array_equal(one.take([1, 4]).flow, one.flow[[1, 4]])


def test_decompose_affine_by_hand():
    rot90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # about the origin: moves the centre too
    shear = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]])
    zoom = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]])
    t, s, r, k = decompose_affine(np.stack([rot90, shear, zoom]), (RES, RES))
    assert r == pytest.approx([90.0, 0.0, 0.0]) and s == pytest.approx([1.0, 1.0, 2.0])
    assert k == pytest.approx([0.0, 0.5, 0.0])
    assert t[0] == pytest.approx([-C - C, C - C])  # centre (C, C) -> (-C, C)
    assert t[1] == pytest.approx([0.5 * C, 0.0])
    assert t[2] == pytest.approx([C + 1.0, C - 1.0])


def test_motion_table_by_hand():
    h = w = 16
    flow = np.zeros((2, h, w, 2), np.float32)
    flow[0, :8] = (1.0, 0.0)           # part 1 (top half) moves right by 1 px
    flow[1, :8] = (0.0, -2.0)          # ... and up by 2 px in pair 1
    valid = np.ones((2, h, w), bool)
    valid[1, 8:] = False               # pair 1: part 0 has no valid pixel
    shifted = np.tile(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), (2, 1, 1))  # global shift x + 0.5
    m = Motion.from_fields(shifted, flow, valid, np.array([0.9, 0.8]))
    masks = np.zeros((2, h, w), np.uint8)
    masks[:, :8] = 1
    keys = pd.DataFrame({"unit": [3, 3], "seed": [10, 11], "class": [2, 4]})
    t = motion_table(m, masks, ("background", "body", "tail"), keys, "ground_truth")
    assert list(t.columns) == ["source", "unit", "seed", "class", "part", "metric", "change"]
    assert len(t) == 2 * (len(IMAGE_METRICS) + 3 * len(PART_METRICS))
    v = t.set_index(["seed", "part", "metric"])["change"]
    assert v[(10, "image", "translation_x")] == pytest.approx(0.5) and v[(10, "image", "scale")] == pytest.approx(0.0)
    assert v[(10, "image", "inlier_fraction")] == pytest.approx(0.9)
    assert v[(10, "image", "motion")] == pytest.approx(0.5) and v[(10, "image", "motion_max")] == pytest.approx(1.0)
    assert v[(10, "body", "motion")] == pytest.approx(1.0) and v[(10, "body", "motion_direction")] == pytest.approx(0.0)
    assert v[(10, "body", "shift_x")] == pytest.approx(1.5) and v[(10, "background", "shift_x")] == pytest.approx(0.5)
    assert v[(11, "body", "motion_y")] == pytest.approx(-2.0) and v[(11, "body", "motion_direction")] == pytest.approx(-90.0)
    assert np.isnan(v[(11, "background", "motion")]) and v[(11, "background", "valid_fraction")] == 0.0
    assert v[(11, "image", "valid_fraction")] == pytest.approx(0.5)
    assert np.isnan(v[(10, "tail", "valid_fraction")]) and np.isnan(v[(10, "tail", "motion")])  # absent part
    with pytest.raises(UserError, match="label ids outside"):
        motion_table(m, masks + 5, ("background", "body"), keys, "x")
    with pytest.raises(UserError, match="one row per pair"):
        motion_table(m, masks, ("background", "body"), keys.iloc[:1], "x")


# ------------------------------------------------------------------------ config, errors


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_backend_is_a_one_line_error():
    with pytest.raises(UserError) as e:
        from_params(QuantifyMotionConfig, {"motion": {"backend": "raft"}}, "quantify_motion")
    msg = _one_line(e)
    assert "quantify_motion.motion" in msg and "backend" in msg and "dis, pump" in msg and "'raft'" in msg
    with pytest.raises(UserError, match="patch_stride"):
        MotionConfig(patch_size=4, patch_stride=5)


def test_bad_images_are_one_line_errors():
    x = np.zeros((2, RES, RES, 3), np.uint8)
    with pytest.raises(UserError, match="uint8 images"):
        estimate_motion(x.astype(np.float32), x, MotionConfig())
    with pytest.raises(UserError, match="differ in shape"):
        estimate_motion(x, x[:1], MotionConfig())
    assert len(estimate_motion(x[:0], x[:0], MotionConfig())) == 0


def test_pump_backend_says_where_to_get_pump(tmp_path):
    x = np.stack([texture(0)] * 2)
    cfg = MotionConfig(backend="pump")
    with pytest.raises(UserError) as e:
        estimate_motion(x, x, cfg)
    assert "pump_code" in _one_line(e) and "github.com/naver/pump" in str(e.value)
    with pytest.raises(UserError) as e:
        estimate_motion(x, x, dataclasses.replace(cfg, pump_code=str(tmp_path / "nowhere")))
    assert "not a naver/pump checkout" in _one_line(e) and "github.com/naver/pump" in str(e.value)
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "pixel_desc.py").write_text("")
    (tmp_path / "test_singlescale.py").write_text("")
    with pytest.raises(UserError) as e:
        estimate_motion(x, x, dataclasses.replace(cfg, pump_code=str(tmp_path)))
    assert "pump_checkpoint" in _one_line(e) and "PUMP-stytrf.pt" in str(e.value)


# A stand-in for a naver/pump checkout with PUMP's interface: matches every 4x4 cell of
# img1 (at 4i + 2) to img2 shifted by the integer translation that best aligns the two.
STUB = textwrap.dedent('''
    import torch

    class SingleScalePUMP(torch.nn.Module):
        def __init__(self, pixel_desc=None, dtype=None, **kw):
            super().__init__()
            self.calls = 0

        def forward(self, img1, img2):
            self.calls += 1
            a, b = img1.float().mean(0), img2.float().mean(0)
            h, w = a.shape
            best = min(((a[3:-3, 3:-3] - b.roll((-dy, -dx), (0, 1))[3:-3, 3:-3]).pow(2).mean().item(), dx, dy)
                       for dx in range(-3, 4) for dy in range(-3, 4))
            _, dx, dy = best
            ys, xs = torch.meshgrid(torch.arange(2, h, 4.0), torch.arange(2, w, 4.0), indexing="ij")
            x1, y1 = xs.ravel(), ys.ravel()
            return torch.stack([x1, y1, x1 + dx, y1 + dy, torch.ones_like(x1), torch.zeros_like(x1)], 1)
''')


@pytest.fixture(scope="session")
def stub_pump(tmp_path_factory):
    root = tmp_path_factory.mktemp("pump_stub")
    (root / "core").mkdir()
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "pixel_desc.py").write_text("class PixelDesc:\n    def __init__(self, path):\n        self.path = path\n")
    (root / "test_singlescale.py").write_text(STUB)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "PUMP-stytrf.pt").write_bytes(b"stub")
    return root


def test_pump_adapter_on_a_stub_checkout(stub_pump):
    img = texture(4, 48)
    moved = np.roll(img, (1, 2), (0, 1))  # content moves 2 px right, 1 px down (wrapping round)
    cfg = MotionConfig(backend="pump", pump_code=str(stub_pump), pump_device="cpu")
    m = estimate_motion(img[None], moved[None], cfg)
    assert m.translation[0] == pytest.approx([2.0, 1.0], abs=1e-6)
    assert m.rotation_deg[0] == pytest.approx(0.0, abs=1e-6) and m.scale[0] == pytest.approx(1.0)
    assert np.abs(m.flow).max() < 1e-6  # the aligned pair matches in place: no residual
    assert m.valid[0, 4:-4, 4:-4].all()


def test_densify_is_exact_for_a_linear_field_inside_the_hull():
    pts = np.array([[2.0, 2.0], [29.0, 2.0], [2.0, 29.0], [29.0, 29.0], [15.0, 15.0]])
    vals = np.stack([0.1 * pts[:, 0], -0.05 * pts[:, 1] + 1], 1)
    field, ok = densify(pts, vals, RES, RES, max_gap=30.0)
    yy, xx = np.mgrid[2:30, 2:30]
    assert field[2:30, 2:30, 0] == pytest.approx(0.1 * xx, abs=1e-5)
    assert field[2:30, 2:30, 1] == pytest.approx(-0.05 * yy + 1, abs=1e-5)
    assert ok.all()
    _, near = densify(pts, vals, RES, RES, max_gap=3.0)
    assert near[2, 2] and not near[8, 8]


# ----------------------------------------------------------------------- sweep, figure


def _tuning(path, n_units=3, n_seeds=4, w_dim=16):
    """A tuning file whose last steps are known warps of the first; one part, a square, moves with them."""
    rng = np.random.default_rng(0)
    renders = np.zeros((n_units, n_seeds, 3, RES, RES, 3), np.uint8)
    parts = np.zeros((n_units, n_seeds, 3, RES, RES), np.uint8)
    for u in range(n_units):
        for s in range(n_seeds):
            img = texture(100 * u + s)
            dx, dy = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
            moved, _ = warp(img, affine_of(shift=(dx, dy)))
            renders[u, s] = img[None]
            renders[u, s, 2] = moved
            parts[u, s, :, 10:20, 8:18] = 1
            parts[u, s, 2] = 0
            parts[u, s, 2, 10 + dy:20 + dy, 8 + dx:18 + dx] = 1
    with h5py.File(path, "w") as f:
        f["renders"], f["parts_gt"] = renders, parts
        f["w"] = rng.normal(size=(n_units, n_seeds, 3, w_dim)).astype(np.float32)
        f["units"], f["seeds"], f["classes"] = np.arange(n_units) * 5, 1000 + np.arange(n_seeds), np.arange(n_seeds) % 2
        f.attrs["class_names"] = '["cat", "dog"]'
    return path


@pytest.fixture(scope="module")
def segmenter(tiny_gen):
    torch.manual_seed(0)
    maps = generator_maps(tiny_gen, torch.zeros(1, tiny_gen.w_dim))
    return FewShotSegmenter(sum(m.shape[1] for m in maps), ("background", "body"), channels=(8,), dilations=(1, 1)).eval()


def test_quantify_motion_is_blockwise_exact_and_matches_part_maps(tiny_gen, segmenter, tmp_path):
    path = _tuning(tmp_path / "tuning.h5")
    cfg = QuantifyMotionConfig(min_part_area=0.0, units_per_block=1, batch_size=5, device="cpu")
    table, summary = quantify_motion(path, tiny_gen, segmenter, cfg, progress=False)
    again, _ = quantify_motion(path, tiny_gen, segmenter, dataclasses.replace(
        cfg, units_per_block=3, batch_size=64, motion=MotionConfig(n_threads=2)), progress=False)
    pd.testing.assert_frame_equal(table, again)
    assert set(table["source"]) == {"segmenter", "ground_truth"}
    assert summary["n_pairs"] == 12 and summary["n_rows"] == len(table)
    gt = table[(table["source"] == "ground_truth") & (table["part"] == "image")]
    assert len(gt) == 12 * len(IMAGE_METRICS)
    # The square moves exactly with the warp: flow and part-map centroid agree.
    agree = summary["centroid_agreement"]
    assert agree["whole"]["pearson"] > 0.95 and agree["whole"]["mean_abs_difference"] < 0.2
    assert agree["whole"]["n"] == 24  # body only, x and y, background left out of the pooled figure
    assert summary["affine_agreement"]["rotation"]["n"] == 0  # one part: no affine from centroids

    units = pd.DataFrame({"unit": [5, 0, 10], "strongest_part": ["body", "background", None],
                          "metric": ["area"] * 3, "selectivity": [2.0, 3.0, 1.0]})
    panels = field_panels(path, table, units, cfg.motion, n_units=2)
    assert [p["unit"] for p in panels["panels"]] == [0, 5]
    assert panels["panels"][0]["flow"].shape == (RES, RES, 2)
    # A unit the sweep could not move is not shown, however selective its table row says it is.
    marked = units.assign(reachable=[True, False, True])
    assert [p["unit"] for p in field_panels(path, table, marked, cfg.motion, n_units=2)["panels"]] == [5, 10]
    plot_motion_fields(panels, tmp_path / "fields.png")
    plot_motion_fields({"panels": []}, tmp_path / "empty.png")
    assert (tmp_path / "fields.png").stat().st_size > 0 and (tmp_path / "empty.png").stat().st_size > 0


def test_centroid_affine_recovers_an_exact_affine():
    a = affine_of(7.0, 1.1, (1.0, -2.0))
    c0 = np.array([[[5.0, 5.0], [25.0, 6.0], [8.0, 27.0], [20.0, 20.0], [14.0, 9.0], [np.nan, np.nan]]])
    c1 = c0 @ a[:, :2].T + a[:, 2]
    use = np.isfinite(c0[..., 0])
    assert centroid_affine(c0, c1, use)[0] == pytest.approx(a)
    use[0, :3] = False  # two parts left: too few for six unknowns
    assert np.isnan(centroid_affine(c0, c1, use)).all()


def test_read_units_errors(tmp_path):
    with pytest.raises(UserError, match="analyze_units"):
        read_units(tmp_path / "units.csv")
    (tmp_path / "units.csv").write_text("unit,metric\n1,area\n")
    with pytest.raises(UserError, match="strongest_part"):
        read_units(tmp_path / "units.csv")


def test_arrow_selection_drops_border_rows_and_short_vectors():
    flow = np.zeros((RES, RES, 2), np.float32)
    flow[..., 0] = np.arange(RES * RES).reshape(RES, RES) / 1000.0  # lengths grow along the rows
    valid = np.ones((RES, RES), bool)
    keep = arrow_selection(flow, valid, reference_size=RES)  # 3 px border, every 5th row at this size
    rows = np.flatnonzero(keep.any(1))
    assert rows.min() >= 3 and rows.max() <= RES - 4 and np.all(rows % 5 == 0)
    assert not keep[:, :3].any() and not keep[:, -3:].any()
    candidates = (RES - 6) * len(range(5, RES - 3, 5))
    assert keep.sum() == pytest.approx(0.1 * candidates, abs=2)
    assert keep[25].sum() > 0 and keep[5].sum() == 0  # only the longest tenth
    valid[25] = False
    assert not arrow_selection(flow, valid, reference_size=RES)[25].any()


def test_the_backends_motionconfig_accepts_are_the_ones_motion_loads():
    from linkstyle.measure.flow import BACKEND_NAMES
    from linkstyle.measure.motion import BACKENDS

    assert tuple(BACKENDS) == BACKEND_NAMES


def test_motion_and_its_pump_backend_do_not_import_each_other():
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "linkstyle" / "measure" / "motion_pump.py"
    imported = {n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)}
    assert "linkstyle.measure.motion" not in imported
