"""Stage train_classifier: train the default small ResNet on the world; held-out accuracy."""

from pathlib import Path

from linkstyle import cli
from linkstyle.classifier import ClassifierTrainConfig, evaluate, save_classifier, train_classifier
from linkstyle.config import to_dict
from linkstyle.datasets import load_world
from linkstyle.io import write_json


def main(params: Path = Path("params.yaml"), world: Path = Path("data/world.h5"),
         out: Path = Path("data/classifier.pt"), metrics: Path = Path("reports/classifier.json")):
    cfg = cli.section(params, "train_classifier", ClassifierTrainConfig)
    cli.device("cpu")  # sized for CPU and deterministic there
    train = load_world(world, "train", ("images", "labels"))
    model, history = train_classifier(train["images"], train["labels"], cfg, train["class_names"],
                                      progress=cli.progress_enabled())
    save_classifier(out, model, train_config=to_dict(cfg))
    test = load_world(world, "test", ("images", "labels"))
    ev = evaluate(model, test["images"], test["labels"])
    write_json(metrics, {"test_accuracy": ev["accuracy"], "test_accuracy_per_class": ev["per_class_accuracy"],
                         "train_accuracy": history["train_accuracy"][-1], "n_units": model.n_units})
    print(f"train_classifier: held-out accuracy {ev['accuracy']:.4f} ({model.n_units} units) -> {out}")


if __name__ == "__main__":
    cli.run(main)
