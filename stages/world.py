"""Stage world: render the built-in world's train and test splits to HDF5."""

from pathlib import Path

from linkstyle import cli
from linkstyle.datasets import write_world
from linkstyle.world import WorldConfig


def main(params: Path = Path("params.yaml"), out: Path = Path("data/world.h5")):
    cfg = cli.section(params, "world", WorldConfig)
    counts = write_world(out, cfg, progress=cli.progress_enabled())
    print(f"world: wrote {counts['train']} train and {counts['test']} test images to {out}")


if __name__ == "__main__":
    cli.run(main)
