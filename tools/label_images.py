"""Export generated images to label by hand, for the few-shot segmenter (`train_segmenter.labels: masks`).

    python tools/label_images.py --out to_label --per-class 4 [--preset dogs] [--psi 0.7]

Renders `per_class` images of every class with the generator of params.yaml
(`models.generator`, truncated as train_segmenter truncates: its `psi` and the class means
of stage class_means), and writes into `--out`:

- `<class>_<seed>.png`: the image to paint over (RGB, the generator's resolution);
- `samples.csv`: `file,seed,class`, the masks folder's index (masks/README.md), with the
  file names the masks will have (`<class>_<seed>_mask.png`);
- `labels.txt`: the part labels, one per line, 0 = background (from `--preset`, or pass
  `--labels background,cap,stem`).

Paint each image's mask as a single-channel PNG whose pixel value is the label id, save it
under the listed mask name, then copy the masks, samples.csv and labels.txt into masks/ and
set train_segmenter.labels: masks. The seeds are train_segmenter's (`seed_base` + i), so the
pipeline regenerates exactly these images.
"""

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from PIL import Image

from linkstyle.core import cli
from linkstyle.core.errors import UserError
from linkstyle.core.images import to_uint8
from linkstyle.core.runtime import resolve_device
from linkstyle.measure.segmenter_training import FewShotConfig
from linkstyle.models.presets import preset as get_preset
from linkstyle.models.registry import GeneratorSpec, load_generator


def main(out: Path = typer.Option(..., help="folder to write the images, samples.csv and labels.txt into"),
         per_class: int = typer.Option(4, help="images per class (the segmenter needs a handful in all)"),
         preset: Optional[str] = typer.Option(None, help="part labels of a preset: dogs, fungi, birds, cars"),
         labels: Optional[str] = typer.Option(None, help="part labels, comma-separated, background first"),
         class_means: Path = typer.Option(Path("data/class_means.json"), help="stage class_means' output"),
         params: Path = typer.Option(Path("params.yaml"), help="reads models.generator and train_segmenter")):
    if (preset is None) == (labels is None):
        raise UserError("give exactly one of --preset (dogs, fungi, birds, cars) or --labels background,part,...")
    names = list(get_preset(preset, "--preset").part_labels) if preset else [s.strip() for s in labels.split(",")]
    if names[0] != "background" or len(set(names)) != len(names):
        raise UserError(f"--labels: the first label must be background and names distinct, got {names}")
    cfg = cli.section(params, "train_segmenter", FewShotConfig)
    gen = load_generator(cli.section(params, "models.generator", GeneratorSpec),
                         resolve_device(cfg.device, f"{params}: train_segmenter.device"), class_means)
    classes = np.repeat(np.arange(gen.n_classes), per_class)
    seeds = cfg.seed_base + np.arange(len(classes))
    images = to_uint8(gen.synthesize(gen.sample_w(seeds, classes, cfg.psi))).cpu().numpy()
    out.mkdir(parents=True, exist_ok=True)
    rows = ["file,seed,class"]
    for img, s, c in zip(images, seeds, classes):
        stem = f"{gen.class_names[c].replace(' ', '_')}_{s}"
        Image.fromarray(img).save(out / f"{stem}.png")
        rows.append(f"{stem}_mask.png,{s},{c}")
    (out / "samples.csv").write_text("\n".join(rows) + "\n")
    (out / "labels.txt").write_text("\n".join(names) + "\n")
    print(f"label_images: {len(seeds)} images, {len(names)} labels -> {out}; paint <name>_mask.png for each")


if __name__ == "__main__":
    cli.run(main)
