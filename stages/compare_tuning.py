"""Stage compare_tuning: open- and closed-loop tuning side by side, per unit and as strips (linkstyle.explain.faithfulness)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import atomic_path, write_json
from linkstyle.explain.faithfulness import CompareConfig, compare_modes, pick_strip_units, summarize_modes
from linkstyle.report.faithfulness import plot_tuning_modes


def main(open_loop: Path = typer.Option(..., help="tuning HDF5 of mode open_loop (stage tune_units)"),
         closed_loop: Path = typer.Option(..., help="tuning HDF5 of mode closed_loop, same units and seeds"),
         table: Path = typer.Option(..., help="per-unit CSV to write (both modes' columns)"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure: Path = typer.Option(..., help="figure PNG to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section compare_tuning")):
    cfg = cli.section(params, "compare_tuning", CompareConfig)
    t = compare_modes(open_loop, closed_loop)
    m = summarize_modes(t)
    units = pick_strip_units(t, cfg.n_strip_units)
    plot_tuning_modes(t, [open_loop, closed_loop], figure, units, n_seeds=cfg.n_strip_seeds)
    with atomic_path(table) as tmp:
        t.to_csv(tmp, index=False)
    write_json(metrics, {**m, "strip_units": units})
    num = lambda x: float("nan") if x is None else x  # noqa: E731 - a unit with no set change has no ratio
    parts = [f"{mode.replace('_', ' ')}: transfer {num(m[mode]['transfer']):.3f}, "
             f"off-target {num(m[mode]['off_target']):.3f}" for mode in m["modes"]]
    print(f"compare_tuning: {m['n_units']} units, per-unit medians; " + "; ".join(parts) + f" -> {table}")


if __name__ == "__main__":
    cli.run(main)
