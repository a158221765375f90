"""Stage train_generator: fit the default generator (VAE + class prior) on the world."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.checkpoint import save_module
from linkstyle.core.config import to_dict
from linkstyle.core.io import write_curves, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.core.skipping import external_kind, write_notes
from linkstyle.models.stylegen_training import GeneratorTrainConfig, train_generator
from linkstyle.world.store import load_world


def main(world: Path = typer.Option(..., help="world HDF5 (stage world)"),
         out: Path = typer.Option(..., help="generator checkpoint to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         curves: Path = typer.Option(..., help="per-epoch training curves TSV to write (a DVC plot)"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads sections train_generator and models")):
    cfg = cli.section(params, "train_generator", GeneratorTrainConfig)
    kind = external_kind(params, "generator")
    if kind:
        write_notes([out, metrics, curves], f"models.generator.kind is {kind}: the pipeline uses your generator")
        print(f"train_generator: skipped, models.generator.kind is {kind} (your own generator)")
        return
    resolve_device("cpu")  # training is sized for CPU and deterministic there
    data = load_world(world, "train", ("images", "parts", "labels"))
    gen, history = train_generator(data["images"], data["labels"], data["parts"], data["class_names"],
                                   data["part_names"], cfg, progress=progress_enabled())
    save_module(out, "generator", gen, train_config=to_dict(cfg))
    write_curves(curves, {k: history[k] for k in ("loss", "l1", "parts_ce", "kl")})
    write_json(metrics, {"final_l1": history["l1"][-1], "final_parts_ce": history["parts_ce"][-1],
                         "final_kl": history["kl"][-1], "n_train": history["n_train"]})
    print(f"train_generator: l1 {history['l1'][-1]:.4f}, parts CE {history['parts_ce'][-1]:.3f} "
          f"in {history['seconds']:.0f} s -> {out}")


if __name__ == "__main__":
    cli.run(main)
