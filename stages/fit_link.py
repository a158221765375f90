"""Stage fit_link: fit r -> w links (OLS, ridge with CV, optional MLP) and compare them."""

from pathlib import Path

from linkstyle import cli
from linkstyle.io import write_json
from linkstyle.link import LinkConfig, fit_links, link_metrics, predict_w, save_link
from linkstyle.pairs import load_pairs


def main(params: Path = Path("params.yaml"), pairs: Path = Path("data/pairs.h5"),
         out_dir: Path = Path("data/links"), metrics: Path = Path("reports/link.json")):
    cfg = cli.section(params, "fit_link", LinkConfig)
    dev = cli.device("cpu")
    train, test = load_pairs(pairs, "train", ("w", "r")), load_pairs(pairs, "test", ("w", "r"))
    links = fit_links(train["r"], train["w"], cfg, device=dev, progress=cli.progress_enabled())
    table = {}
    for kind, (module, info) in links.items():
        m = link_metrics(test["w"], predict_w(module, test["r"]))
        save_link(out_dir / f"{kind}.pt", module, kind, {**info, "test": m})
        table[kind] = {"test_mse": m["mse"], "test_r2": m["r2"], "test_r2_mean_over_dims": m["r2_mean_over_dims"],
                       "test_r2_min_dim": min(m["r2_per_dim"]), "train_r2": info["train_r2"],
                       **({"alpha": info["alpha"]} if "alpha" in info else {})}
        table[kind]["test_r2_per_dim"] = m["r2_per_dim"]
    write_json(metrics, {"primary": cfg.primary, "kinds": table})
    print("fit_link: held-out R^2 " + ", ".join(f"{k} {v['test_r2']:.3f}" for k, v in table.items()) + f" -> {out_dir}")


if __name__ == "__main__":
    cli.run(main)
