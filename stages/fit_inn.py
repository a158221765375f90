"""Stage fit_inn: the INN link, a conditional density of w given r, scored on held-out pairs (linkstyle.link.inn)."""

import time
from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.checkpoint import fingerprint
from linkstyle.core.io import write_curves, write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.link.inn import INNConfig, evaluate_inn, fit_inn, save_inn
from linkstyle.link.pairs import load_pairs


def main(pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         out: Path = typer.Option(..., help="INN file to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write, in the link kinds' format (reports/link/)"),
         curves: Path = typer.Option(..., help="NLL per epoch, TSV for dvc plots"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section fit_inn")):
    cfg = cli.section(params, "fit_inn", INNConfig)
    resolve_device("cpu")  # a small network fitted with one thread, deterministic (docs/method.md D10)
    train, test = load_pairs(pairs, "train", ("w", "r")), load_pairs(pairs, "test", ("w", "r", "seed"))
    wall, cpu = time.perf_counter(), time.process_time()
    inn, info = fit_inn(train["r"], train["w"], cfg, progress=progress_enabled())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scores = evaluate_inn(inn, train, test, cfg)
    fps = {k: train["attrs"][k] for k in ("generator_fingerprint", "classifier_fingerprint")}
    rows = [row for row in info.pop("curves") if row["epoch"] > 0]
    save_inn(out, inn, {**info, "test": scores}, pairs_fingerprint=fingerprint(pairs), **fps)
    # Same params, same bytes: times go to the summary line only, never into an output.
    write_json(metrics, {**scores, "fit": info})
    write_curves(curves, {k: [row[k] for row in rows] for k in ("train_nll", "val_nll")})
    print(f"fit_inn: held-out NLL {scores['test_nll']:.3f} nats/dim (Gaussian around ridge "
          f"{scores['test_nll_gaussian_ridge']:.3f}), R^2 at v = 0 {scores['test_r2']:.3f}; "
          f"{info['epochs_run']} epochs in {wall:.0f} s ({cpu:.0f} s CPU) -> {out}")


if __name__ == "__main__":
    cli.run(main)
