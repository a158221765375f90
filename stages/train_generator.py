"""Stage train_generator: fit the default generator (VAE + class prior) on the world."""

from pathlib import Path

from linkstyle import cli
from linkstyle.config import to_dict
from linkstyle.datasets import load_world
from linkstyle.io import write_json
from linkstyle.stylegen import save_stylegen
from linkstyle.stylegen_training import GeneratorTrainConfig, train_generator


def main(params: Path = Path("params.yaml"), world: Path = Path("data/world.h5"),
         out: Path = Path("data/generator.pt"), metrics: Path = Path("reports/generator.json")):
    cfg = cli.section(params, "train_generator", GeneratorTrainConfig)
    cli.device("cpu")  # training is sized for CPU; deterministic there
    data = load_world(world, "train", ("images", "parts", "labels"))
    gen, history = train_generator(data["images"], data["labels"], data["parts"], data["class_names"],
                                   data["part_names"], cfg, progress=cli.progress_enabled())
    save_stylegen(out, gen, train_config=to_dict(cfg))
    write_json(metrics, {"final_l1": history["l1"][-1], "final_parts_ce": history["parts_ce"][-1],
                         "final_kl": history["kl"][-1], "n_train": history["n_train"]})
    print(f"train_generator: l1 {history['l1'][-1]:.4f}, parts CE {history['parts_ce'][-1]:.3f} "
          f"in {history['seconds']:.0f} s -> {out}")


if __name__ == "__main__":
    cli.run(main)
