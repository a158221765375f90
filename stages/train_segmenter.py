"""Stage train_segmenter: few-shot part segmenter on the generator's own features (linkstyle.measure)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.io import write_curves, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.measure.segmenter import save_segmenter
from linkstyle.measure.segmenter_training import FewShotConfig, fit_segmenter
from linkstyle.models.registry import GeneratorSpec, load_generator


def main(masks: Path = typer.Option(..., help="folder of user masks (used when train_segmenter.labels is masks)"),
         out: Path = typer.Option(..., help="segmenter checkpoint to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         curves: Path = typer.Option(..., help="per-epoch training curves TSV to write (a DVC plot)"),
         class_means: Path = typer.Option(..., help="per-class mean w JSON (stage class_means): truncation pulls toward it"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads train_segmenter and models.generator")):
    cfg = cli.section(params, "train_segmenter", FewShotConfig)
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec),
                         resolve_device(cfg.device, f"{params}: train_segmenter.device"), class_means)
    model, m, history = fit_segmenter(gen, cfg, masks, progress=progress_enabled())
    write_curves(curves, {k: history[k] for k in ("loss", "pixel_acc", "lr")})
    save_segmenter(out, model, gen.fingerprint, info=m)
    write_json(metrics, m)
    print(f"train_segmenter: {m['n_shots']} shots, held-out mean IoU {m.get('mean_iou', float('nan')):.3f} -> {out}")


if __name__ == "__main__":
    cli.run(main)
