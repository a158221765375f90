"""Stage attribute_units: FeatureVis's methods beside the link, scored on the generator's part maps,
or on the segmenter's masks where it has none (linkstyle.explain.attribution.study)."""

from pathlib import Path
from typing import Optional

import typer

from linkstyle.core import cli, h5  # first: pins the CPU arithmetic before pandas loads numpy

import pandas as pd  # noqa: E402
from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.explain.attribution.sanity import FitLinkParams
from linkstyle.explain.attribution.study import AttributeUnitsConfig, attribute_units
from linkstyle.link.bundle import load_linked
from linkstyle.link.fit import LINK_KINDS
from linkstyle.link.pairs import load_pairs
from linkstyle.measure.segmenter import load_segmenter
from linkstyle.models.registry import ClassifierSpec, GeneratorSpec
from linkstyle.report.attribution import plot_grid, plot_sanity, plot_scores


def main(units: Path = typer.Option(..., help="unit table CSV (stage analyze_units)"),
         tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units)"),
         pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         link: Path = typer.Option(..., help="link file (stage fit_link), refitted in the randomisation test"),
         out: Path = typer.Option(..., help="maps HDF5 to write"),
         scores: Path = typer.Option(..., help="per (method, unit, seed) scores CSV to write"),
         table: Path = typer.Option(..., help="per (method, group) summary CSV to write"),
         sanity: Path = typer.Option(..., help="randomisation curves CSV to write, one column per method (a dvc plot)"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         figures: Path = typer.Option(..., help="folder for attribution_grid/scores/sanity PNGs"),
         segmenter: Optional[Path] = typer.Option(None, help="segmenter checkpoint (stage train_segmenter): its masks "
                                                  "stand in for part maps where the generator draws none"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads attribute_units, models and fit_link (the link's refit options)")):
    cfg = cli.section(params, "attribute_units", AttributeUnitsConfig)
    fit_params = cli.section(params, "fit_link", FitLinkParams)
    L = load_linked(cli.section(params, "models.generator", GeneratorSpec),
                    cli.section(params, "models.classifier", ClassifierSpec), link, pairs, "test",
                    ("w", "seed", "label"), resolve_device(cfg.device, f"{params}: attribute_units.device"))
    kind = L.link.kind
    link_fit = (kind, getattr(fit_params, kind)) if kind in LINK_KINDS else None
    train_w = load_pairs(pairs, "train", ("w",))["w"] if cfg.sanity_link_pairs else None
    if not units.is_file():
        raise UserError(f"{units}: not found; run stage 'analyze_units' first (dvc repro analyze_units)")
    try:
        unit_table = pd.read_csv(units)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{units}: not a readable CSV ({type(e).__name__}); rerun dvc repro analyze_units") from None
    seg_model = None
    if L.gen.part_names is None and segmenter is not None:
        seg_model = load_segmenter(segmenter, expected_generator_fingerprint=L.gen.fingerprint, device=L.gen.device)
    with h5.open_checked(tuning, {"": ("renders", "w", "units", "seeds", "classes")}, producer="tune_units") as f:
        for key in ("generator_fingerprint", "classifier_fingerprint", "link_fingerprint"):
            if h5.get_attr(f, key) != L.fingerprints[key]:
                raise UserError(f"{tuning}: made with another {key.split('_')[0]} than the one given here; "
                                "rerun dvc repro tune_units")
        res = attribute_units(L.gen, L.clf, L.pairs, train_w, unit_table, f, cfg, link_fit, out,
                              attrs={**L.fingerprints, "link_kind": kind}, progress=progress_enabled(),
                              table_name=str(units), segmenter=seg_model)
    # The curves one column per method, as `dvc plots` draws them (x: step, y: the methods).
    curves = res["sanity"].pivot(index=["step", "randomised"], columns="method", values="similarity")
    curves = curves[list(pd.unique(res["sanity"]["method"]))].reset_index()
    for path, frame in ((scores, res["scores"]), (table, pd.concat([res["summary"], res["by_part"]], ignore_index=True)),
                        (sanity, curves)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    write_json(metrics, res["metrics"])
    with h5.open_checked(out, {"": ("heat", "images")}, producer="attribute_units") as f:
        plot_grid(f, figures / "attribution_grid.png")
    plot_scores(res["summary"], res["by_part"], figures / "attribution_scores.png",
                part_source=res["metrics"]["part_source"])
    plot_sanity(res["sanity"], res["metrics"]["flagged"], figures / "attribution_sanity.png", cfg.sanity_flag_at)
    m, t = res["metrics"], res["timing"]
    print(f"attribute_units: {sum(m['n_units'].values())} units x {m['n_seeds']} seeds, {len(m['methods'])} methods; "
          f"best part mass {m['best_part_mass']}, best pointing {m['best_pointing']}; "
          f"flagged by randomisation: {', '.join(m['flagged']) or 'none'}; maps {t['maps_s']:.0f} s, "
          f"randomisation test {t['randomisation_s']:.0f} s -> {out}")


if __name__ == "__main__":
    cli.run(main)
