"""Tests for linkstyle.analysis and stage analyze_units, on small tables whose answers are known by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from linkstyle.analyze.units import (
    AnalysisConfig,
    analyze,
    class_sparsity,
    cluster_units,
    combine,
    motion_tables,
    read_motion,
    select_changes,
    strip_selection,
    tsne_embedding,
    unit_tables,
)
from linkstyle.core.config import from_params
from linkstyle.core.errors import UserError
from linkstyle.report.units import plot_strips


def selectivity_table(changes, cfg):
    return unit_tables(select_changes(changes, cfg), cfg)[1]


def unit_label_vectors(changes, cfg):
    return unit_tables(select_changes(changes, cfg), cfg)[0]


ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "stages" / "analyze_units.py"
ARGS = dict(changes=Path("data/changes.parquet"), motion=Path("data/motion.parquet"), tuning=Path("data/tuning.h5"),
            table=Path("reports/units.csv"), motion_table=Path("reports/units_motion.csv"),
            metrics=Path("reports/analysis.json"), figures=Path("reports/figures"), params=Path("params.yaml"))
CLI = [a for k, v in ARGS.items() for a in (f"--{k.replace('_', '-')}", str(v))]
PARTS = ["background", "head", "legs"]
METRICS = ["area", "luminance", "entropy_mean"]
SEEDS = [100, 101, 200, 201]  # classes 0, 0, 1, 1
CLASSES = {100: 0, 101: 0, 200: 1, 201: 1}


def tidy(arr: np.ndarray, units, seeds=SEEDS, parts=PARTS, metrics=METRICS, source="segmenter") -> pd.DataFrame:
    """The change table of quantify_parts from an array [unit, seed, part, metric]."""
    idx = pd.MultiIndex.from_product([units, seeds, parts, metrics], names=["unit", "seed", "part", "metric"])
    df = pd.DataFrame({"change": np.asarray(arr, dtype=np.float64).ravel()}, index=idx).reset_index()
    df.insert(0, "source", source)
    df.insert(3, "class", df["seed"].map(CLASSES).astype(np.int64))
    return df


def head_legs_units(n_per_group: int = 4, seed: int = 0) -> tuple[pd.DataFrame, list[int]]:
    """Units 10.. change the head's area, units 20.. the legs' luminance; a little noise elsewhere."""
    rng = np.random.default_rng(seed)
    units = [10 + i for i in range(n_per_group)] + [20 + i for i in range(n_per_group)]
    arr = rng.normal(scale=0.01, size=(len(units), len(SEEDS), len(PARTS), len(METRICS)))
    arr[:n_per_group, :, 1, 0] += 0.5 + 0.05 * rng.random((n_per_group, len(SEEDS)))
    arr[n_per_group:, :, 2, 1] -= 0.2 + 0.02 * rng.random((n_per_group, len(SEEDS)))
    return tidy(arr, units), units


def motion_units(units: list[int], n_per_group: int = 4, seed: int = 1) -> pd.DataFrame:
    """quantify_motion's table: units 10.. move the head (residual motion), units 20.. rotate the whole image."""
    rng = np.random.default_rng(seed)
    part_metrics, image_metrics = ["motion", "shift_x", "shift_y"], ["motion", "translation_x", "rotation", "scale"]
    per_part = rng.normal(scale=0.01, size=(len(units), len(SEEDS), len(PARTS), len(part_metrics)))
    per_part[..., 0] = np.abs(per_part[..., 0])
    per_part[:n_per_group, :, 1, 0] += 0.8 + 0.1 * rng.random((n_per_group, len(SEEDS)))
    image = rng.normal(scale=0.01, size=(len(units), len(SEEDS), 1, len(image_metrics)))
    image[..., 0] = 5.0  # whole-image `motion` rows would win if they were not dropped
    image[n_per_group:, :, 0, 2] += 4.0 + rng.random((n_per_group, len(SEEDS)))
    return pd.concat([tidy(image, units, parts=["image"], metrics=image_metrics),
                      tidy(per_part, units, metrics=part_metrics)], ignore_index=True)


def test_motion_metrics_are_analysed_like_part_metrics(tmp_path):
    df, units = head_legs_units()
    motion = motion_units(units)
    motion.to_parquet(tmp_path / "motion.parquet", index=False)
    cfg = AnalysisConfig(motion_metrics=("motion", "shift_x", "rotation", "scale"))
    moved = read_motion(tmp_path / "motion.parquet", cfg)
    assert not ((moved["part"] == "image") & (moved["metric"] == "motion")).any()
    table, summary = motion_tables(moved, cfg)
    best = table.set_index("unit")
    assert (best.loc[units[:4], "strongest_part"] == "head").all() and (best.loc[units[:4], "metric"] == "motion").all()
    assert (best.loc[units[4:], "strongest_part"] == "image").all() and (best.loc[units[4:], "metric"] == "rotation").all()
    assert summary["units_per_metric"]["rotation"] == 4 and summary["units_per_part"]["head"] == 4
    # A motion metric in `metrics` joins the part metrics' label vectors.
    both = AnalysisConfig(metrics=("area", "luminance", "motion"), motion_metrics=("rotation",))
    ch = combine(df[df["metric"].isin(["area", "luminance"])], read_motion(tmp_path / "motion.parquet", both), both)
    vectors, sel_table = unit_tables(select_changes(ch, both), both)
    assert ("motion", "head") in vectors.columns and ("motion", "image") not in vectors.columns
    assert set(sel_table["metric"]) <= {"area", "luminance", "motion"}
    with pytest.raises(UserError, match="motion_metrics 'area' is no motion metric"):
        AnalysisConfig(motion_metrics=("area",))
    with pytest.raises(UserError, match="motion.parquet: no changes of source 'segmenter' for every metric.*"
                                        "analyze_units.motion_metrics"):
        read_motion(tmp_path / "motion.parquet", AnalysisConfig(motion_metrics=("shear",)))


def test_config_validation():
    assert AnalysisConfig().metrics == ("area", "luminance", "entropy_mean")
    with pytest.raises(UserError, match="source must be one of"):
        AnalysisConfig(source="teacher")
    with pytest.raises(UserError, match="metrics has duplicates"):
        AnalysisConfig(metrics=("area", "area"))
    with pytest.raises(UserError, match="analyze_units.n_top_units"):
        from_params(AnalysisConfig, {"n_top_units": 0}, "analyze_units")
    with pytest.raises(UserError, match="unknown key analyze_units.perplexity"):
        from_params(AnalysisConfig, {"perplexity": 5}, "analyze_units")


def test_select_changes_errors_name_the_fix():
    df = tidy(np.zeros((1, 4, 3, 3)), [0])
    with pytest.raises(UserError, match="no changes of source 'ground_truth'"):
        select_changes(df, AnalysisConfig(source="ground_truth"))
    with pytest.raises(UserError, match="metric 'entropy_std' is not in the changes"):
        select_changes(df, AnalysisConfig(metrics=("area", "entropy_std")))
    with pytest.raises(UserError, match="lack column 'part'"):
        select_changes(df.drop(columns="part"), AnalysisConfig())


def test_unit_changing_one_part_is_fully_sparse_there():
    arr = np.zeros((1, 4, 3, 3))
    arr[0, :, 1, 0] = 0.5  # unit 7: head area +50 % on every seed, nothing else
    table = selectivity_table(tidy(arr, [7]), AnalysisConfig())
    assert list(table.columns[:6]) == ["unit", "strongest_part", "metric", "mean_change", "consistency", "sparsity"]
    row = table.iloc[0]
    assert (row["unit"], row["strongest_part"], row["metric"]) == (7, "head", "area")
    assert row["mean_change"] == pytest.approx(0.5)
    assert row["consistency"] == 1.0
    assert row["sparsity"] == pytest.approx(1.0)
    assert row["n_seeds"] == 4


def test_consistency_by_hand_and_source_filter():
    arr = np.zeros((1, 4, 3, 3))
    arr[0, :, 2, 0] = [0.3, 0.2, -0.1, 0.4]  # legs area: mean 0.2, 3 of 4 seeds positive
    arr[0, :, 0, 0] = 0.01
    other = tidy(-5 * np.ones((1, 4, 3, 3)), [3], source="ground_truth")
    table = selectivity_table(pd.concat([tidy(arr, [3]), other]), AnalysisConfig())
    row = table.iloc[0]
    assert (row["strongest_part"], row["metric"]) == ("legs", "area")
    assert row["mean_change"] == pytest.approx(0.2)
    assert row["consistency"] == pytest.approx(0.75)


def test_metrics_are_compared_after_scaling_by_their_std():
    # Raw, unit 0's head area change (0.3) dwarfs its body luminance change (0.02); but
    # area changes are common (std ~0.22) and luminance changes rare (std ~0.007).
    arr = np.zeros((4, 2, 2, 2))
    arr[:, :, 0, 0] = np.array([0.3, -0.3, 0.3, -0.3])[:, None]
    arr[0, :, 1, 1] = 0.02
    df = tidy(arr, [0, 1, 2, 3], seeds=[100, 101], parts=["head", "body"], metrics=["area", "luminance"])
    table = selectivity_table(df, AnalysisConfig(metrics=("area", "luminance"))).set_index("unit")
    assert (table.loc[0, "strongest_part"], table.loc[0, "metric"]) == ("body", "luminance")
    assert table.loc[0, "mean_change"] == pytest.approx(0.02)
    lum_std = np.std(np.r_[0.02, 0.02, np.zeros(14)], ddof=1)
    assert table.loc[0, "scaled_change"] == pytest.approx(0.02 / lum_std)
    assert (table.loc[1, "strongest_part"], table.loc[1, "metric"]) == ("head", "area")


def test_label_vectors_are_seed_means_per_metric_and_part():
    df, units = head_legs_units()
    vec = unit_label_vectors(df, AnalysisConfig())
    assert list(vec.index) == units
    assert list(vec.columns) == [(m, p) for m in METRICS for p in PARTS]
    expected = df[(df["unit"] == 11) & (df["part"] == "head") & (df["metric"] == "area")]["change"].mean()
    assert vec.loc[11, ("area", "head")] == pytest.approx(expected)


def test_class_sparsity_per_class_and_metric():
    arr = np.zeros((2, 4, 3, 3))
    arr[0, :, 1, 0] = 0.5                    # unit 0: head area only -> sparsity 1
    arr[1, :, :, 0] = 0.2                    # unit 1: all parts alike -> sparsity 0
    long, summary = class_sparsity(tidy(arr, [0, 1]), AnalysisConfig(metrics=("area",)), ["cat", "dog"])
    assert len(long) == 4                    # 2 classes x 2 units x 1 metric
    assert list(summary["class_name"]) == ["cat", "dog"]
    assert summary["mean_sparsity"].to_numpy() == pytest.approx([0.5, 0.5])
    assert (summary["n_units"] == 2).all()


def test_tsne_and_clustering_one_row_per_unit_and_separate_groups():
    df, units = head_legs_units()
    cfg = AnalysisConfig(tsne_perplexity=30.0)
    vec = unit_label_vectors(df, cfg)
    emb = tsne_embedding(vec, cfg)
    assert list(emb["unit"]) == units and np.isfinite(emb[["tsne_x", "tsne_y"]].to_numpy()).all()
    pd.testing.assert_frame_equal(emb, tsne_embedding(vec, cfg))  # fixed random_state
    clusters, z = cluster_units(vec, cfg, n_clusters=2)
    assert list(clusters["unit"]) == units and z.shape == (len(units) - 1, 4)
    assert clusters["cluster"].iloc[:4].nunique() == 1 and clusters["cluster"].iloc[4:].nunique() == 1
    assert clusters["cluster"].iloc[0] != clusters["cluster"].iloc[4]
    assert sorted(clusters["leaf"]) == list(range(len(units)))
    one = unit_label_vectors(df[df["unit"] == 10], cfg)
    assert len(tsne_embedding(one, cfg)) == 1 and len(cluster_units(one, cfg)[0]) == 1


def test_strip_selection_top_units_per_part_and_seeds_in_effect_direction():
    df, _ = head_legs_units()
    cfg = AnalysisConfig(n_top_units=2, n_strip_seeds=3)
    table = selectivity_table(df, cfg)
    strips = strip_selection(df, table, cfg)
    assert list(strips.drop_duplicates("row")["part"]) == ["head", "head", "legs", "legs"]
    assert len(strips) == 4 * 3
    for _, rows in strips.groupby("row"):
        sign = np.sign(rows["mean_change"].iloc[0])
        assert (np.diff(sign * rows["seed_change"].to_numpy()) <= 0).all()  # most typical of the effect first
    best_head = table[table["strongest_part"] == "head"].sort_values("selectivity").iloc[-1]["unit"]
    assert strips["unit"].iloc[0] == best_head


class Spy:
    """A renders array that records which (unit, seeds) were read."""

    def __init__(self, a):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.a[key]


def tuning_arrays(units, n_steps=3, size=8):
    rng = np.random.default_rng(0)
    return {"renders": rng.integers(0, 256, (len(units), len(SEEDS), n_steps, size, size, 3), dtype=np.uint8),
            "units": np.asarray(units), "seeds": np.asarray(SEEDS), "classes": np.array([CLASSES[s] for s in SEEDS]),
            "values": np.tile(np.linspace(0, 2, n_steps, dtype=np.float32), (len(units), 1)),
            "class_names": ["cat", "dog"]}


def test_analyze_reads_only_the_strip_units(tmp_path):
    df, units = head_legs_units()
    tuning = tuning_arrays(units)
    cfg = AnalysisConfig(n_top_units=1, n_strip_seeds=2)
    tables, metrics = analyze(df, tuning, cfg)
    assert metrics["n_units"] == len(units) == len(tables["units"])
    assert metrics["units_per_part"] == {"background": 0, "head": 4, "legs": 4}
    assert metrics["consistent_fraction"] == 1.0 and metrics["cluster_part_ari"] == pytest.approx(1.0)
    assert set(tables["strips"]["class_name"]) <= {"cat", "dog"}
    spy = Spy(tuning["renders"])
    plot_strips(tables, {**tuning, "renders": spy}, tmp_path / "strips.png")
    read_units = sorted(key[0] for key in spy.reads)
    assert read_units == sorted(units.index(u) for u in metrics["strip_units"]) and len(read_units) == 2
    assert (tmp_path / "strips.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = {**tuning, "units": np.asarray(units) + 1000}
    with pytest.raises(UserError, match="not in the tuning file"):
        analyze(df, bad, cfg)


def write_inputs(root: Path) -> None:
    df, units = head_legs_units()
    (root / "data").mkdir()
    df.to_parquet(root / "data" / "changes.parquet", index=False)
    motion_units(units).to_parquet(root / "data" / "motion.parquet", index=False)
    t = tuning_arrays(units)
    with h5py.File(root / "data" / "tuning.h5", "w") as f:
        for k in ("renders", "units", "seeds", "classes", "values"):
            f[k] = t[k]
        n_units, n_seeds, n_steps = np.shape(t["renders"])[:3]
        values = np.asarray(t["values"], dtype=np.float32)
        # every render moved its unit by half the set change: transfer 0.5 (explain/faithfulness.py)
        f["r_tilde_unit"] = np.broadcast_to(0.5 * values[:, None, :], (n_units, n_seeds, n_steps)).copy()
        f["r_tilde_off"] = np.zeros((n_units, n_seeds, n_steps), np.float32)
        f.attrs["class_names"] = json.dumps(t["class_names"])
        f.attrs["part_names"] = json.dumps(PARTS)
    (root / "params.yaml").write_text("analyze_units:\n  n_top_units: 1\n  n_strip_seeds: 2\n  tsne_perplexity: 5\n"
                                      "  motion_metrics: [motion, shift_x, rotation, scale]\n")


def load_stage():
    spec = importlib.util.spec_from_file_location("analyze_units_stage", STAGE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_writes_all_outputs_deterministically(tmp_path, monkeypatch, capsys):
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    stage = load_stage()
    stage.main(**ARGS)
    outputs = [Path("reports/units.csv"), Path("reports/units_motion.csv"), Path("reports/analysis.json")] + [
        Path("reports/figures") / f for f in ("sparsity.png", "tsne.png", "clusters.png", "unit_strips.png")]
    first = {p: p.read_bytes() for p in outputs}
    assert all(first.values())
    assert capsys.readouterr().out.startswith("analyze_units: 8 units")
    units = pd.read_csv("reports/units.csv")
    assert list(units.columns[:6]) == ["unit", "strongest_part", "metric", "mean_change", "consistency", "sparsity"]
    assert json.loads(Path("reports/analysis.json").read_text())["n_units"] == 8
    live = units.dropna(subset=["transfer"])
    assert len(live) and (live["transfer"] == 0.5).all() and (live["off_target"] == 0.0).all(), "faithfulness merged"
    moved = pd.read_csv("reports/units_motion.csv").set_index("unit")
    assert list(moved.loc[[10, 20], "metric"]) == ["motion", "rotation"]
    assert json.loads(Path("reports/analysis.json").read_text())["motion"]["units_per_metric"]["rotation"] == 4
    stage.main(**ARGS)
    assert {p: p.read_bytes() for p in outputs} == first
    Path("data/changes.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a readable parquet file.*dvc repro quantify_parts"):
        stage.main(**ARGS)


def test_stage_missing_changes_is_a_one_line_error(tmp_path):
    write_inputs(tmp_path)
    os.remove(tmp_path / "data" / "changes.parquet")
    out = subprocess.run([sys.executable, str(STAGE), *CLI], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, LINKSTYLE_PROGRESS="0"))
    assert out.returncode == 2
    assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    assert "changes.parquet" in out.stderr and "dvc repro quantify_parts" in out.stderr


def test_unreachable_units_are_left_out_of_every_label_statistic():
    df, units = head_legs_units()  # units 10-13 change the head's area, 20-23 the legs' luminance
    reachable = np.array([u not in (10, 20, 21) for u in units])
    reason = np.array(["" if ok else "transfer below floor" for ok in reachable], dtype=object)
    reason[units.index(10)] = "dead"
    tuning = {**tuning_arrays(units), "reachable": reachable, "unreachable_reason": reason}
    cfg = AnalysisConfig(n_top_units=1, n_strip_seeds=2)
    tables, metrics = analyze(df, tuning, cfg)
    t = tables["units"].set_index("unit")
    assert len(t) == len(units), "every unit keeps its row"
    assert t.loc[[10, 20, 21], "strongest_part"].isna().all() and t.loc[[10, 20, 21], "metric"].isna().all()
    assert not t.loc[[10, 20, 21], "reachable"].any() and t.loc[[11, 12, 13, 22, 23], "reachable"].all()
    assert list(t.loc[[10, 20, 11], "unreachable_reason"]) == ["dead", "transfer below floor", ""]
    assert t.loc[[10, 20, 21], ["cluster", "tsne_x", "selectivity"]].isna().all().all()
    assert metrics["units_per_part"] == {"background": 0, "head": 3, "legs": 2}, "only the reachable units count"
    assert metrics["n_units_with_change"] == 5 and metrics["n_clusters"] == 2
    assert metrics["unreachable_units"] == metrics["unreachable_units_left_out"] == 3
    assert metrics["unreachable_by_reason"] == {"dead": 1, "no gradient": 0, "transfer below floor": 2}
    assert not {10, 20, 21} & set(tables["vectors"].index) and not {10, 20, 21} & set(tables["sparsity"]["unit"])
    assert not {10, 20, 21} & set(tables["strips"]["unit"]) and not {10, 20, 21} & set(metrics["strip_units"])
    # Integer columns stay integers where a label exists.
    assert str(t["cluster"].dtype) == "Int64"
    # The same without the verdict (a tuning file from before it): every unit reachable, as before.
    tables, old = analyze(df, tuning_arrays(units), cfg)
    assert tables["units"]["reachable"].all() and (tables["units"]["unreachable_reason"] == "").all()
    assert old["unreachable_units"] == 0 and old["units_per_part"] == {"background": 0, "head": 4, "legs": 4}


def test_unreachable_units_are_left_out_of_the_motion_table(tmp_path):
    df, units = head_legs_units()
    motion_units(units).to_parquet(tmp_path / "motion.parquet", index=False)
    cfg = AnalysisConfig(motion_metrics=("motion", "shift_x", "rotation", "scale"))
    reach = pd.DataFrame({"unit": units, "reachable": [u != 20 for u in units],
                          "unreachable_reason": ["no gradient" if u == 20 else "" for u in units]})
    table, summary = motion_tables(read_motion(tmp_path / "motion.parquet", cfg), cfg, reach)
    row = table.set_index("unit").loc[20]
    assert pd.isna(row["strongest_part"]) and not row["reachable"] and row["unreachable_reason"] == "no gradient"
    assert summary["units_per_metric"]["rotation"] == 3 and summary["n_units_with_change"] == 7


def test_stage_marks_unreachable_units_from_the_tuning_file(tmp_path, monkeypatch, capsys):
    write_inputs(tmp_path)
    with h5py.File(tmp_path / "data" / "tuning.h5", "a") as f:
        n = len(f["units"])
        f["reachable"] = np.arange(n) != 0  # the first unit, 10, could not be moved
        f.create_dataset("unreachable_reason", data=np.array(["transfer below floor"] + [""] * (n - 1), dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
    monkeypatch.chdir(tmp_path)
    load_stage().main(**ARGS)
    assert "1 unreachable" in capsys.readouterr().out
    units = pd.read_csv("reports/units.csv").set_index("unit")
    assert not units.loc[10, "reachable"] and units.loc[10, "unreachable_reason"] == "transfer below floor"
    assert pd.isna(units.loc[10, "strongest_part"]) and units.drop(index=10)["reachable"].all()
    assert units.loc[10, "transfer"] == 0.5, "the faithfulness columns still describe the unit"
    m = json.loads(Path("reports/analysis.json").read_text())
    assert m["unreachable_units"] == 1 and m["units_per_part"]["head"] == 3
    assert pd.read_csv("reports/units_motion.csv").set_index("unit").loc[10, "reachable"] == False  # noqa: E712


def test_every_unit_unreachable_is_a_one_line_error():
    df, units = head_legs_units()
    tuning = {**tuning_arrays(units), "reachable": np.zeros(len(units), bool),
              "unreachable_reason": np.array(["transfer below floor"] * len(units), dtype=object)}
    with pytest.raises(UserError, match="every tuned unit is unreachable.*tune_units.min_transfer"):
        analyze(df, tuning, AnalysisConfig())
