"""Stage evaluate_link: the cycle I -> r -> w~ -> I~ on held-out pairs (linkstyle.link.cycle)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.link.bundle import load_linked
from linkstyle.link.cycle import CycleConfig, run_cycle, summarize_cycle
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec
from linkstyle.report.cycle import plot_cycle


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         link: Path = typer.Option(..., help="link file (stage fit_link)"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure: Path = typer.Option(..., help="figure PNG to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads evaluate_link and models")):
    cfg = cli.section(params, "evaluate_link", CycleConfig)
    L = load_linked(cli.section(params, "models.generator", GeneratorSpec),
                    cli.section(params, "models.classifier", ClassifierSpec), link, pairs, "test",
                    ("w", "r", "label"), resolve_device(cfg.device, f"{params}: evaluate_link.device"))
    test = L.pairs
    res = run_cycle(L.gen, L.clf, L.link, test["w"], test["r"], test["label"], cfg, progress=progress_enabled())
    m = summarize_cycle(res, test["w"], test["label"], L.gen.class_names)
    write_json(metrics, {"link": L.link.kind, **m})
    plot_cycle(res, test["label"], L.gen.class_names, cfg.n_figure_per_class, figure)
    print(f"evaluate_link ({L.link.kind}): w MSE {m['w_mse']:.4f} (relative {m['w_mse_relative']:.3f}), "
          f"1-SSIM {m['ssim_distance']['mean']:.3f} vs baseline {m['ssim_distance_baseline']['mean']:.3f}, "
          f"corr(r, r~) {m['r_correlation']['mean']:.3f}, class agreement {m['class_agreement']:.3f}")


if __name__ == "__main__":
    cli.run(main)
