"""Stage quantify_motion: affine + residual motion of every perturbation pair, per part (linkstyle.measure.quantify_motion)."""

import time
from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.distribute import ClusterConfig
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled
from linkstyle.measure.motion_pump import pump_paths
from linkstyle.measure.quantify import load_measuring_models
from linkstyle.measure.quantify_motion import QuantifyMotionConfig, quantify_motion_distributed_to
from linkstyle.models.registry import GeneratorSpec


def main(tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units)"),
         segmenter: Path = typer.Option(..., help="segmenter checkpoint (stage train_segmenter)"),
         out: Path = typer.Option(..., help="motion changes parquet to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads quantify_motion, cluster and models.generator")):
    cfg = cli.section(params, "quantify_motion", QuantifyMotionConfig)
    cluster = cli.section(params, "cluster", ClusterConfig)
    spec = cli.section(params, "models.generator", GeneratorSpec)
    # Checked here once, so that bad input is one line before any worker starts.
    names = tuple(load_measuring_models(spec, segmenter, cfg.device, f"{params}: quantify_motion.device")[1].label_names)
    if cfg.motion.backend == "pump":
        pump_paths(cfg.motion)
    start = time.perf_counter()
    # Each block's rows are written as it comes back: memory flat in the units.
    summary = quantify_motion_distributed_to(tuning, spec, segmenter, names, cfg, cluster, out,
                                             progress=progress_enabled())
    seconds = time.perf_counter() - start
    write_json(metrics, summary)
    if "centroid_agreement" in summary:
        r = summary["centroid_agreement"].get("whole", {}).get("pearson")
        gt = f"flow vs part-map centroid shifts r = {float('nan') if r is None else r:.3f}"
    else:
        gt = "no part maps: ground-truth agreement skipped"
    print(f"quantify_motion: {summary['n_pairs']} pairs ({cfg.motion.backend}) in {seconds:.0f} s, {summary['n_rows']} rows; "
          f"{gt} -> {out}")


if __name__ == "__main__":
    cli.run(main)
