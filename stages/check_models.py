"""Stage check_models: quality bars of the generator and classifier, and a sample figure.

Real images come from `--real`: the built-in world's HDF5 (its test split, and as many
training images for the real-vs-real floor) or a folder of the user's own, one folder per
class (params.yaml models.real_images); a folder without class folders skips those checks.
"""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import resolve_device
from linkstyle.models.quality import QualityConfig, RealImages, evaluate_models, real_image_folder, sample_grid
from linkstyle.models.registry import (
    ClassifierSpec,
    GeneratorSpec,
    check_pairing,
    load_classifier,
    load_generator,
)
from linkstyle.report.models import plot_samples
from linkstyle.world.store import load_world


def _world_images(path: Path, n: int) -> RealImages:
    test = load_world(path, "test", ("images", "labels"))
    a = test["images"][:n]
    return RealImages(a, test["labels"][: len(a)], load_world(path, "train", ("images",))["images"][: len(a)], str(path))


def main(real: Path = typer.Option(..., help="real images: the world HDF5, or a folder with one folder of images per class"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figure: Path = typer.Option(..., help="sample figure PNG to write"),
         class_means: Path = typer.Option(..., help="per-class mean w JSON (stage class_means): truncation pulls toward it"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads check_models and models")):
    cfg = cli.section(params, "check_models", QualityConfig)
    dev = resolve_device(cfg.device, f"{params}: check_models.device")
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec), dev, class_means)
    clf = load_classifier(cli.section(params, "models.classifier", ClassifierSpec), dev)
    check_pairing(gen, clf)
    # Two disjoint real sets: the world's test split and as many training images, or the
    # user's folder split in two, for the real-vs-real floor.
    images = (_world_images(real, cfg.n_per_class * gen.n_classes) if real.suffix == ".h5"
              else real_image_folder(real, gen.class_names, gen.resolution))
    m = evaluate_models(gen, clf, images, cfg)
    write_json(metrics, m)
    samples, parts = sample_grid(gen, cfg)
    plot_samples(samples, parts, gen.class_names, gen.part_names, cfg.psi, figure)
    fd = m["frechet_r"]
    print(f"check_models: accuracy on generated (psi {cfg.psi:g}) min over classes {m['generated_accuracy_min']:.3f}; "
          + (f"Frechet in R: real-vs-real {fd['real_vs_real']:.3f}, real-vs-generated {fd['real_vs_generated_psi1']:.3f} "
             f"(psi 1), {m['real_images']['n']} real images from {real}" if fd else
             f"no real images in {real} (one folder per class): real accuracy and Frechet distance skipped"))


if __name__ == "__main__":
    cli.run(main)
