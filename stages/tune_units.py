"""Stage tune_units: set each unit of R to n_steps values, link to w, render, re-encode."""

from pathlib import Path

from linkstyle import cli
from linkstyle.checkpoint import fingerprint
from linkstyle.io import write_json
from linkstyle.pairs import load_pairs
from linkstyle.tuning import TuningConfig, pick_seeds, resolve_units, tune_units


def main(params: Path = Path("params.yaml"), pairs: Path = Path("data/pairs.h5"), links: Path = Path("data/links"),
         generator: Path = Path("data/generator.pt"), classifier: Path = Path("data/classifier.pt"),
         out: Path = Path("data/tuning.h5"), metrics: Path = Path("reports/tuning.json")):
    cfg = cli.section(params, "tune_units", TuningConfig)
    gen, clf, link, test, fps = cli.load_linked(generator, classifier, links / f"{cfg.link}.pt", pairs, "test",
                                                ("r", "label", "seed"), cli.device(cfg.device))
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
