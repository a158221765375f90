"""Stage compare_tuning: open- and closed-loop tuning side by side, per unit, as strips, and the units whose label the mode changes (linkstyle.explain)."""

from pathlib import Path

import typer

from linkstyle.core import cli  # first: pins the CPU arithmetic before numpy loads
from linkstyle.analyze.units import AnalysisConfig
from linkstyle.core.io import atomic_path, write_json
from linkstyle.core.runtime import progress_enabled
from linkstyle.explain.faithfulness import CompareConfig, compare_modes, pick_strip_units, summarize_modes
from linkstyle.explain.mode_labels import label_changes, label_metrics, summarize_labels, sweep_labels
from linkstyle.measure.quantify import QuantifyConfig
from linkstyle.report.faithfulness import plot_tuning_modes


def main(open_loop: Path = typer.Option(..., help="tuning HDF5 of mode open_loop (stage tune_units_open)"),
         closed_loop: Path = typer.Option(..., help="tuning HDF5 of mode closed_loop, same units and seeds (stage tune_units)"),
         table: Path = typer.Option(..., help="per-unit CSV to write (both modes' columns)"),
         labels: Path = typer.Option(..., help="CSV to write: the units whose label differs between the modes"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure: Path = typer.Option(..., help="figure PNG to write"),
         params: Path = typer.Option(Path("params.yaml"),
                                     help="params file; reads compare_tuning, and quantify_parts and analyze_units "
                                          "to label the units as those stages do")):
    cfg = cli.section(params, "compare_tuning", CompareConfig)
    quantify = cli.section(params, "quantify_parts", QuantifyConfig)
    analysis = cli.section(params, "analyze_units", AnalysisConfig)
    t = compare_modes(open_loop, closed_loop)
    m = summarize_modes(t)
    units = pick_strip_units(t, cfg.n_strip_units)
    plot_tuning_modes(t, [open_loop, closed_loop], figure, units, n_seeds=cfg.n_strip_seeds)
    # Each mode's labels from its own renders, measured on the generator's part maps.
    files = [open_loop, closed_loop]
    labelled = [sweep_labels(p, quantify, analysis, progress_enabled()) for p in files]
    missing = [str(p) for p, lab in zip(files, labelled) if lab is None]
    changed = label_changes(t, labelled, m["modes"])  # no part maps: no rows, the header says what it would hold
    with atomic_path(table) as tmp:
        t.to_csv(tmp, index=False)
    with atomic_path(labels) as tmp:
        changed.to_csv(tmp, index=False)
    n = len(t)
    lm = summarize_labels(changed, n, labelled, m["modes"], label_metrics(analysis), missing)
    write_json(metrics, {**m, "strip_units": units, **lm})
    num = lambda x: float("nan") if x is None else x  # noqa: E731 - a unit with no set change has no ratio
    parts = [f"{mode.replace('_', ' ')}: transfer {num(m[mode]['transfer']):.3f}, "
             f"off-target {num(m[mode]['off_target']):.3f}" for mode in m["modes"]]
    moved = lm["label_note"] if missing else f"top label differs on {lm['label_changes']} of {n} units"
    print(f"compare_tuning: {n} units, per-unit medians; " + "; ".join(parts) + f"; {moved} -> {table}, {labels}")


if __name__ == "__main__":
    cli.run(main)
