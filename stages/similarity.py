"""Stage similarity: ARI of k-means in W and R, RSA between W and R, with controls."""

from pathlib import Path

from linkstyle import cli
from linkstyle.io import write_json
from linkstyle.pairs import load_pairs
from linkstyle.similarity import SimilarityConfig, plot_rows, plot_similarity, run_similarity, summarize


def main(params: Path = Path("params.yaml"), pairs: Path = Path("data/pairs.h5"),
         metrics: Path = Path("reports/similarity.json"), figure: Path = Path("reports/figures/similarity.png"),
         plot: Path = Path("reports/similarity_plot.json"), n_jobs: int = 1):
    cfg = cli.section(params, "similarity", SimilarityConfig)
    data = load_pairs(pairs, "train", ("w", "r", "label"))
    df = run_similarity(data["w"], data["r"], data["label"], cfg, progress=cli.progress_enabled(), n_jobs=n_jobs)
    summary = summarize(df)
    write_json(metrics, summary)
    write_json(plot, {"repetitions": plot_rows(df)})
    plot_similarity(df, figure)
    ari, rsa = summary["ari"], summary["rsa_correlation"]
    print(f"similarity: ARI W {ari['W']['mean']:.3f}, R {ari['R']['mean']:.3f}, shuffled {ari['control_shuffled']['mean']:.3f}; "
          f"RSA(corr) {rsa['W-R']['mean']:.3f} -> {metrics}")


if __name__ == "__main__":
    cli.run(main)
