"""Each mode's unit labels and the units whose label changes (stage compare_tuning), on tiny hand-drawn sweeps."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from linkstyle.analyze.units import AnalysisConfig
from linkstyle.explain.faithfulness import compare_modes, summarize_modes
from linkstyle.explain.mode_labels import label_changes, summarize_labels, sweep_labels
from linkstyle.measure.quantify import QuantifyConfig, ground_truth_changes, quantify_tuning

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["background", "head", "tail"]
BOXES = {"head": (slice(4, 12), slice(4, 12)), "tail": (slice(18, 26), slice(18, 26))}
S, T, RES = 2, 3, 32


def _render(brighter: str | None, t: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey frame with two uniform squares, head and tail; step t brightens one of them.

    Of area and luminance only that part's luminance changes, so its top label over those two
    metrics is (that part, luminance). (Local entropy moves by float rounding at the edges,
    which its small spread would blow up: the tests label by area and luminance.)
    """
    img = np.full((RES, RES, 3), 100, np.uint8)
    parts = np.zeros((RES, RES), np.uint8)
    for k, (name, box) in enumerate(BOXES.items(), start=1):
        img[box] = 220 if (name == brighter and t > 0) else 150
        parts[box] = k
    return img, parts


def write_sweep(path, mode: str, effects: dict[int, str], parts_gt: bool = True, reachable=None) -> None:
    """A tuning file whose unit u brightens part effects[u] between its first and last step."""
    units = np.array(sorted(effects))
    renders = np.zeros((len(units), S, T, RES, RES, 3), np.uint8)
    masks = np.zeros((len(units), S, T, RES, RES), np.uint8)
    for i, u in enumerate(units):
        for s in range(S):
            for t in range(T):
                renders[i, s, t], masks[i, s, t] = _render(effects[u], t)
    values = np.tile(np.linspace(0.0, 2.0, T, dtype=np.float32), (len(units), 1))
    moved = 1.8 if mode == "closed_loop" else 0.1
    with h5py.File(path, "w") as f:
        f["units"], f["seeds"], f["classes"] = units, np.arange(S) + 100, np.arange(S) % 2
        f["values"], f["renders"] = values, renders
        f["r_tilde_unit"] = np.broadcast_to(values[:, None, :] * moved / 2.0, (len(units), S, T)).astype(np.float32)
        f["r_tilde_off"] = np.zeros((len(units), S, T), np.float32)
        if parts_gt:
            f["parts_gt"] = masks
        if reachable is not None:
            f["reachable"] = np.asarray(reachable)
            f.create_dataset("unreachable_reason", data=np.array(["" if r else "transfer below floor" for r in reachable],
                                                                 dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.attrs["mode"] = mode
        f.attrs["part_names"] = json.dumps(PARTS)
        f.attrs["class_names"] = json.dumps(["a", "b"])


LABEL_BY = AnalysisConfig(metrics=("area", "luminance"))
OPEN = {0: "head", 1: "tail", 2: "head", 3: "tail"}
CLOSED = {0: "head", 1: "head", 2: "head", 3: "tail"}  # unit 1's renders change another part


def test_labels_are_the_part_the_renders_change(tmp_path):
    write_sweep(tmp_path / "o.h5", "open_loop", OPEN)
    lab = sweep_labels(tmp_path / "o.h5", QuantifyConfig(), LABEL_BY)
    assert lab.set_index("unit")["strongest_part"].to_dict() == OPEN
    assert set(lab["metric"]) == {"luminance"}


def test_ground_truth_changes_are_quantify_parts_ground_truth_rows(tmp_path, monkeypatch):
    # The end steps alone give the rows that quantify_parts (every step, and a segmenter) gives.
    import linkstyle.measure.quantify as quantify

    write_sweep(tmp_path / "o.h5", "open_loop", OPEN)
    with h5py.File(tmp_path / "o.h5", "a") as f:
        f["w"] = np.zeros((len(OPEN), S, T, 2), np.float32)
    # No segmenter here: its source is blank masks, and only the ground-truth rows are compared.
    monkeypatch.setattr(quantify, "segment_w", lambda seg, gen, w, batch_size: np.zeros((len(w), RES, RES), np.uint8))
    segmenter, gen = SimpleNamespace(label_names=tuple(PARTS)), SimpleNamespace(device="cpu")
    cfg = QuantifyConfig(min_part_area=0.0)
    _, full = quantify_tuning(tmp_path / "o.h5", gen, segmenter, cfg, progress=False)
    want = full[full["source"] == "ground_truth"].reset_index(drop=True)
    got = ground_truth_changes(tmp_path / "o.h5", cfg)
    pd.testing.assert_frame_equal(got, want)


def test_label_changes_by_hand():
    table = pd.DataFrame({"unit": [1, 2, 3, 4], "transfer_open_loop": [0.1, 0.2, 0.3, 0.4],
                          "transfer_closed_loop": [0.5, 0.6, 0.7, 0.8], "reachable_open_loop": [False] * 4,
                          "reachable_closed_loop": [True, True, True, False]})
    a = pd.DataFrame({"unit": [1, 2, 3, 4], "strongest_part": ["head", "head", None, None],
                      "metric": ["area", "area", None, None]})
    b = pd.DataFrame({"unit": [1, 2, 3, 4], "strongest_part": ["head", "head", "tail", None],
                      "metric": ["area", "luminance", "area", None]})
    out = label_changes(table, [a, b], ["open_loop", "closed_loop"])
    # unit 1 same; unit 2 other metric; unit 3 labelled in one mode only; unit 4 in neither
    assert out["unit"].tolist() == [2, 3]
    assert list(out.columns) == ["unit", "strongest_part_open_loop", "metric_open_loop", "strongest_part_closed_loop",
                                 "metric_closed_loop", "transfer_open_loop", "transfer_closed_loop",
                                 "reachable_open_loop", "reachable_closed_loop"]
    assert out.loc[0, "metric_closed_loop"] == "luminance" and out.loc[1, "transfer_closed_loop"] == 0.7
    m = summarize_labels(out, 4, [a, b], ["open_loop", "closed_loop"], ["area", "luminance"])
    assert m["label_changes"] == 2 and m["label_change_fraction"] == 0.5
    assert m["labelled_units"] == {"open_loop": 2, "closed_loop": 3}
    none = label_changes(table, [a, None], ["open_loop", "closed_loop"])
    assert none.empty and list(none.columns) == list(out.columns)
    m = summarize_labels(none, 4, [a, None], ["open_loop", "closed_loop"], ["area"], missing=["c.h5"])
    assert m["label_changes"] is None and m["label_change_fraction"] is None and "c.h5" in m["label_note"]


def _stage():
    spec = importlib.util.spec_from_file_location("compare_tuning_stage", ROOT / "stages" / "compare_tuning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_stage(tmp_path):
    (tmp_path / "params.yaml").write_text("compare_tuning:\n  n_strip_units: 2\n  n_strip_seeds: 2\n"
                                          "quantify_parts:\n  n_jobs: 1\nanalyze_units:\n  metrics: [area, luminance]\n")
    out = {k: tmp_path / v for k, v in (("table", "modes.csv"), ("labels", "changes.csv"), ("metrics", "modes.json"),
                                        ("figure", "modes.png"))}
    _stage().main(open_loop=tmp_path / "o.h5", closed_loop=tmp_path / "c.h5", params=tmp_path / "params.yaml", **out)
    return out


def test_stage_counts_and_lists_the_units_whose_label_changes(tmp_path, capsys):
    write_sweep(tmp_path / "o.h5", "open_loop", OPEN, reachable=[False, False, False, True])
    write_sweep(tmp_path / "c.h5", "closed_loop", CLOSED, reachable=[True, True, True, False])
    out = _run_stage(tmp_path)
    changed = pd.read_csv(out["labels"])
    assert changed["unit"].tolist() == [1]
    assert changed.loc[0, ["strongest_part_open_loop", "strongest_part_closed_loop"]].tolist() == ["tail", "head"]
    assert changed.loc[0, "transfer_closed_loop"] == pytest.approx(0.9) and not changed.loc[0, "reachable_open_loop"]
    m = json.loads(out["metrics"].read_text())
    assert m["label_changes"] == 1 and m["label_change_fraction"] == 0.25 and m["label_source"] == "ground_truth"
    assert m["open_loop"]["unreachable_units"] == 3 and m["closed_loop"]["unreachable_units"] == 1
    modes = pd.read_csv(out["table"])
    assert {"transfer_open_loop", "transfer_closed_loop", "reachable_closed_loop"} <= set(modes.columns)
    assert "top label differs on 1 of 4 units" in capsys.readouterr().out
    assert out["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summarize_modes(compare_modes(tmp_path / "o.h5", tmp_path / "c.h5"))["n_units"] == 4


def test_stage_without_part_maps_says_so_and_writes_no_labels(tmp_path, capsys):
    write_sweep(tmp_path / "o.h5", "open_loop", OPEN, parts_gt=False)
    write_sweep(tmp_path / "c.h5", "closed_loop", CLOSED, parts_gt=False)
    out = _run_stage(tmp_path)
    m = json.loads(out["metrics"].read_text())
    assert m["label_changes"] is None and m["label_change_fraction"] is None and "no part maps" in m["label_note"]
    assert pd.read_csv(out["labels"]).empty
    assert m["closed_loop"]["transfer"] == pytest.approx(0.9), "the transfer table is still written"
    assert "no part maps (parts_gt)" in capsys.readouterr().out
