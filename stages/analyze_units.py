"""Stage analyze_units: selectivity of every unit, label sparsity, t-SNE, clusters, strips (Fig. 4, 5)."""

from pathlib import Path

from linkstyle import cli, h5
from linkstyle.analysis import AnalysisConfig, analyze, plot_clusters, plot_sparsity, plot_strips, plot_tsne, read_changes
from linkstyle.io import atomic_path, write_json


def main(params: Path = Path("params.yaml"), changes: Path = Path("data/changes.parquet"),
         tuning: Path = Path("data/tuning.h5"), table: Path = Path("reports/units.csv"),
         metrics: Path = Path("reports/analysis.json"), figures: Path = Path("reports/figures")):
    cfg = cli.section(params, "analyze_units", AnalysisConfig)
    ch = read_changes(changes, cfg)
    with h5.open_checked(tuning, {"": ("renders", "units", "seeds", "classes", "values")}, producer="tune_units") as f:
        tables, summary = analyze(ch, f, cfg)
        plot_strips(tables, f, figures / "unit_strips.png")
    plot_sparsity(tables, figures / "sparsity.png")
    plot_tsne(tables, figures / "tsne.png", perplexity=summary["tsne_perplexity"])
    plot_clusters(tables, figures / "clusters.png")
    with atomic_path(table) as tmp:
        tables["units"].to_csv(tmp, index=False)
    write_json(metrics, summary)
    sparsity = ", ".join(f"{m} {v['median']:.2f}" for m, v in summary["sparsity"].items())
    ari = summary["cluster_part_ari"]
    print(f"analyze_units: {summary['n_units']} units; median sparsity {sparsity}; "
          f"{summary['consistent_fraction'] or 0:.0%} consistent (>= {cfg.consistent_at}); "
          f"clusters vs parts ARI {float('nan') if ari is None else ari:.2f} -> {table}")


if __name__ == "__main__":
    cli.run(main)
