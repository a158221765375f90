"""Stage fit_link@<kind>: fit one r -> w link kind (linkstyle.link) and score it on held-out pairs."""

from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.checkpoint import fingerprint
from linkstyle.core.io import write_json
from linkstyle.core.runtime import progress_enabled, resolve_device
from linkstyle.link.fit import LINK_KINDS, check_kind, fit_link, link_metrics, predict_w
from linkstyle.link.pairs import load_pairs
from linkstyle.link.store import save_link


def main(kind: str = typer.Option(..., help=f"link kind: one of {', '.join(LINK_KINDS)}"),
         pairs: Path = typer.Option(..., help="pairs HDF5 (stage sample_pairs)"),
         out: Path = typer.Option(..., help="link file to write"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; reads section fit_link.<kind>")):
    check_kind(kind, "--kind")
    cfg = cli.section(params, f"fit_link.{kind}", LINK_KINDS[kind].config)
    dev = resolve_device("cpu")  # closed forms in float64 and a small MLP: CPU, deterministic
    train, test = load_pairs(pairs, "train", ("w", "r")), load_pairs(pairs, "test", ("w", "r"))
    module, info = fit_link(kind, train["r"], train["w"], cfg, device=dev, progress=progress_enabled())
    m = link_metrics(test["w"], predict_w(module, test["r"]))
    fps = {k: train["attrs"][k] for k in ("generator_fingerprint", "classifier_fingerprint")}
    save_link(out, module, {**info, "test": m}, pairs_fingerprint=fingerprint(pairs), **fps)
    table = {"test_mse": m["mse"], "test_r2": m["r2"], "test_r2_mean_over_dims": m["r2_mean_over_dims"],
             "test_r2_min_dim": min(m["r2_per_dim"]), "train_r2": info["train_r2"],
             **({"alpha": info["alpha"]} if "alpha" in info else {}), "test_r2_per_dim": m["r2_per_dim"]}
    write_json(metrics, {"kind": kind, **table})
    print(f"fit_link: {kind} held-out R^2 {m['r2']:.3f} -> {out}")


if __name__ == "__main__":
    cli.run(main)
