"""Stage quantify_motion: affine + residual motion of every perturbation pair, per part (linkstyle.measure.quantify_motion)."""

import time
from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.distribute import ClusterConfig
from linkstyle.core.io import atomic_path, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.measure.motion_pump import pump_paths
from linkstyle.measure.quantify_motion import QuantifyMotionConfig, quantify_motion_distributed
from linkstyle.measure.segmenter import load_segmenter
from linkstyle.models.registry import GeneratorSpec, load_generator


def main(tuning: Path = typer.Option(..., help="tuning HDF5 (stage tune_units)"),
         segmenter: Path = typer.Option(..., help="segmenter checkpoint (stage train_segmenter)"),
         out: Path = typer.Option(..., help="motion changes parquet to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads quantify_motion, cluster and models.generator")):
    cfg = cli.section(params, "quantify_motion", QuantifyMotionConfig)
    cluster = cli.section(params, "cluster", ClusterConfig)
    spec = cli.section(params, "models.generator", GeneratorSpec)
    # Checked here once, so that bad input is one line before any worker starts.
    gen = load_generator(spec, resolve_device(cfg.device, f"{params}: quantify_motion.device"))
    seg = load_segmenter(segmenter, expected_generator_fingerprint=gen.fingerprint, device=gen.device)
    names = tuple(seg.label_names)
    del gen, seg
    if cfg.motion.backend == "pump":
        pump_paths(cfg.motion)
    start = time.perf_counter()
    table, summary = quantify_motion_distributed(tuning, spec, segmenter, names, cfg, cluster, progress=progress_enabled())
    seconds = time.perf_counter() - start
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    write_json(metrics, summary)
    r = summary.get("centroid_agreement", {}).get("whole", {}).get("pearson")
    print(f"quantify_motion: {summary['n_pairs']} pairs ({cfg.motion.backend}) in {seconds:.0f} s, {len(table)} rows; "
          f"flow vs part-map centroid shifts r = {float('nan') if r is None else r:.3f} -> {out}")


if __name__ == "__main__":
    cli.run(main)
