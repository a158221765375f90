"""Counterfactual search: a hand-checkable linear case, one-line errors, determinism, batch
independence, and the stage end to end on tiny models."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from linkstyle.core.checkpoint import fingerprint, save_module
from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.core.runtime import cpu_threads
from linkstyle.explain.counterfactuals import (
    CounterfactualConfig,
    frame_steps,
    initial_shifts,
    plan_trajectories,
    resolve_pairs,
    run_counterfactuals,
    search,
    top_units,
)
from linkstyle.link.fit import fit_link
from linkstyle.link.linear import LinearLink, RidgeConfig
from linkstyle.link.pairs import PairsConfig, load_pairs, sample_pairs
from linkstyle.link.store import save_link
from linkstyle.measure.features import generator_maps
from linkstyle.measure.segmenter import FewShotSegmenter, save_segmenter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """Torch threads as a stage would set them (LINKSTYLE_THREADS): more threads than free cores
    make the many small steps of a search spin-wait, 60x slower on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    yield
    torch.set_num_threads(before)


class ImageOfW(torch.nn.Module):
    """A 'generator' whose render holds w in its first pixels (channel 0), so a classifier can read w back."""

    resolution, part_names = 4, None

    def __init__(self, w_dim: int, class_names=("a", "b")):
        super().__init__()
        self.w_dim, self.class_names, self.n_classes = w_dim, tuple(class_names), len(class_names)

    @property
    def device(self):
        return torch.device("cpu")

    def render(self, w, batch_size=256):
        flat = torch.zeros(len(w), 16)
        flat[:, : self.w_dim] = w
        img = torch.zeros(len(w), 3, 4, 4)
        img[:, 0] = flat.reshape(len(w), 4, 4)
        return img, None

    def synthesize(self, w, batch_size=256):
        return self.render(w, batch_size)[0]


class LinearHead:
    """A classifier that reads r = relu(first pixels) from the image; logits = r W^T + b."""

    def __init__(self, W, b):
        self.W, self.b = torch.as_tensor(W, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)

    def logits_from_r(self, r):
        return r @ self.W.T + self.b

    def represent(self, images, batch_size=256):
        r = torch.relu(images[:, 0].reshape(len(images), 16)[:, : self.W.shape[1]])
        return r, self.logits_from_r(r)


def test_linear_head_moves_toward_the_target_and_stops_when_it_wins():
    # Identity link, W = I, no cosine term: the gradient of -l_1 + 0.6 l_0 w.r.t. s is
    # e_1 - 0.6 e_0, so each step adds (0.3, -0.5) to s and r - s_k = r - s_0 - k (0.3, -0.5).
    gen, clf = ImageOfW(2), LinearHead(np.eye(2), np.zeros(2))
    link = LinearLink.from_numpy(np.eye(2), np.zeros(2))
    r0 = np.array([[2.0, 0.0], [12.0, 0.0], [0.5, 0.0]], dtype=np.float32)
    seeds = np.array([11, 12, 13])
    cfg = CounterfactualConfig(weights=(1.0, 0.6, 0.0), lr=0.5, max_steps=12, geometry="raw", batch_size=8)
    out = search(gen, clf, link, r0, np.zeros(3, int), np.ones(3, int), seeds, None, np.ones(2, np.float32), cfg)
    s0 = initial_shifts(seeds, np.ones(2, np.float32)).numpy().astype(np.float64)
    step = np.array([0.3, -0.5])
    for b in range(3):
        x = lambda k: np.maximum(r0[b] - s0[b] - k * step, 0)  # noqa: E731 - r used by the render after k steps
        k_win = next((k for k in range(1, 13) if x(k)[1] > x(k)[0]), None)
        if b == 1:
            assert k_win is None  # 12 - u - 0.3 k stays above 0.5 k - u' up to k = 12: it gives up, no exception
            assert not out["success"][b] and out["steps"][b] == 12
        else:
            assert out["success"][b] and out["steps"][b] == k_win
        # Masked: a finished trajectory's shift stops exactly where it won.
        np.testing.assert_allclose(out["shift"][b], s0[b] + out["steps"][b] * step, atol=1e-5)
        rows = out["path"]["trajectory"] == b
        p_t = out["path"]["probs"][rows, 1]
        assert len(p_t) == out["steps"][b] + 1 and out["path"]["step"][rows].tolist() == list(range(len(p_t)))
        assert np.all(np.diff(p_t) >= -1e-6), "the target's probability only grows on this straight path"
    assert out["p_final"][0].argmax() == 1 and out["p_final"][1].argmax() == 0


def test_cosine_term_keeps_w_direction():
    # With the cosine weight on, w's direction moves less for the same number of steps.
    gen, clf = ImageOfW(3), LinearHead(np.eye(3)[:2], np.zeros(2))
    link = LinearLink.from_numpy(np.eye(3), np.zeros(3))
    r0 = np.array([[5.0, 0.0, 3.0]], dtype=np.float32)
    runs = {}
    for c in (0.0, 10.0):
        cfg = CounterfactualConfig(weights=(1.0, 0.6, c), max_steps=3, geometry="raw")
        runs[c] = search(gen, clf, link, r0, np.array([0]), np.array([1]), np.array([5]), None, np.ones(3, np.float32), cfg)
    assert runs[10.0]["path"]["cos"][-1] > runs[0.0]["path"]["cos"][-1]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_class_ids_and_options_are_one_line_errors():
    with pytest.raises(UserError) as e:
        resolve_pairs(CounterfactualConfig(class_pairs=((0, 1), (2, 7))), 5)
    assert _one_line(e) == "counterfactuals.class_pairs: class id 7 out of range; the classifier has 5 classes (0..4)"
    with pytest.raises(UserError, match=r"\[3, 3\] has origin = target"):
        resolve_pairs(CounterfactualConfig(class_pairs=((3, 3),)), 5)
    with pytest.raises(UserError, match="a pair repeats"):
        resolve_pairs(CounterfactualConfig(class_pairs=((0, 1), (0, 1))), 5)
    with pytest.raises(UserError, match="class id -1 out of range"):
        resolve_pairs(CounterfactualConfig(class_pairs=((-1, 1),)), 5)
    for key, value, match in (("weights", [1, 2], "weights must be three numbers"),
                              ("geometry", "curved", "geometry must be one of data, raw"),
                              ("class_pairs", [[0, 1, 2]], "must be a list of \\[origin, target\\] pairs"),
                              ("class_pairs", [["cat", "dog"]], "must be an integer"),
                              ("lr", 0, "lr must be > 0"), ("n_frames", 1, "n_frames must be >= 2")):
        with pytest.raises(UserError, match=match) as e:
            from_params(CounterfactualConfig, {key: value}, "counterfactuals")
        assert _one_line(e).startswith("params.yaml: counterfactuals.")
    with pytest.raises(UserError, match="n_seeds: 3 base samples per pair, but class 1 has only 2 test pairs"):
        plan_trajectories(np.array([0, 0, 0, 1, 1]), np.arange(5), CounterfactualConfig(n_seeds=3), 2)


def test_plan_seeds_and_frames():
    labels = np.array([1, 0, 1, 0, 2, 2])
    plan = plan_trajectories(labels, 100 + np.arange(6), CounterfactualConfig(n_seeds=2, seed_base=7), 3)
    assert len(plan["origin"]) == 6 * 2
    first = (plan["origin"] == 1) & (plan["target"] == 2)
    assert plan["pair_index"][first].tolist() == [0, 2] and plan["sample_seed"][first].tolist() == [100, 102]
    # A trajectory's start seed depends on its own (k, origin, target) only, never on the pair list.
    assert plan["init_seed"][first].tolist() == [7 + 1 * 3 + 2, 7 + 9 + 1 * 3 + 2]
    alone = plan_trajectories(labels, 100 + np.arange(6), CounterfactualConfig(n_seeds=2, seed_base=7, class_pairs=((1, 2),)), 3)
    assert alone["init_seed"].tolist() == plan["init_seed"][first].tolist()
    assert frame_steps(3, 8).tolist() == [0, 1, 2, 3, -1, -1, -1, -1]
    assert frame_steps(14, 3).tolist() == [0, 7, 14]
    units, vals = top_units(np.array([[0.1, -0.5, 0.5, 0.0]]), 3)
    assert units.tolist() == [[1, 2, 0]] and vals.tolist() == [[-0.5, 0.5, 0.1]]


@pytest.fixture(scope="module")
def tiny_link(tiny_gen, tiny_clf):
    rng = np.random.default_rng(0)
    return LinearLink.from_numpy(rng.normal(size=(tiny_gen.w_dim, tiny_clf.n_units)) * 0.3, np.zeros(tiny_gen.w_dim))


def _run(tiny_gen, tiny_clf, link, path, batch_size, geometry="data"):
    rng = np.random.default_rng(3)
    test_r = rng.uniform(0, 1, size=(10, tiny_clf.n_units)).astype(np.float32)
    train_r = rng.uniform(0, 1, size=(50, tiny_clf.n_units)).astype(np.float32)
    cfg = CounterfactualConfig(class_pairs=((0, 1), (1, 0), (2, 4)), n_seeds=2, max_steps=6, n_frames=3,
                               batch_size=batch_size, geometry=geometry, device="cpu")
    plan = plan_trajectories(np.arange(10) % 5, 1000 + np.arange(10), cfg, 5)
    m = run_counterfactuals(tiny_gen, tiny_clf, link, test_r, train_r, plan, cfg, path, attrs={}, progress=False)
    with h5py.File(path) as f:
        arrays = {f"{g}/{k}": f[g][k][:] for g in ("trajectories", "path", "frames") for k in f[g]}
    return m, arrays


def test_same_params_same_bytes(tiny_gen, tiny_clf, tiny_link, tmp_path):
    m1, _ = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / "a.h5", 4)
    m2, _ = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / "b.h5", 4)
    assert m1 == m2
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_results_do_not_depend_on_the_batch_size(tiny_gen, tiny_clf, tiny_link, tmp_path):
    """Exact for the decisions (success, steps, frames), up to float rounding for the numbers:
    a batched matrix product may sum in another order, so values agree to ~1e-5, not bit for bit."""
    _, ref = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / "all.h5", 256)
    for bs in (1, 5):
        _, got = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / f"b{bs}.h5", bs)
        assert got.keys() == ref.keys()
        for k, v in ref.items():
            if v.dtype.kind in "iub":
                if k == "frames/images":
                    assert np.abs(got[k].astype(int) - v).max() <= 1, k
                else:
                    np.testing.assert_array_equal(got[k], v, err_msg=k)
            else:
                np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_every_trajectory_is_recorded(tiny_gen, tiny_clf, tiny_link, tmp_path):
    m, a = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / "c.h5", 3)
    n = 6
    assert m["n_trajectories"] == n and len(a["trajectories/steps"]) == n
    steps, start = a["trajectories/steps"], a["trajectories/path_start"]
    assert len(a["path/step"]) == int((steps + 1).sum())
    np.testing.assert_array_equal(a["path/step"][start], 0)
    np.testing.assert_array_equal(a["path/step"][start + steps], steps)
    ok = a["trajectories/success"].astype(bool)
    last = a["path/probs"][start + steps]
    assert np.all(last[ok].argmax(1) == a["trajectories/target"][ok])
    assert np.all(steps[~ok] == 6)
    # delta_r is the change of r the final render used.
    r, s = a["trajectories/r"], a["trajectories/shift"]
    np.testing.assert_allclose(a["trajectories/delta_r"], np.maximum(r - s, 0) - r, atol=1e-6)
    # Frames: first is the origin L(r), last the final render.
    fs = a["frames/steps"]
    assert np.all(fs[:, 0] == 0) and np.all(fs.max(1) == steps)
    np.testing.assert_allclose(a["frames/w"][:, 0], a["trajectories/w_origin"], atol=1e-6)


def test_raw_geometry_runs_without_training_pairs(tiny_gen, tiny_clf, tiny_link, tmp_path):
    m, _ = _run(tiny_gen, tiny_clf, tiny_link, tmp_path / "raw.h5", 8, geometry="raw")
    assert m["geometry"] == "raw" and m["n_trajectories"] == 6


# ----------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_gen, tiny_clf) -> Path:
    d = tmp_path_factory.mktemp("cf_project")
    (d / "data" / "links").mkdir(parents=True)
    (d / "reports").mkdir()
    save_module(d / "data/generator.pt", "generator", tiny_gen)
    save_module(d / "data/classifier.pt", "classifier", tiny_clf)
    fps = {"generator_fingerprint": fingerprint(d / "data/generator.pt"),
           "classifier_fingerprint": fingerprint(d / "data/classifier.pt")}
    cfg = PairsConfig(psi=0.7, n_train_per_class=30, n_test_per_class=3, keep_correct=False, batch_size=64, device="cpu")
    sample_pairs(tiny_gen, tiny_clf, cfg, d / "data/pairs.h5", fps, progress=False)
    train = load_pairs(d / "data/pairs.h5", "train", ("w", "r"))
    link, info = fit_link("ridge", train["r"], train["w"], RidgeConfig(cv_folds=3), progress=False)
    save_link(d / "data/links/ridge.pt", link, info, pairs_fingerprint=fingerprint(d / "data/pairs.h5"), **fps)
    torch.manual_seed(0)
    maps = generator_maps(tiny_gen, torch.zeros(1, tiny_gen.w_dim))
    seg = FewShotSegmenter(sum(m.shape[1] for m in maps), tiny_gen.part_names, channels=(8,), dilations=(1, 1)).eval()
    save_segmenter(d / "data/segmenter.pt", seg, fps["generator_fingerprint"])
    pd.DataFrame({"unit": np.arange(tiny_clf.n_units), "strongest_part": "body", "metric": "area",
                  "selectivity": 1.0}).to_csv(d / "reports/units.csv", index=False)
    params = {"models": {"generator": {"kind": "builtin", "path": "data/generator.pt"},
                         "classifier": {"kind": "builtin", "path": "data/classifier.pt"}},
              "counterfactuals": {"class_pairs": [[0, 1], [3, 2]], "n_seeds": 2, "max_steps": 4, "n_frames": 3,
                                  "batch_size": 3, "device": "cpu", "min_part_area": 0.0}}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return d


def _stage(d: Path, params: str = "params.yaml") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "stages/counterfactuals.py"), "--params", params, "--pairs", "data/pairs.h5",
           "--link", "data/links/ridge.pt", "--segmenter", "data/segmenter.pt", "--units", "reports/units.csv",
           "--out", "data/counterfactuals.h5", "--changes", "data/counterfactual_changes.parquet",
           "--units-table", "reports/counterfactual_units.csv", "--metrics", "reports/counterfactuals.json",
           "--figures", "reports/figures"]
    env = dict(os.environ, LINKSTYLE_PROGRESS="0", LINKSTYLE_THREADS="1")
    return subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)


def test_stage_on_tiny_models(project):
    out = _stage(project)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "counterfactuals:" in out.stdout and "trajectories reached their target" in out.stdout
    import json

    m = json.loads((project / "reports/counterfactuals.json").read_text())
    assert m["n_trajectories"] == 4 and set(m["per_pair"]) == {"cat->dog", "deer->rabbit"}
    ch = pd.read_parquet(project / "data/counterfactual_changes.parquet")
    assert list(ch.columns) == ["family", "source", "trajectory", "origin", "target", "seed", "success", "part",
                                "metric", "change"]
    assert set(ch["family"]) == {"parts", "motion"} and set(ch["source"]) == {"segmenter", "ground_truth"}
    assert set(ch["trajectory"]) == {0, 1, 2, 3}
    assert {"area", "luminance", "translation_x", "motion"} <= set(ch["metric"])
    for name in ("counterfactual_strips", "counterfactual_pairs", "counterfactual_units"):
        assert (project / f"reports/figures/{name}.png").stat().st_size > 1000
    first = (project / "data/counterfactuals.h5").read_bytes()
    assert _stage(project).returncode == 0
    assert (project / "data/counterfactuals.h5").read_bytes() == first, "same params, same bytes"


def test_stage_bad_class_id_is_one_line(project, tmp_path):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["counterfactuals"]["class_pairs"] = [[0, 9]]
    bad = project / "bad_params.yaml"
    bad.write_text(yaml.safe_dump(p))
    out = _stage(project, "bad_params.yaml")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: bad_params.yaml: counterfactuals.class_pairs: class id 9 out of range; "
                                  "the classifier has 5 classes (0..4)")
