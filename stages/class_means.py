"""Stage class_means: the per-class mean w truncation pulls toward (checkpoint's, or estimated)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.models.class_means import ClassMeansConfig, class_means, write_class_means
from linkstyle.models.registry import GeneratorSpec, load_generator


def main(out: Path = typer.Option(..., help="class means JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads class_means and models.generator")):
    cfg = cli.section(params, "class_means", ClassMeansConfig)
    dev = resolve_device(cfg.device, f"{params}: class_means.device")
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec), dev)
    means, provenance = class_means(gen, cfg, progress=progress_enabled())
    write_class_means(out, gen, means, provenance)
    print(f"class_means: {gen.n_classes} classes x w_dim {gen.w_dim}, {provenance['source']}")


if __name__ == "__main__":
    cli.run(main)
