"""Stage tune_units: set each unit of R to n_steps values, link to w, render, re-encode (linkstyle.explain.tuning)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.explain.tuning import TuningConfig, pick_seeds, resolve_units, tune_units
from linkstyle.link.bundle import load_linked
from linkstyle.link.pairs import load_pairs
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         link: Path = typer.Option(..., help="link file (stage fit_link)"),
         out: Path = typer.Option(..., help="tuning HDF5 to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads tune_units and models")):
    cfg = cli.section(params, "tune_units", TuningConfig)
    L = load_linked(cli.section(params, "models.generator", GeneratorSpec),
                    cli.section(params, "models.classifier", ClassifierSpec), link, pairs, "test",
                    ("r", "label", "seed"), resolve_device(cfg.device, f"{params}: tune_units.device"))
    test = L.pairs
    units = resolve_units(cfg, L.clf.n_units)
    pick = pick_seeds(test["label"], cfg.n_seeds, L.gen.n_classes)
    r_base = test["r"][pick]
    source = r_base if cfg.range_source == "seeds" else load_pairs(pairs, "train", ("r",))["r"]
    lo, hi = source[:, units].min(0), source[:, units].max(0)
    m = tune_units(L.gen, L.clf, L.link, r_base, test["seed"][pick], test["label"][pick], units, lo, hi, cfg, out,
                   attrs={**L.fingerprints, "link_kind": L.link.kind}, progress=progress_enabled())
    write_json(metrics, m)
    print(f"tune_units: {m['n_renders']} renders of {m['n_units']} units x {m['n_seeds']} seeds x {m['n_steps']} steps; "
          f"{m['dead_units']} units constant over the seeds -> {out}")


if __name__ == "__main__":
    cli.run(main)
