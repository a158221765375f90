"""Stage world: render the built-in world's train and test splits to HDF5 (linkstyle.world)."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.runtime import progress_enabled
from linkstyle.core.skipping import external_kind, write_notes
from linkstyle.world.procedural import WorldConfig
from linkstyle.world.store import write_world


def main(out: Path = typer.Option(..., help="world HDF5 to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads sections world and models")):
    cfg = cli.section(params, "world", WorldConfig)
    gen_kind, clf_kind = external_kind(params, "generator"), external_kind(params, "classifier")
    if gen_kind and clf_kind:  # nothing is trained and no real image comes from the world
        write_notes([out], f"models.generator.kind is {gen_kind} and models.classifier.kind is {clf_kind}: "
                    "no built-in model to train")
        print(f"world: skipped, both models are your own ({gen_kind}, {clf_kind}) -> {out} (a note)")
        return
    counts = write_world(out, cfg, progress=progress_enabled())
    print(f"world: wrote {counts['train']} train and {counts['test']} test images to {out}")


if __name__ == "__main__":
    cli.run(main)
