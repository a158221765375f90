"""Each tuning mode's unit labels, and the units whose label the mode changes (stage compare_tuning).

A unit's label is what analyze_units reports as its top label: the (part, metric) whose mean
change over the seeds is largest once each metric is divided by its spread
(`linkstyle.analyze.units.unit_tables`). Here the changes are measured on the generator's own
part maps (`linkstyle.measure.quantify.ground_truth_changes`), so both sweeps are labelled by
the same code from the same masks, with no segmenter in between, and a label that differs
between the modes differs because the renders do. Every tuned unit is labelled, reachable or
not, as the comparison is of the renders each mode makes. A generator without part maps gives
no labels: the comparison says so and leaves the label table empty.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from linkstyle.analyze.units import MOTION_METRICS, AnalysisConfig, select_changes, unit_tables
from linkstyle.measure.quantify import QuantifyConfig, ground_truth_changes

LABEL_SOURCE = "ground_truth"


def label_metrics(analysis: AnalysisConfig) -> tuple[str, ...]:
    """The part metrics of analyze_units' label (motion metrics come from another stage's table)."""
    return tuple(m for m in analysis.metrics if m not in MOTION_METRICS) or AnalysisConfig().metrics


def sweep_labels(tuning_path: str | os.PathLike, quantify: QuantifyConfig, analysis: AnalysisConfig,
                 progress: bool = False) -> Optional[pd.DataFrame]:
    """unit, strongest_part, metric of every tuned unit of one tuning file (None: no part maps).

    A unit no part changed in has no label (None in both columns), as in reports/units.csv.
    """
    changes = ground_truth_changes(tuning_path, quantify, progress)
    if changes is None:
        return None
    cfg = replace(analysis, source=LABEL_SOURCE, metrics=label_metrics(analysis))
    _, table = unit_tables(select_changes(changes, cfg), cfg)
    return table[["unit", "strongest_part", "metric"]]


def label_changes(table: pd.DataFrame, labels: Sequence[Optional[pd.DataFrame]], modes: Sequence[str]) -> pd.DataFrame:
    """The units of `table` (compare_modes') whose label differs between the two modes.

    Columns: unit, then per mode strongest_part_<mode> and metric_<mode>, then the modes'
    transfer and reachable from `table`. A unit labelled in one mode only counts as changed;
    one labelled in neither does not. Where a mode has no labels (None), no rows, the same columns.
    """
    if any(lab is None for lab in labels):
        table, labels = table.iloc[:0], [pd.DataFrame(columns=["unit", "strongest_part", "metric"])] * len(modes)
    out = table[["unit"]].copy()
    for lab, mode in zip(labels, modes):
        named = lab.rename(columns={"strongest_part": f"strongest_part_{mode}", "metric": f"metric_{mode}"})
        out = out.merge(named, on="unit", how="left")
    key = [[_text(out[f"{c}_{m}"]) for c in ("strongest_part", "metric")] for m in modes]
    changed = (key[0][0] != key[1][0]) | (key[0][1] != key[1][1])
    extra = [f"{c}_{m}" for c in ("transfer", "reachable") for m in modes if f"{c}_{m}" in table]
    out = out.merge(table[["unit", *extra]], on="unit", how="left")
    return out[changed].reset_index(drop=True)


def _text(col: pd.Series) -> np.ndarray:
    """Labels as plain strings, "" for none, so that a missing label compares like a label."""
    return col.astype(object).where(col.notna(), "").astype(str).to_numpy()


def summarize_labels(changed: Optional[pd.DataFrame], n_units: int, labels: Sequence[Optional[pd.DataFrame]],
                     modes: Sequence[str], metrics: Sequence[str], missing: Sequence[str] = ()) -> dict:
    """The label keys of reports/tuning_modes.json; counts are null where a file has no part maps
    (`missing`: those files)."""
    if missing:
        return {"label_source": None, "label_changes": None, "label_change_fraction": None,
                "label_note": f"no part maps (parts_gt) in {', '.join(missing)}: labels not compared"}
    return {
        "label_source": LABEL_SOURCE, "label_metrics": list(metrics),
        "labelled_units": {m: int(lab["strongest_part"].notna().sum()) for lab, m in zip(labels, modes)},
        "label_changes": int(len(changed)),
        # Over every unit compared, labelled or not: the share of the analysis that the mode changes.
        "label_change_fraction": float(len(changed) / n_units) if n_units else None,
    }
