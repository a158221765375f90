"""Export generated images to label by hand, for the few-shot segmenter (`train_segmenter.labels: masks`).

    python tools/label_images.py --out to_label --per-class 4 --preset dogs

Renders `per_class` images of every class with the generator of params.yaml
(`models.generator`, truncated as train_segmenter truncates: its `psi`, set in params.yaml,
and the class means of stage class_means; where that stage has not run yet, the means are
computed here as it computes them, from the `class_means` section), and writes into `--out`:

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

from linkstyle.core import cli  # first: pins the CPU arithmetic before numpy loads

import numpy as np  # noqa: E402
import typer  # noqa: E402
from PIL import Image  # noqa: E402

from linkstyle.core.errors import UserError  # noqa: E402
from linkstyle.core.images import to_uint8  # noqa: E402
from linkstyle.core.runtime import resolve_device  # noqa: E402
from linkstyle.measure.segmenter_training import FewShotConfig  # noqa: E402
from linkstyle.models.class_means import ClassMeansConfig  # noqa: E402
from linkstyle.models.class_means import class_means as compute_class_means  # noqa: E402
from linkstyle.models.presets import preset as get_preset  # noqa: E402
from linkstyle.models.registry import GeneratorSpec, load_generator  # noqa: E402


def main(out: Path = typer.Option(..., help="folder to write the images, samples.csv and labels.txt into"),
         per_class: int = typer.Option(4, help="images per class (the segmenter needs a handful in all)"),
         preset: Optional[str] = typer.Option(None, help="part labels of a preset: dogs, fungi, birds, cars"),
         labels: Optional[str] = typer.Option(None, help="part labels, comma-separated, background first"),
         class_means: Path = typer.Option(Path("data/class_means.json"),
                                          help="stage class_means' output; computed here where it is missing"),
         params: Path = typer.Option(Path("params.yaml"), help="reads models.generator and train_segmenter")):
    # Checked first: 0 would write an empty samples.csv and a negative count fail deep in numpy.
    if per_class < 1:
        raise UserError(f"--per-class: must be at least 1 (images of each class to label), got {per_class}")
    if (preset is None) == (labels is None):
        raise UserError("give exactly one of --preset (dogs, fungi, birds, cars) or --labels background,part,...")
    names = list(get_preset(preset, "--preset").part_labels) if preset else [s.strip() for s in labels.split(",")]
    if names[0] != "background" or len(set(names)) != len(names):
        raise UserError(f"--labels: the first label must be background and names distinct, got {names}")
    cfg = cli.section(params, "train_segmenter", FewShotConfig)
    spec = cli.section(params, "models.generator", GeneratorSpec)
    device = resolve_device(cfg.device, f"{params}: train_segmenter.device")
    if class_means.is_file():
        gen = load_generator(spec, device, class_means)
    else:
        gen = load_generator(spec, device)
        means, source = compute_class_means(gen, cli.section(params, "class_means", ClassMeansConfig), progress=False)
        gen.set_class_means(means)
        how = "taken from the checkpoint" if source["source"] == "checkpoint" else "estimated here"
        print(f"label_images: {class_means} not found; class means {how}, as stage class_means does")
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
