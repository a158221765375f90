"""The spread over training seeds: headline numbers read from a run's reports, summarised
across runs with hand-checkable statistics, and the runner's per-seed params."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from linkstyle.analyze.spread import HEADLINES, headline_metrics, holds_at_every_seed, spread_summary
from linkstyle.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _runner():
    spec = importlib.util.spec_from_file_location("spread_tool", ROOT / "tools" / "spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_reports(d: Path, value: float) -> None:
    """One run's result files holding `value` at every headline's place."""
    files: dict[str, dict] = {}
    for h in HEADLINES:
        node = files.setdefault(h.file.format(link="ridge"), {})
        for key in h.path[:-1]:
            node = node.setdefault(key, {})
        node[h.path[-1]] = value
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(json.dumps(data))


def test_headline_metrics_reads_every_number(tmp_path):
    _write_reports(tmp_path, 0.25)
    got = headline_metrics(tmp_path, "ridge")
    assert set(got) == {h.name for h in HEADLINES} and set(got.values()) == {0.25}


def test_headline_metrics_names_the_missing_file(tmp_path):
    _write_reports(tmp_path, 0.25)
    (tmp_path / "motion.json").unlink()
    with pytest.raises(FileNotFoundError, match="motion.json"):
        headline_metrics(tmp_path, "ridge")


def test_summary_statistics_by_hand():
    per_seed = {s: {h.name: v for h in HEADLINES} for s, v in ((0, 0.4), (1, 0.6), (2, 0.8))}
    out = spread_summary(per_seed)["training_seeds"]
    assert out["seeds"] == [0, 1, 2]
    transfer = out["metrics"]["transfer"]
    assert transfer["per_seed"] == {"0": 0.4, "1": 0.6, "2": 0.8}
    assert math.isclose(transfer["mean"], 0.6) and math.isclose(transfer["std"], 0.2)  # sample std
    assert (transfer["min"], transfer["max"]) == (0.4, 0.8)
    assert transfer["bar"] == 0.5 and transfer["holds_at_every_seed"] is False  # seed 0 misses it
    assert "bar" not in out["metrics"]["rsa"]


def test_a_claim_holds_only_at_every_seed():
    assert holds_at_every_seed([0.91, 0.95, 0.90], 0.9)
    assert not holds_at_every_seed([0.91, 0.95, 0.89], 0.9)


def test_runner_sets_the_seed_keys_and_rejects_unknown_overrides():
    tool = _runner()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = tool.seed_params(base, 3, ["tune_units.closed_loop.units_every=4"])
    assert params["train_generator"]["seed"] == params["train_classifier"]["seed"] == 3
    assert params["train_segmenter"]["model"]["seed"] == 3
    assert params["tune_units"]["closed_loop"]["units_every"] == 4
    assert base["train_generator"]["seed"] == 0  # the base is not changed
    with pytest.raises(UserError, match="tune_units.closed_loop.unit_every"):
        tool.seed_params(base, 3, ["tune_units.closed_loop.unit_every=4"])
    with pytest.raises(UserError, match="key=value"):
        tool.seed_params(base, 3, ["tune_units.closed_loop.units_every"])
