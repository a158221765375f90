"""Stage tune_units: set each unit of R to n_steps values, link to w, render, re-encode."""

from pathlib import Path

import numpy as np

from linkstyle import cli
from linkstyle.checkpoint import fingerprint
from linkstyle.classifier import load_classifier
from linkstyle.io import write_json
from linkstyle.link import load_link
from linkstyle.pairs import load_pairs
from linkstyle.stylegen import load_stylegen
from linkstyle.tuning import TuningConfig, pick_seeds, resolve_units, tune_units


def main(params: Path = Path("params.yaml"), pairs: Path = Path("data/pairs.h5"), links: Path = Path("data/links"),
         generator: Path = Path("data/generator.pt"), classifier: Path = Path("data/classifier.pt"),
         out: Path = Path("data/tuning.h5"), metrics: Path = Path("reports/tuning.json")):
    cfg = cli.section(params, "tune_units", TuningConfig)
    dev = cli.device(cfg.device)
    gen, clf = load_stylegen(generator, dev), load_classifier(classifier, dev)
    fps = {"generator_fingerprint": fingerprint(generator), "classifier_fingerprint": fingerprint(classifier)}
    test = load_pairs(pairs, "test", ("r", "label", "seed"), expect=fps)
    link = load_link(links / f"{cfg.link}.pt", r_dim=clf.n_units, w_dim=gen.w_dim, device=dev)
    units = resolve_units(cfg, clf.n_units)
    pick = pick_seeds(test["label"], cfg.n_seeds, gen.n_classes)
    r_base = test["r"][pick]
    source = r_base if cfg.range_source == "seeds" else load_pairs(pairs, "train", ("r",))["r"]
    lo, hi = source[:, units].min(0), source[:, units].max(0)
    m = tune_units(gen, clf, link, r_base, test["seed"][pick], test["label"][pick], units, lo, hi, cfg, out,
                   attrs={**fps, "link_fingerprint": fingerprint(links / f"{cfg.link}.pt")}, progress=cli.progress_enabled())
    write_json(metrics, m)
    print(f"tune_units: {m['n_renders']} renders of {m['n_units']} units x {m['n_seeds']} seeds x {m['n_steps']} steps; "
          f"{m['dead_units']} units constant over the seeds -> {out}")


if __name__ == "__main__":
    cli.run(main)
