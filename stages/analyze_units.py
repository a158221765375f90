"""Stage analyze_units: selectivity of every unit, label sparsity, t-SNE, clusters, strips (Fig. 4, 5)."""

from pathlib import Path

import pandas as pd

from linkstyle import cli, h5
from linkstyle.analysis import COLUMNS, AnalysisConfig, analyze, plot_clusters, plot_sparsity, plot_strips, plot_tsne
from linkstyle.errors import UserError
from linkstyle.io import atomic_path, write_json


def read_changes(path: Path, cfg: AnalysisConfig) -> pd.DataFrame:
    """Only the configured source's and metrics' rows: the full table holds every metric twice."""
    import pyarrow.parquet as pq

    fix = "rerun dvc repro quantify_parts"
    if not path.exists():
        raise UserError(f"{path}: not found; run dvc repro quantify_parts first")
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: no column {missing[0]!r}; not written by this version of quantify_parts, {fix}")
        df = pd.read_parquet(path, columns=list(COLUMNS),
                             filters=[("source", "==", cfg.source), ("metric", "in", list(cfg.metrics))])
        held = None
        if df.empty or not set(cfg.metrics) <= set(df["metric"].unique()):  # say what the file does hold
            held = pd.read_parquet(path, columns=["source", "metric"]).drop_duplicates()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:120]}); delete it and {fix}") from None
    if held is not None:
        raise UserError(f"{path}: no changes of source {cfg.source!r} for every metric of {list(cfg.metrics)}; it holds "
                        f"sources {sorted(held['source'].unique())} and metrics {sorted(held['metric'].unique())}; "
                        "fix analyze_units.source or analyze_units.metrics")
    return df


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
