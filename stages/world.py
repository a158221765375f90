"""Stage world: render the built-in world's train and test splits to HDF5 (linkstyle.world)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.runtime import progress_enabled
from linkstyle.world.procedural import WorldConfig
from linkstyle.world.store import write_world


def main(out: Path = typer.Option(..., help="world HDF5 to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section world")):
    cfg = cli.section(params, "world", WorldConfig)
    counts = write_world(out, cfg, progress=progress_enabled())
    print(f"world: wrote {counts['train']} train and {counts['test']} test images to {out}")


if __name__ == "__main__":
    cli.run(main)
