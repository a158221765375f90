"""Stage counterfactuals: shift r until the render flips to a target class, every trajectory batched (linkstyle.explain)."""

import time
from pathlib import Path

import typer

from linkstyle.core import cli, h5
from linkstyle.core.io import atomic_path, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.explain.counterfactual_changes import quantify_counterfactuals, read_unit_labels, shifted_units
from linkstyle.explain.counterfactuals import CounterfactualConfig, plan_trajectories, run_counterfactuals, strip_selection
from linkstyle.link.bundle import load_linked
from linkstyle.link.pairs import load_pairs
from linkstyle.measure.segmenter import load_segmenter
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec
from linkstyle.report.counterfactuals import plot_pair_table, plot_strips, plot_units


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         link: Path = typer.Option(..., help="link file (stage fit_link)"),
         segmenter: Path = typer.Option(..., help="segmenter checkpoint (stage train_segmenter)"),
         units: Path = typer.Option(..., help="per-unit table (stage analyze_units), for the units' labels"),
         out: Path = typer.Option(..., help="counterfactuals HDF5 to write"),
         changes: Path = typer.Option(..., help="first-vs-last change table (parquet) to write"),
         units_table: Path = typer.Option(..., help="CSV of the units that moved most per class pair, to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figures: Path = typer.Option(..., help="folder for counterfactual_{strips,pairs,units}.png"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads counterfactuals and models")):
    t0 = time.perf_counter()
    cfg = cli.section(params, "counterfactuals", CounterfactualConfig)
    dev = resolve_device(cfg.device, f"{params}: counterfactuals.device")
    L = load_linked(cli.section(params, "models.generator", GeneratorSpec),
                    cli.section(params, "models.classifier", ClassifierSpec), link, pairs, "test",
                    ("r", "label", "seed"), dev)
    labels = read_unit_labels(units)
    seg = load_segmenter(segmenter, expected_generator_fingerprint=L.gen.fingerprint, device=dev)
    plan = plan_trajectories(L.pairs["label"], L.pairs["seed"], cfg, L.gen.n_classes, f"{params}: counterfactuals")
    train_r = load_pairs(pairs, "train", ("r",))["r"] if cfg.geometry == "data" else None
    summary = run_counterfactuals(L.gen, L.clf, L.link, L.pairs["r"], train_r, plan, cfg, out,
                                  attrs={**L.fingerprints, "link_kind": L.link.kind}, progress=progress_enabled())
    table = quantify_counterfactuals(out, L.gen, seg, cfg)
    with atomic_path(changes) as tmp:
        table.to_parquet(tmp, index=False)
    with h5.open_checked(out, {"trajectories": ("delta_r", "top_units")}, producer="counterfactuals") as f:
        moved = shifted_units(f, labels, cfg.n_top_units)
        plot_strips(f, strip_selection(f, cfg.n_strips), figures / "counterfactual_strips.png")
    with atomic_path(units_table) as tmp:
        moved.to_csv(tmp, index=False)
    plot_pair_table(summary, L.gen.class_names, figures / "counterfactual_pairs.png")
    plot_units(moved, L.gen.class_names, figures / "counterfactual_units.png")
    write_json(metrics, {**summary, "n_change_rows": len(table)})
    print(f"counterfactuals: {summary['success_rate'] or 0:.0%} of {summary['n_trajectories']} trajectories reached "
          f"their target (median {summary['median_steps']} steps, geometry {cfg.geometry}); "
          f"{len(table)} change rows in {time.perf_counter() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    cli.run(main)
