"""Stage check_models: quality bars of the generator and classifier, and a sample figure."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import resolve_device
from linkstyle.models.quality import QualityConfig, evaluate_models, sample_grid
from linkstyle.models.registry import (
    ClassifierSpec,
    GeneratorSpec,
    check_pairing,
    load_classifier,
    load_generator,
)
from linkstyle.report.models import plot_samples
from linkstyle.world.store import load_world


def main(world: Path = typer.Option(..., help="world HDF5 (real images)"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure: Path = typer.Option(..., help="sample figure PNG to write"),
         class_means: Path = typer.Option(..., help="per-class mean w JSON (stage class_means): truncation pulls toward it"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads check_models and models")):
    cfg = cli.section(params, "check_models", QualityConfig)
    dev = resolve_device(cfg.device, f"{params}: check_models.device")
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec), dev, class_means)
    clf = load_classifier(cli.section(params, "models.classifier", ClassifierSpec), dev)
    check_pairing(gen, clf)
    n = cfg.n_per_class * gen.n_classes
    # Two disjoint real sets: the test split and as many training images, for the real-vs-real floor.
    real_test = load_world(world, "test", ("images",))["images"][:n]
    real_train = load_world(world, "train", ("images",))["images"][: len(real_test)]
    m = evaluate_models(gen, clf, real_test, real_train, cfg)
    write_json(metrics, m)
    images, parts = sample_grid(gen, cfg)
    plot_samples(images, parts, gen.class_names, gen.part_names, cfg.psi, figure)
    fd = m["frechet_r"]
    print(f"check_models: accuracy on generated (psi {cfg.psi:g}) min over classes {m['generated_accuracy_min']:.3f}; "
          f"Frechet in R: real-vs-real {fd['real_vs_real']:.3f}, real-vs-generated {fd['real_vs_generated_psi1']:.3f} (psi 1)")


if __name__ == "__main__":
    cli.run(main)
