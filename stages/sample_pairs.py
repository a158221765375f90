"""Stage sample_pairs: sample w, render, classify, keep correct pairs, stream to HDF5."""

from pathlib import Path

from linkstyle import cli
from linkstyle.checkpoint import fingerprint
from linkstyle.classifier import load_classifier
from linkstyle.io import write_json
from linkstyle.pairs import PairsConfig, sample_pairs
from linkstyle.stylegen import load_stylegen


def main(params: Path = Path("params.yaml"), generator: Path = Path("data/generator.pt"),
         classifier: Path = Path("data/classifier.pt"), out: Path = Path("data/pairs.h5"),
         metrics: Path = Path("reports/pairs.json")):
    cfg = cli.section(params, "sample_pairs", PairsConfig)
    dev = cli.device(cfg.device)
    gen, clf = load_stylegen(generator, dev), load_classifier(classifier, dev)
    fps = {"generator_fingerprint": fingerprint(generator), "classifier_fingerprint": fingerprint(classifier)}
    stats = sample_pairs(gen, clf, cfg, out, fps, progress=cli.progress_enabled())
    acc = {split: {c: s["acceptance"] for c, s in st.items()} for split, st in stats.items()}
    write_json(metrics, {"acceptance": acc, "counts": stats, **fps})
    print("sample_pairs: acceptance " + ", ".join(f"{c} {a:.2f}" for c, a in acc["train"].items()) + f" -> {out}")


if __name__ == "__main__":
    cli.run(main)
