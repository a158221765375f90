"""Stage tune_units: set each unit of R to n_steps values, find w (open or closed loop), render, re-encode (linkstyle.explain.tuning)."""

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from linkstyle.core import cli
from linkstyle.core.errors import UserError
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.core.distribute import ClusterConfig
from linkstyle.explain.tuning import MODES, TuningConfig, pick_seeds, resolve_units, tune_units_distributed
from linkstyle.link.bundle import load_linked
from linkstyle.link.pairs import load_pairs
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         link: Path = typer.Option(..., help="link file (stage fit_link)"),
         out: Path = typer.Option(..., help="tuning HDF5 to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads tune_units, cluster and models"),
         mode: Optional[str] = typer.Option(None, help="open_loop or closed_loop; default: tune_units.mode")):
    cfg = cli.section(params, "tune_units", TuningConfig)
    if mode is not None:  # stage tune_units_open: the open loop beside the faithful sweep, for compare_tuning
        if mode not in MODES:
            raise UserError(f"--mode: must be one of {', '.join(MODES)}, got {mode!r}")
        cfg = replace(cfg, mode=mode)
    cluster = cli.section(params, "cluster", ClusterConfig)
    specs = cli.section(params, "models.generator", GeneratorSpec), cli.section(params, "models.classifier", ClassifierSpec)
    # Loaded here to check every input once, in one line, before any worker starts.
    L = load_linked(*specs, link, pairs, "test",
                    ("r", "w", "label", "seed"), resolve_device(cfg.device, f"{params}: tune_units.device"))
    test = L.pairs
    units = resolve_units(cfg, L.clf.n_units)
    pick = pick_seeds(test["label"], cfg.n_seeds, L.gen.n_classes)
    r_base = test["r"][pick]
    source = r_base if cfg.range_source == "seeds" else load_pairs(pairs, "train", ("r",))["r"]
    lo, hi = source[:, units].min(0), source[:, units].max(0)
    m = tune_units_distributed(L.gen, *specs, link, pairs, r_base, test["seed"][pick], test["label"][pick], units, lo,
                               hi, cfg, out, {**L.fingerprints, "link_kind": L.link.kind}, cluster,
                               progress=progress_enabled(), w_base=test["w"][pick])
    write_json(metrics, m)
    tr, off = m["unit_transfer_median"], m["off_target_median"]
    faithful = f"transfer {tr:.3f}, off-target {off:.3f} (medians)" if tr is not None else "no unit changed"
    print(f"tune_units ({cfg.mode}): {m['n_renders']} renders of {m['n_units']} units x {m['n_seeds']} seeds x "
          f"{m['n_steps']} steps; {m['dead_units']} units constant over the seeds; {faithful}; "
          f"{m['unreachable_units']} units unreachable -> {out}")


if __name__ == "__main__":
    cli.run(main)
