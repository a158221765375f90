"""Stage quantify_parts: segment every tuning render and measure each part's change (linkstyle.measure)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.distribute import ClusterConfig
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled
from linkstyle.measure.quantify import (
    QuantifyConfig,
    load_measuring_models,
    quantify_tuning_distributed_to,
)
from linkstyle.models.registry import GeneratorSpec


def main(tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units)"),
         segmenter: Path = typer.Option(..., help="segmenter checkpoint (stage train_segmenter)"),
         measures: Path = typer.Option(..., help="per-step measures parquet to write"),
         changes: Path = typer.Option(..., help="per-pair changes parquet to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads quantify_parts, cluster and models.generator")):
    cfg = cli.section(params, "quantify_parts", QuantifyConfig)
    cluster = cli.section(params, "cluster", ClusterConfig)
    spec = cli.section(params, "models.generator", GeneratorSpec)
    # Checked here once, so that bad input is one line before any worker starts.
    load_measuring_models(spec, segmenter, cfg.device, f"{params}: quantify_parts.device")
    # Each block's rows go to the parquet files as it comes back: memory flat in the units.
    summary = quantify_tuning_distributed_to(tuning, spec, segmenter, cfg, cluster, measures, changes,
                                             progress=progress_enabled())
    write_json(metrics, summary)
    agree = summary["segmenter_vs_ground_truth"]
    gt = (f"segmenter vs ground truth r = {agree.get('pooled', float('nan')):.3f}" if agree
          else "no part maps: ground-truth agreement skipped")
    print(f"quantify_parts: {summary['n_measure_rows']} measures, {summary['n_change_rows']} changes; {gt} -> {changes}")


if __name__ == "__main__":
    cli.run(main)
