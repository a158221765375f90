"""Stage analyze_units: selectivity of every unit (part and motion metrics), label sparsity, t-SNE, clusters, strips (Figs. 4, 5)."""

from pathlib import Path

import typer

from linkstyle.core import cli, h5  # first: pins the CPU arithmetic before numpy loads
from linkstyle.analyze.units import AnalysisConfig, analyze, combine, motion_tables, read_changes, read_motion
from linkstyle.core.io import atomic_path, write_json
from linkstyle.explain.faithfulness import FAITHFULNESS_DATASETS, faithfulness_table, read_reachability
from linkstyle.report.units import plot_clusters, plot_sparsity, plot_strips, plot_tsne


def main(changes: Path = typer.Option(..., help="changes parquet (stage quantify_parts)"),
         motion: Path = typer.Option(..., help="motion changes parquet (stage quantify_motion)"),
         tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units), for the strips"),
         table: Path = typer.Option(..., help="per-unit CSV to write"),
         motion_table: Path = typer.Option(..., help="per-unit CSV of the motion metrics' selectivity to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figures: Path = typer.Option(..., help="folder for sparsity/tsne/clusters/unit_strips PNGs"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section analyze_units")):
    cfg = cli.section(params, "analyze_units", AnalysisConfig)
    moved = read_motion(motion, cfg)
    ch = combine(read_changes(changes, cfg), moved, cfg)
    need = ("renders", "units", "seeds", "classes", "values", *FAITHFULNESS_DATASETS)
    with h5.open_checked(tuning, {"": tuple(dict.fromkeys(need))}, producer="tune_units") as f:
        # Units the sweep could not move are left out of every label statistic (analyze reads the same verdict).
        motion_units, motion_summary = motion_tables(moved, cfg, read_reachability(f))
        tables, summary = analyze(ch, f, cfg)
        # How faithfully each unit's tuning moved it (transfer, off-target), beside its labels.
        tables["units"] = tables["units"].merge(faithfulness_table(f), on="unit", how="left")
        plot_strips(tables, f, figures / "unit_strips.png")
    plot_sparsity(tables, figures / "sparsity.png")
    plot_tsne(tables, figures / "tsne.png", perplexity=summary["tsne_perplexity"])
    plot_clusters(tables, figures / "clusters.png")
    with atomic_path(table) as tmp:
        tables["units"].to_csv(tmp, index=False)
    with atomic_path(motion_table) as tmp:
        motion_units.to_csv(tmp, index=False)
    write_json(metrics, {**summary, "motion": motion_summary})
    sparsity = ", ".join(f"{m} {v['median']:.2f}" for m, v in summary["sparsity"].items())
    ari = summary["cluster_part_ari"]
    print(f"analyze_units: {summary['n_units']} units, {summary['unreachable_units']} unreachable (no label); "
          f"median sparsity {sparsity}; "
          f"{summary['consistent_fraction'] or 0:.0%} consistent (>= {cfg.consistent_at}); "
          f"clusters vs parts ARI {float('nan') if ari is None else ari:.2f}; most motion: "
          f"{max(motion_summary['units_per_metric'].items(), key=lambda kv: kv[1])[0]} -> {table}, {motion_table}")


if __name__ == "__main__":
    cli.run(main)
