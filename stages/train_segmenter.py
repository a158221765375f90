"""Stage train_segmenter: few-shot part segmenter on the generator's own features."""

from pathlib import Path

from linkstyle import cli
from linkstyle.checkpoint import fingerprint
from linkstyle.config import from_params
from linkstyle.fewshot import FewShotConfig, fit_segmenter
from linkstyle.io import read_params, write_json
from linkstyle.segmenter import SegmenterConfig, save_segmenter
from linkstyle.stylegen import load_stylegen


def main(params: Path = Path("params.yaml"), generator: Path = Path("data/generator.pt"),
         out: Path = Path("data/segmenter.pt"), metrics: Path = Path("reports/segmenter.json")):
    sec = dict(read_params(params, "train_segmenter"))
    model_cfg = from_params(SegmenterConfig, sec.pop("model", {}), "train_segmenter.model", str(params))
    cfg = from_params(FewShotConfig, sec, "train_segmenter", str(params))
    gen = load_stylegen(generator, cli.device(cfg.device))
    model, m = fit_segmenter(gen, model_cfg, cfg, progress=cli.progress_enabled())
    save_segmenter(out, model, fingerprint(generator), model.layers, info=m)
    write_json(metrics, m)
    print(f"train_segmenter: {m['n_shots']} shots, held-out mean IoU {m.get('mean_iou', float('nan')):.3f} -> {out}")


if __name__ == "__main__":
    cli.run(main)
