"""Stage invariances: samples of w given r through the INN, rendered and re-encoded; what R is invariant to (linkstyle.explain.invariances)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.checkpoint import fingerprint
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.explain.invariances import (
    InvarianceConfig,
    run_invariances,
    summarize_invariances,
)
from linkstyle.link.inn import load_inn
from linkstyle.link.pairs import load_pairs
from linkstyle.models.registry import (
    ClassifierSpec,
    GeneratorSpec,
    load_classifier,
    load_generator,
)
from linkstyle.report.invariances import plot_invariance_samples, plot_invariant_factors


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         inn: Path = typer.Option(..., help="INN file (stage fit_inn)"),
         out: Path = typer.Option(..., help="invariances HDF5 to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure_samples: Path = typer.Option(..., help="figure PNG to write: rows of samples per seed"),
         figure_factors: Path = typer.Option(..., help="figure PNG to write: the factors R is invariant to"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads invariances and models")):
    cfg = cli.section(params, "invariances", InvarianceConfig)
    dev = resolve_device(cfg.device, f"{params}: invariances.device")
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec), dev)
    clf = load_classifier(cli.section(params, "models.classifier", ClassifierSpec), dev)
    fps = {"generator_fingerprint": gen.fingerprint, "classifier_fingerprint": clf.fingerprint}
    test = load_pairs(pairs, "test", ("w", "r", "label", "seed"), expect=fps)
    fps["pairs_fingerprint"] = fingerprint(pairs)
    model = load_inn(inn, r_dim=clf.n_units, w_dim=gen.w_dim, device=dev, expect={"pairs_fingerprint": fps["pairs_fingerprint"]})
    fps["inn_fingerprint"] = fingerprint(inn)
    res = run_invariances(gen, clf, model, test, cfg, out, attrs=fps, progress=progress_enabled())
    m = summarize_invariances(res, cfg)
    write_json(metrics, m)
    plot_invariance_samples(res["figure"], res["classes"], res["cosine"], gen.class_names, figure_samples)
    plot_invariant_factors(m, cfg.invariant_ratio, figure_factors)
    print(f"invariances: {m['n_seeds']} seeds x {m['n_samples']} samples; cos(r~, r) {m['cosine_to_r']['mean']:.3f} vs "
          f"same-class baseline {m['cosine_to_r_baseline_same_class']['mean']:.3f}; invariant to: "
          f"{', '.join(m.get('invariant_factors', [])) or 'none found'} -> {out}")


if __name__ == "__main__":
    cli.run(main)
