"""How much the headline results move when the built-in models are trained from another seed.

One training draw decides the generator, the classifier and the segmenter, and every number
downstream of them. `headline_metrics` reads the numbers the README states from one run's
result files; `spread_summary` puts several runs, one per training seed, side by side with
their mean, standard deviation, minimum and maximum. A claim is read as holding only where
it holds at every seed (`holds_at_every_seed`). Nothing here runs a pipeline: the runner
(tools/spread.py) hands over the result files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Headline:
    """One headline number: where it is in which result file, and the bar it is held to."""

    name: str
    file: str            # relative to the run's reports folder; {link} is the link kind in use
    path: tuple[str, ...]
    description: str
    bar: float | None = None   # the README's bar (value >= bar), if it states one


HEADLINES = (
    Headline("classifier_accuracy", "classifier.json", ("test_accuracy",), "classifier held-out accuracy", bar=0.95),
    Headline("generated_accuracy_min", "quality.json", ("generated_accuracy_min",),
             "classifier accuracy on generated samples, worst class", bar=0.9),
    Headline("ari_r", "similarity.json", ("ari", "R", "mean"), "ARI of k-means on R with the classes", bar=0.9),
    Headline("ari_w", "similarity.json", ("ari", "W", "mean"), "ARI of k-means on W with the classes", bar=0.9),
    Headline("rsa", "similarity.json", ("rsa_correlation", "W-R", "mean"), "RSA between W and R (correlation)"),
    Headline("link_r2", "link/{link}.json", ("test_r2",), "held-out R² of the link in use", bar=0.8),
    Headline("cycle_class_agreement", "cycle.json", ("class_agreement",), "cycle r -> w -> image: class kept",
             bar=0.9),
    Headline("cycle_r_correlation", "cycle.json", ("r_correlation", "median"), "cycle: correlation of r and r~"),
    Headline("segmenter_vs_ground_truth", "quantify.json", ("segmenter_vs_ground_truth", "pooled"),
             "segmenter against the generator's part maps, pooled", bar=0.9),
    Headline("motion_scale", "motion.json", ("affine_agreement", "scale", "pearson"),
             "motion agreement with the generator: scale"),
    Headline("motion_translation_x", "motion.json", ("affine_agreement", "translation_x", "pearson"),
             "motion agreement with the generator: translation x"),
    Headline("flow_vs_centroids", "motion.json", ("centroid_agreement", "whole", "pearson"),
             "flow against part centroids", bar=0.8),
    Headline("transfer", "tuning.json", ("unit_transfer_median",), "median transfer of the faithful sweep", bar=0.5),
    Headline("off_target", "tuning.json", ("off_target_median",), "median off-target change of the faithful sweep"),
    Headline("counterfactual_success", "counterfactuals.json", ("success_rate",), "counterfactuals that flip",
             bar=0.9),
)


def _dig(data: dict, path: tuple[str, ...], where: str) -> float:
    node = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"{where}: no {'.'.join(path)} (stopped at {key!r}); was the run complete?")
        node = node[key]
    return float(node)


def headline_metrics(reports: Path, link: str) -> dict[str, float]:
    """{headline name: value} from one run's reports folder."""
    out: dict[str, float] = {}
    cache: dict[Path, dict] = {}
    for h in HEADLINES:
        path = reports / h.file.format(link=link)
        if path not in cache:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; the run did not reach the stage that writes it")
            cache[path] = json.loads(path.read_text())
        out[h.name] = _dig(cache[path], h.path, str(path))
    return out


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    # Sample standard deviation (n - 1): the seeds are a sample of the training draws.
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def holds_at_every_seed(values: list[float], bar: float) -> bool:
    return all(v >= bar for v in values)


def spread_summary(per_seed: dict[int, dict[str, float]]) -> dict:
    """{"training_seeds": {"seeds": [...], "metrics": {name: {per_seed, mean, std, min, max, ...}}}}."""
    if not per_seed:
        raise ValueError("spread_summary: no runs given")
    seeds = sorted(per_seed)
    metrics = {}
    for h in HEADLINES:
        values = [per_seed[s][h.name] for s in seeds]
        entry = {"description": h.description, "per_seed": {str(s): v for s, v in zip(seeds, values)},
                 **_stats(values)}
        if h.bar is not None:
            entry["bar"] = h.bar
            entry["holds_at_every_seed"] = holds_at_every_seed(values, h.bar)
        metrics[h.name] = entry
    return {"training_seeds": {"seeds": seeds, "metrics": metrics}}
