"""Stage check_models: quality bars of the generator and classifier, and a sample figure."""

from pathlib import Path

from linkstyle import cli
from linkstyle.classifier import load_classifier
from linkstyle.datasets import load_world
from linkstyle.io import write_json
from linkstyle.quality import QualityConfig, evaluate_models, plot_samples
from linkstyle.stylegen import load_stylegen


def main(params: Path = Path("params.yaml"), world: Path = Path("data/world.h5"),
         generator: Path = Path("data/generator.pt"), classifier: Path = Path("data/classifier.pt"),
         metrics: Path = Path("reports/quality.json"), figure: Path = Path("reports/figures/generated_samples.png")):
    cfg = cli.section(params, "check_models", QualityConfig)
    dev = cli.device(cfg.device)
    gen, clf = load_stylegen(generator, dev), load_classifier(classifier, dev)
    n = cfg.n_per_class * gen.n_classes
    # Two disjoint real sets: the test split and as many training images, for the real-vs-real floor.
    real_test = load_world(world, "test", ("images",))["images"][:n]
    real_train = load_world(world, "train", ("images",))["images"][: len(real_test)]
    m = evaluate_models(gen, clf, real_test, real_train, cfg)
    write_json(metrics, m)
    plot_samples(gen, cfg, figure)
    fd = m["frechet_r"]
    print(f"check_models: accuracy on generated (psi {cfg.psi:g}) min over classes {m['generated_accuracy_min']:.3f}; "
          f"Frechet in R: real-vs-real {fd['real_vs_real']:.3f}, real-vs-generated {fd['real_vs_generated_psi1']:.3f} (psi 1)")


if __name__ == "__main__":
    cli.run(main)
