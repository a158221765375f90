"""Stage motion_fields: residual vector fields of the units most selective for motion (linkstyle.measure.quantify_motion)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.measure.motion import MotionConfig
from linkstyle.measure.quantify_motion import MotionFieldsConfig, field_panels, read_motion_rows, read_units
from linkstyle.report.motion import plot_motion_fields


def main(tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units)"),
         motion: Path = typer.Option(..., help="motion changes parquet (stage quantify_motion)"),
         units: Path = typer.Option(..., help="selectivity table (stage analyze_units) that ranks the units"),
         figure: Path = typer.Option(..., help="vector-field figure PNG to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads motion_fields and quantify_motion.motion")):
    cfg = cli.section(params, "motion_fields", MotionFieldsConfig)
    # The figure re-estimates its pairs' motion exactly as the sweep did.
    motion_cfg = cli.section(params, "quantify_motion.motion", MotionConfig)
    unit_table = read_units(units)
    panels = field_panels(tuning, read_motion_rows(motion), unit_table, motion_cfg, cfg.n_units)
    plot_motion_fields(panels, figure)
    shown = ", ".join(f"u{p['unit']} ({p['part']})" for p in panels["panels"])
    print(f"motion_fields: {len(panels['panels'])} units [{shown}] -> {figure}")


if __name__ == "__main__":
    cli.run(main)
