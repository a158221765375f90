"""Stage quantify_parts: segment every tuning render and measure each part's change (linkstyle.measure)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.distribute import ClusterConfig
from linkstyle.core.io import atomic_path, write_json
from linkstyle.core.runtime import progress_enabled
from linkstyle.measure.quantify import (
    QuantifyConfig,
    ground_truth_agreement,
    load_measuring_models,
    quantify_tuning_distributed,
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
    meas, ch = quantify_tuning_distributed(tuning, spec, segmenter, cfg, cluster, progress=progress_enabled())
    for df, path in ((meas, measures), (ch, changes)):
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
    agree = ground_truth_agreement(ch)
    write_json(metrics, {"n_measure_rows": len(meas), "n_change_rows": len(ch),
                         "parts_kept": sorted(ch["part"].unique().tolist()), "segmenter_vs_ground_truth": agree})
    print(f"quantify_parts: {len(meas)} measures, {len(ch)} changes; segmenter vs ground truth "
          f"r = {agree.get('pooled', float('nan')):.3f} -> {changes}")


if __name__ == "__main__":
    cli.run(main)
