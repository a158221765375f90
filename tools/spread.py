"""Retrain the built-in models under several training seeds and write reports/spread.json.

    python tools/spread.py                  # seeds 0 1 2; `make spread` calls this
    python tools/spread.py --seeds 0 1 2 3 --set tune_units.closed_loop.units_every=8

Each seed runs in its own scratch copy of the pipeline, .spread/seed-<s>/ (a DVC project of
its own, like `make quick`'s), with params.yaml's `train_generator.seed`,
`train_classifier.seed` and `train_segmenter.model.seed` set to s and the `--set`
overrides applied. Only the stages behind the headline numbers run. The copies share this
project's DVC cache, so a stage whose code, inputs and params match a run already made
(seed 0's world and models, after `dvc repro`) is restored from DVC's run cache instead of
run again. A seed whose copy is complete is not rerun; delete .spread/ to start over.

By default the faithful sweep runs on every 4th unit (`tune_units.closed_loop.units_every=4`):
a unit's legs are solved on their own, so the transfer over those units estimates the full
sweep's at a quarter of the time. reports/spread.json records the overrides.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from linkstyle.core import cli
from linkstyle.core.errors import UserError
from linkstyle.core.io import load_yaml, write_json

ROOT = Path(__file__).resolve().parents[1]
SEED_KEYS = ("train_generator.seed", "train_classifier.seed", "train_segmenter.model.seed")
# The stages whose result files hold the headline numbers (linkstyle/analyze/spread.py);
# DVC runs whatever they need.
TARGETS = ("check_models", "similarity", "evaluate_link", "quantify_parts", "quantify_motion", "tune_units",
           "counterfactuals")
COPIED = ("stages", "linkstyle", "masks", "dvc.yaml", ".dvcignore")
DEFAULT_SET = ("tune_units.closed_loop.units_every=4",)


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def set_key(params: dict, dotted: str, value, where: str) -> None:
    """params[a][b][c] = value for dotted 'a.b.c'; the key must exist (a typo is an error)."""
    node = params
    keys = dotted.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise UserError(f"{where}: params has no section {dotted.rsplit('.', 1)[0]!r}; check the key's spelling")
        node = node[key]
    if keys[-1] not in node:
        raise UserError(f"{where}: params has no key {dotted!r}; check its spelling against params.yaml")
    node[keys[-1]] = value


def seed_params(base: dict, seed: int, overrides: list[str]) -> dict:
    import copy

    params = copy.deepcopy(base)
    for key in SEED_KEYS:
        set_key(params, key, seed, f"seed key {key}")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: write it as key=value, e.g. --set tune_units.closed_loop.units_every=4")
        key, value = item.split("=", 1)
        set_key(params, key.strip(), _parse_value(value), f"--set {item}")
    return params


def _dvc(args: list[str], cwd: Path, log=None) -> None:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        raise UserError("dvc not found: run this with the project's environment (`make spread`, or .venv/bin/python)")
    done = subprocess.run([dvc, *args], cwd=cwd, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        why = f"see {log.name}" if log is not None else (done.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"dvc {' '.join(args)} failed in {cwd}: {why}")


def prepare(copy: Path, params: dict, cache: Path) -> None:
    """A scratch DVC project at `copy` with this project's code and the seed's params."""
    import yaml

    copy.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = ROOT / name, copy / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (copy / ".dvc").is_dir():
        _dvc(["init", "-q", "--no-scm"], copy)
        _dvc(["config", "core.analytics", "false"], copy)
    _dvc(["cache", "dir", str(cache)], copy)


def main(seeds: list[int] = typer.Option([0, 1, 2], "--seeds", help="training seeds, at least 2"),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="params overrides key=value for every seed "
                                                  f"(default: {' '.join(DEFAULT_SET)})"),
         params: Path = typer.Option(ROOT / "params.yaml", help="the params every seed starts from"),
         scratch: Path = typer.Option(ROOT / ".spread", help="where the per-seed copies live"),
         out: Path = typer.Option(ROOT / "reports" / "spread.json", help="the spread file to write"),
         keep_code: bool = typer.Option(False, help="run in the seeds' existing copies without refreshing their code "
                                                    "and params (e.g. after adding a target)")):
    from linkstyle.analyze.spread import headline_metrics, spread_summary

    seeds = sorted(set(seeds))
    if len(seeds) < 2:
        raise UserError(f"--seeds {seeds}: a spread needs at least 2 training seeds, e.g. --seeds 0 1 2")
    if not params.is_file():
        raise UserError(f"--params {params}: not found; point it at a params.yaml")
    overrides = list(DEFAULT_SET if set_ is None else set_)
    base = load_yaml(params)
    link = base.get("fit_link", {}).get("use", "ridge")
    cache = ROOT / ".dvc" / "cache"
    per_seed, seconds = {}, {}
    for i, seed in enumerate(seeds):
        copy = scratch / f"seed-{seed}"
        if not (keep_code and (copy / ".dvc").is_dir()):
            prepare(copy, seed_params(base, seed, overrides), cache)
        t0 = time.perf_counter()
        print(f"seed {seed} ({i + 1}/{len(seeds)}): dvc repro in {copy} (log: {copy / 'repro.log'})", flush=True)
        with open(copy / "repro.log", "w") as log:
            _dvc(["repro", *TARGETS], copy, log)
        # Summed over every run in this copy, so a rerun that only adds a target keeps the full cost.
        spent = copy / "seconds.txt"
        total = (float(spent.read_text()) if spent.is_file() else 0.0) + time.perf_counter() - t0
        spent.write_text(f"{total:.1f}\n")
        seconds[str(seed)] = round(total, 1)
        try:
            per_seed[seed] = headline_metrics(copy / "reports", link)
        except (FileNotFoundError, KeyError) as e:  # a stage that wrote less than its code says
            raise UserError(f"seed {seed}: {e.args[0]}; rerun with the copy deleted ({copy})") from None
        print(f"seed {seed}: {seconds[str(seed)]:.0f} s; " +
              ", ".join(f"{k} {v:.3f}" for k, v in per_seed[seed].items()), flush=True)
    summary = spread_summary(per_seed)
    summary["training_seeds"].update({
        "seed_keys": list(SEED_KEYS), "overrides": overrides, "link": link, "seconds_per_seed": seconds,
        "note": "seconds_per_seed: dvc repro in the seed's copy, all runs summed; stages restored from DVC's "
                "run cache (seed 0's world and models after a dvc repro here) take seconds"})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
