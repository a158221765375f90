"""Stage sample_pairs: sample w, render, classify, keep correct pairs, stream to HDF5."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.link.pairs import PairsConfig, sample_pairs
from linkstyle.models.registry import (
    ClassifierSpec,
    GeneratorSpec,
    check_pairing,
    load_classifier,
    load_generator,
)


def main(out: Path = typer.Option(..., help="pairs HDF5 to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         class_means: Path = typer.Option(..., help="per-class mean w JSON (stage class_means): truncation pulls toward it"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads sample_pairs and models")):
    cfg = cli.section(params, "sample_pairs", PairsConfig)
    dev = resolve_device(cfg.device, f"{params}: sample_pairs.device")
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec), dev, class_means)
    clf = load_classifier(cli.section(params, "models.classifier", ClassifierSpec), dev)
    check_pairing(gen, clf)
    fps = {"generator_fingerprint": gen.fingerprint, "classifier_fingerprint": clf.fingerprint}
    stats = sample_pairs(gen, clf, cfg, out, fps, progress=progress_enabled())
    acc = {split: {c: s["acceptance"] for c, s in st.items()} for split, st in stats.items()}
    write_json(metrics, {"acceptance": acc, "counts": stats, **fps})
    print("sample_pairs: acceptance " + ", ".join(f"{c} {a:.2f}" for c, a in acc["train"].items()) + f" -> {out}")


if __name__ == "__main__":
    cli.run(main)
