"""Stage evaluate_link: the cycle I -> r -> w~ -> I~ on held-out pairs."""

from pathlib import Path

from linkstyle import cli
from linkstyle.cycle import CycleConfig, plot_cycle, run_cycle, summarize_cycle
from linkstyle.io import write_json


def main(params: Path = Path("params.yaml"), pairs: Path = Path("data/pairs.h5"), links: Path = Path("data/links"),
         generator: Path = Path("data/generator.pt"), classifier: Path = Path("data/classifier.pt"),
         metrics: Path = Path("reports/cycle.json"), figure: Path = Path("reports/figures/cycle.png")):
    cfg = cli.section(params, "evaluate_link", CycleConfig)
    gen, clf, link, test, _ = cli.load_linked(generator, classifier, links / f"{cfg.link}.pt", pairs, "test",
                                              ("w", "r", "label"), cli.device(cfg.device))
    res = run_cycle(gen, clf, link, test["w"], test["r"], test["label"], cfg, progress=cli.progress_enabled())
    m = summarize_cycle(res, test["w"], test["label"], gen.class_names)
    write_json(metrics, {"link": cfg.link, **m})
    plot_cycle(res, test["label"], gen.class_names, cfg.n_figure_per_class, figure)
    print(f"evaluate_link ({cfg.link}): w MSE {m['w_mse']:.4f} (relative {m['w_mse_relative']:.3f}), "
          f"1-SSIM {m['ssim_distance']['mean']:.3f} vs baseline {m['ssim_distance_baseline']['mean']:.3f}, "
          f"corr(r, r~) {m['r_correlation']['mean']:.3f}, class agreement {m['class_agreement']:.3f}")


if __name__ == "__main__":
    cli.run(main)
