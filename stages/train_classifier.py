"""Stage train_classifier: train the default small ResNet on the world; held-out accuracy."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.checkpoint import save_module
from linkstyle.core.config import to_dict
from linkstyle.core.io import write_curves, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.core.skipping import external_kind, write_notes
from linkstyle.models.classifier_training import (
    ClassifierTrainConfig,
    evaluate,
    train_classifier,
)
from linkstyle.world.store import load_world


def main(world: Path = typer.Option(..., help="world HDF5 (stage world)"),
         out: Path = typer.Option(..., help="classifier checkpoint to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         curves: Path = typer.Option(..., help="per-epoch training curves TSV to write (a DVC plot)"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads sections train_classifier and models")):
    cfg = cli.section(params, "train_classifier", ClassifierTrainConfig)
    kind = external_kind(params, "classifier")
    if kind:
        write_notes([out, metrics, curves], f"models.classifier.kind is {kind}: the pipeline uses your classifier")
        print(f"train_classifier: skipped, models.classifier.kind is {kind} (your own classifier)")
        return
    resolve_device("cpu")  # sized for CPU and deterministic there
    train = load_world(world, "train", ("images", "labels"))
    model, history = train_classifier(train["images"], train["labels"], cfg, train["class_names"],
                                      progress=progress_enabled())
    save_module(out, "classifier", model, train_config=to_dict(cfg))
    test = load_world(world, "test", ("images", "labels"))
    ev = evaluate(model, test["images"], test["labels"])
    write_curves(curves, {k: history[k] for k in ("loss", "train_accuracy", "lr")})
    write_json(metrics, {"test_accuracy": ev["accuracy"], "test_accuracy_per_class": ev["per_class_accuracy"],
                         "train_accuracy": history["train_accuracy"][-1], "n_units": model.n_units})
    print(f"train_classifier: held-out accuracy {ev['accuracy']:.4f} ({model.n_units} units) -> {out}")


if __name__ == "__main__":
    cli.run(main)
