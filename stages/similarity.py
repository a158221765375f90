"""Stage similarity: ARI of k-means in W and R, RSA between W and R, with controls (Fig. 3A)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled
from linkstyle.link.pairs import load_pairs
from linkstyle.link.similarity import (
    SimilarityConfig,
    plot_rows,
    run_similarity,
    summarize,
)
from linkstyle.report.similarity import plot_similarity


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         plot: Path = typer.Option(..., help="per-repetition JSON for dvc plots"),
         figure: Path = typer.Option(..., help="figure PNG to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section similarity"),
         n_jobs: int = typer.Option(1, help="processes for the repetitions (results do not depend on it)")):
    cfg = cli.section(params, "similarity", SimilarityConfig)
    data = load_pairs(pairs, "train", ("w", "r", "label"))
    df = run_similarity(data["w"], data["r"], data["label"], cfg, progress=progress_enabled(), n_jobs=n_jobs)
    summary = summarize(df)
    write_json(metrics, summary)
    write_json(plot, {"repetitions": plot_rows(df)})
    plot_similarity(df, figure)
    ari, rsa = summary["ari"], summary["rsa_correlation"]
    print(f"similarity: ARI W {ari['W']['mean']:.3f}, R {ari['R']['mean']:.3f}, shuffled {ari['control_shuffled']['mean']:.3f}; "
          f"RSA(corr) {rsa['W-R']['mean']:.3f} -> {metrics}")


if __name__ == "__main__":
    cli.run(main)
