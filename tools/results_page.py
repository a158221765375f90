"""Write docs/results.md and the README figure from the pipeline's result files.

    python tools/results_page.py            # after `dvc repro`; `make run` calls it
    python tools/results_page.py --check    # exit 1 if docs/results.md is not what reports/ gives

Every number on the page is read from `reports/*.json` (and the two CSV tables) when the
script runs, so the page says what the last run wrote. The README figure,
`docs/figures/unit_strip.png`, is one row of `reports/figures/unit_strips.png` (the most
selective unit's render strip with its label line), cut out and downscaled.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import typer

from linkstyle.core import cli  # first: it pins the arithmetic before numpy loads
from linkstyle.analyze.spread import HEADLINES  # noqa: I001
from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "rabbit", "deer", "mouse")


def _f(x, digits: int = 3) -> str:
    """A number as the page prints it: fixed decimals, and no minus sign on a rounded zero."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _bar(value: float, bar: float, higher: bool = True, pct: bool = False) -> str:
    ok = value >= bar if higher else value <= bar
    level = f"{100 * bar:g}%" if pct else f"{bar:g}"
    return f"{'>=' if higher else '<='} {level} ({'met' if ok else '**not met**'})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


class Reports:
    def __init__(self, root: Path):
        self.root = Path(root)

    def json(self, rel: str) -> dict:
        p = self.root / rel
        if not p.is_file():
            raise FileNotFoundError(f"reports/{rel}")
        return json.loads(p.read_text())

    def csv(self, rel: str) -> list[dict]:
        with open(self.root / rel, newline="") as f:
            return list(csv.DictReader(f))

    def links(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in sorted((self.root / "link").glob("*.json"))}


def _source(*files: str) -> str:
    return "Source: " + ", ".join(f"[reports/{f}](../reports/{f})" for f in files) + "."


def world_and_models(r: Reports) -> list[str]:
    """World and models"""
    clf, q, seg, pairs = r.json("classifier.json"), r.json("quality.json"), r.json("segmenter.json"), r.json("pairs.json")
    fr = q["frechet_r"]
    worst = min(q["generated_accuracy"], key=q["generated_accuracy"].get)
    acc = [v for split in pairs["acceptance"].values() for v in split.values()]
    weakest = min(seg["iou"], key=seg["iou"].get)
    rows = [
        ["classifier held-out accuracy", _f(clf["test_accuracy"], 4), _bar(clf["test_accuracy"], 0.95)],
        [f"classifier accuracy on generated samples (psi {q['psi']}), worst class ({worst})",
         _f(q["generated_accuracy_min"]), _bar(q["generated_accuracy_min"], 0.90)],
        ["Fréchet distance in R: real vs real / real vs generated (psi 1)",
         f"{_f(fr['real_vs_real'])} / {_f(fr['real_vs_generated_psi1'])}", "reported"],
        ["pair acceptance rate (kept / drawn), lowest class and split", _f(min(acc)), "reported"],
        [f"few-shot segmenter ({seg['n_shots']} shots), held-out mean IoU vs the generator's part maps",
         f"{_f(seg['mean_iou'])} (lowest part: {weakest} {_f(seg['iou'][weakest])})", "reported"],
    ]
    return (["## 1. World and models", ""] + _table(["measure", "value", "bar"], rows)
            + [_source("classifier.json", "quality.json", "pairs.json", "segmenter.json"), ""])


def similarity(r: Reports) -> list[str]:
    """Do W and R organise images alike?"""
    s = r.json("similarity.json")
    ari, rsa = s["ari"], s["rsa_correlation"]
    rows = [
        ["ARI of k-means in W / in R", f"{_f(ari['W']['mean'])} / {_f(ari['R']['mean'])}", _bar(min(ari["W"]["mean"], ari["R"]["mean"]), 0.9)],
        ["ARI controls: shuffled labels / random projection",
         f"{_f(ari['control_shuffled']['mean'])} / {_f(ari['control_random']['mean'])}", "about 0"],
        ["RSA W-R (correlation matrices), 95% CI of the mean",
         f"{_f(rsa['W-R']['mean'])} [{_f(rsa['W-R']['ci95_low'])}, {_f(rsa['W-R']['ci95_high'])}]", "reported"],
        ["RSA controls: shuffled / random projection",
         f"{_f(rsa['control_shuffled']['mean'])} / {_f(rsa['control_random']['mean'])}", "about 0"],
    ]
    return (["## 2. Do W and R organise images alike?", "",
             f"Means over {ari['W']['n']} repetitions of 100 training pairs per class.", ""]
            + _table(["measure", "value", "bar"], rows) + [_source("similarity.json"), ""])


def link(r: Reports) -> list[str]:
    """The link from R to W"""
    links, cyc = r.links(), r.json("cycle.json")
    rows = [[f"`{k}`" + (" (INN at v = 0)" if k == "inn" else ""), _f(v["test_r2"]), _f(v["train_r2"]),
             _bar(v["test_r2"], 0.8)] for k, v in links.items()]
    out = ["## 3. The link from R to W", "", "Held-out R² of w from r, per link kind:", ""]
    out += _table(["link", "test R²", "train R²", "bar"], rows)
    cyc_rows = [
        ["the classifier gives I~ the class of I", _f(cyc["class_agreement"]), _bar(cyc["class_agreement"], 0.90)],
        ["1 - SSIM(I, I~), mean; unrelated same-class pairs",
         f"{_f(cyc['ssim_distance']['mean'])}; {_f(cyc['ssim_distance_baseline']['mean'])}", "lower than the baseline"],
        ["part-map IoU of G(w) and G(w~), mean; unrelated same-class pairs",
         f"{_f(cyc['part_iou']['mean'])}; {_f(cyc['part_iou_baseline']['mean'])}", "higher than the baseline"],
        ["corr(r, r~), mean; unrelated same-class pairs",
         f"{_f(cyc['r_correlation']['mean'])}; {_f(cyc['r_correlation_baseline']['mean'])}", "reported"],
    ]
    out += [f"The cycle I -> r -> w~ -> I~ through the `{cyc['link']}` link, {_f(cyc['n_pairs'])} held-out pairs:", ""]
    out += _table(["measure", "value", "bar"], cyc_rows)
    return out + [_source(*(f"link/{k}.json" for k in links), "cycle.json"), ""]


def invariances(r: Reports) -> list[str]:
    """What the classifier cannot see"""
    inn, inv = r.json("link/inn.json"), r.json("invariances.json")
    rows = [
        ["NLL of w given r, nats per dim: INN / Gaussian around its mean link / Gaussian around ridge",
         f"{_f(inn['test_nll'])} / {_f(inn['test_nll_gaussian_mean'])} / {_f(inn['test_nll_gaussian_ridge'])}"],
        ["share of w's variance that r leaves open", _f(inn["test_sample_var_share"])],
        ["calibration: mean \\|v\\|² per dim of encoded test pairs (1 = calibrated)", _f(inn["test_v_sq_per_dim"])],
        ["cos(r~, r) of the samples; other test images of the class",
         f"{_f(inv['cosine_to_r']['mean'])}; {_f(inv['cosine_to_r_baseline_same_class']['mean'])}"],
        ["samples closer to r than the class's nearest test image", _pct(inv["cosine_above_nearest_fraction"])],
        ["samples the classifier gives the seed's class", _pct(inv["class_agreement"])],
        ["per-pixel std across the samples (8-bit); across the class",
         f"{_f(inv['pixel_std']['mean'], 1)}; {_f(inv['pixel_std_baseline_same_class']['mean'], 1)}"],
        ["1 - SSIM between samples; between unrelated images of the class",
         f"{_f(inv['ssim_distance_between_samples']['mean'])}; {_f(inv['ssim_distance_baseline_same_class']['mean'])}"],
    ]
    out = ["## 4. What the classifier cannot see", "",
           f"{inv['n_samples']} samples of w given r for each of {inv['n_seeds']} test images:", ""]
    out += _table(["measure", "value"], rows)
    factors = sorted((f for f in inv["factors"] if not f.get("skipped")), key=lambda f: -f["ratio"])
    frows = [[f"{f['part']} {f['metric']}", _f(f["ratio"], 2),
              f"{_f(min(f['ratio_per_class'].values()), 2)}-{_f(max(f['ratio_per_class'].values()), 2)}",
              "yes" if f["invariant"] else "no"] for f in factors]
    out += ["Per factor: its std among images with the same r over its std across the class "
            "(1 = r leaves it free, 0 = r fixes it):", ""]
    out += _table(["factor", "ratio", "range over classes", "invariant"], frows)
    return out + [_source("link/inn.json", "invariances.json"), ""]


def units(r: Reports) -> list[str]:
    """What single units encode"""
    t, a, qn = r.json("tuning.json"), r.json("analysis.json"), r.json("quantify.json")
    sg = qn["segmenter_vs_ground_truth"]
    per = sg["per_metric"]
    shapes = [m for m in ("cx", "width", "height", "eccentricity", "angle") if m in per]
    parts = ", ".join(f"{p} {n}" for p, n in sorted(a["units_per_part"].items(), key=lambda kv: -kv[1]))
    rows = [
        ["renders in the sweep (units x seeds x steps)",
         f"{_f(t['n_renders'])} ({t['n_units']} x {t['n_seeds']} x {t['n_steps']})", "reported"],
        ["segmenter vs ground-truth part changes, pooled Pearson over " + ", ".join(sg["pooled_metrics"]),
         _f(sg["pooled"]), _bar(sg["pooled"], 0.9)],
        ["the same per metric: " + ", ".join(sg["pooled_metrics"]),
         ", ".join(_f(per[m], 2) for m in sg["pooled_metrics"]), "reported"],
        ["the same for region shapes: " + ", ".join(shapes),
         ", ".join(_f(per[m], 2) for m in shapes) + f" (all {len(per)} metrics pooled: {_f(sg['pooled_all'], 2)})",
         "reported"],
        ["median Hoyer label sparsity: " + ", ".join(a["metrics"]),
         " / ".join(_f(a["sparsity"][m]["median"], 2) for m in a["metrics"]), "reported"],
        [f"units whose strongest part is the same for >= {a['consistent_at']:.0%} of seeds",
         _pct(a["consistent_fraction"]), "reported"],
        ["units by strongest part", parts, "reported"],
        [f"median share of the set change that reaches r~ of the render ({t['mode'].replace('_', ' ')}); off-target",
         f"{_f(t['unit_transfer_median'])}; {_f(t['off_target_median'])}",
         _bar(t["unit_transfer_median"], 0.5) if t["unit_transfer_median"] is not None else "n/a"],
        [f"units unreachable, left out of the labels (median transfer below {_f(t.get('min_transfer'), 2)}, "
         "no gradient, or constant)", _unreachable(t), "reported"],
    ]
    return (["## 5. What single units encode", ""] + _table(["measure", "value", "bar"], rows)
            + ["![The most selective units per part: renders across steps](../reports/figures/unit_strips.png)", "",
               _source("tuning.json", "analysis.json", "quantify.json", "units.csv"), ""])


def _unreachable(t: dict) -> str:
    """The unreachable units of a tuning run, with their reasons ("n/a" for a run from before they were counted)."""
    if "unreachable_units" not in t:
        return "n/a"
    why = ", ".join(f"{reason} {n}" for reason, n in t["unreachable_by_reason"].items() if n)
    return f"{t['unreachable_units']} of {t['n_units']}" + (f" ({why})" if why else "")


def faithfulness(r: Reports) -> list[str]:
    """Does the render carry the set unit?"""
    o, c, m = r.json("tuning_open.json"), r.json("tuning.json"), r.json("tuning_modes.json")
    rows = [[f"{x['mode'].replace('_', ' ')} (`{stage}`, {x['n_units']} units)",
             f"{_f(x['unit_transfer_median'])} ({_f(x['unit_transfer_q25'], 2)} to {_f(x['unit_transfer_q75'], 2)})",
             _pct(x["transfer_above_half_fraction"]), _f(x["off_target_median"]), _f(x["unit_corr_median"], 2),
             _unreachable(x)]
            for x, stage in ((o, "tune_units_open"), (c, "tune_units"))]
    out = ["## 6. Does the render carry the set unit?", "",
           "Medians over (unit, seed). Transfer: the share of the set change that comes back in r~ of the render; "
           "off-target: how far the other units move, per set change; corr: whether r~ follows the setting. "
           "`tune_units` is the faithful sweep every other section reads; `tune_units_open` the paper's open "
           "loop through the link, on the same units, seeds and set values.", ""]
    out += _table(["mode", "transfer (IQR)", "transfer >= 0.5", "off-target", "corr", "unreachable"], rows)
    ol, cl = m["open_loop"], m["closed_loop"]
    out += [f"Side by side on the same {m['n_units']} units (per-unit medians, `compare_tuning`): transfer "
            f"{_f(ol['transfer'])} open vs {_f(cl['transfer'])} closed, off-target {_f(ol['off_target'])} vs "
            f"{_f(cl['off_target'])}; the closed loop has the higher transfer on "
            f"{_pct(m['transfer_higher_closed_loop_fraction'])} of the units and the lower off-target on "
            f"{_pct(m['off_target_lower_closed_loop_fraction'])}.", ""]
    if m.get("label_changes") is None:
        out += [f"Top labels not compared: {m.get('label_note', 'no labels in reports/tuning_modes.json')}.", ""]
    else:
        out += [f"The top label (part and measure, from the generator's part maps) differs between the modes on "
                f"{m['label_changes']} of {m['n_units']} units ({_pct(m['label_change_fraction'])}); "
                "[reports/tuning_label_changes.csv](../reports/tuning_label_changes.csv) lists them.", ""]
    return out + [_source("tuning_open.json", "tuning.json", "tuning_modes.json"), ""]


def attribution(r: Reports) -> list[str]:
    """The link beside the usual feature visualisations"""
    a = r.json("attribution.json")
    family = {row["method"]: row["family"] for row in r.csv("attribution/summary.csv") if row.get("family")}
    order = [m for m in ("occlusion", "deconvnet", "guided_backprop", "lrp", "am_pixel", "am_latent", "link")
             if m in a["methods"]] + sorted(set(a["methods"]) - {"occlusion", "deconvnet", "guided_backprop", "lrp",
                                                                   "am_pixel", "am_latent", "link"})
    rows = []
    for name in order:
        m = a["methods"][name]
        s = m["selective"]
        rows.append([f"`{name}` ({family.get(name, 'the link' if name == 'link' else '')})",
                     f"{_f(s['part_mass'])} / {_f(s['chance'])}",
                     f"{s['lift']:+.3f} [{s['lift_lo']:+.3f}, {s['lift_hi']:+.3f}]",
                     f"{_f(s['pointing'], 2)} / {_f(s['chance'], 2)}",
                     f"{s['units_above_chance']} of {s['n_units']}", _f(m["unit_similarity"], 2),
                     _f(m["sanity"]["similarity_all_random"], 2), "**yes**" if m["sanity"]["flagged"] else "no"])
    out = ["## 7. The link beside the usual feature visualisations", "",
           "Selective units, scored on the generator's part maps (lift = part mass - chance, 95% bootstrap "
           "interval over units; randomisation: rank correlation of the maps with every layer re-initialised, "
           "flagged from 0.5).", ""]
    out += _table(["method (family)", "part mass / chance", "lift [95% CI]", "pointing / chance",
                   "units above chance", "unit similarity", "randomised", "flagged"], rows)
    out += [f"Largest part-mass lift: `{a['best_part_mass']}`; best pointing game: `{a['best_pointing']}`.", ""]
    return out + [_source("attribution.json", "attribution/summary.csv"), ""]


def motion(r: Reports) -> list[str]:
    """What moves"""
    m = r.json("motion.json")
    ca, aa, img = m["centroid_agreement"], m["affine_agreement"], m["image"]
    per_part = ", ".join(f"{p} {_f(v, 2)}" for p, v in sorted(ca["per_part"].items(), key=lambda kv: -kv[1]))
    rows = [
        ["flow vs the generator's part maps: each part's displacement against its centroid shift, Pearson r "
         "(parts but background, x and y pooled)",
         f"{_f(ca['whole']['pearson'])} (Spearman {_f(ca['whole']['spearman'])}; n = {_f(ca['whole']['n'])})",
         _bar(ca["whole"]["pearson"], 0.8)],
        ["the same per part", per_part, "reported"],
        ["local motion alone (the affine taken off both sides)", _f(ca["residual"]["pearson"]), "reported"],
        ["the flow's affine vs one fitted to the part centroids: rotation, translation x / y, scale",
         f"{_f(aa['rotation']['pearson'], 2)}, {_f(aa['translation_x']['pearson'], 2)} / "
         f"{_f(aa['translation_y']['pearson'], 2)}, {_f(aa['scale']['pearson'], 2)}", "reported"],
        ["segmenter vs ground-truth masks, the same motion metrics (pooled Pearson)",
         _f(m["segmenter_vs_ground_truth"]["pooled"]), "reported"],
        ["median over pairs: abs. rotation, abs. zoom, abs. shift x / y; residual motion",
         f"{_f(img['median_abs_rotation'], 1)} deg, {_pct(img['median_abs_scale'])}, "
         f"{_f(img['median_abs_translation_x'], 2)} / {_f(img['median_abs_translation_y'], 2)} px; "
         f"{_f(img['median_abs_motion'], 2)} px", "reported"],
    ]
    return (["## 8. What moves", "", f"{_f(m['n_pairs'])} perturbation pairs, matcher `{m['backend']}`:", ""]
            + _table(["measure", "value", "bar"], rows) + [_source("motion.json"), ""])


def counterfactuals(r: Reports) -> list[str]:
    """What it takes to change the class"""
    c = r.json("counterfactuals.json")
    below = [f"{k.replace('->', ' -> ')} {_pct(v['success_rate'])}" for k, v in sorted(c["per_pair"].items())
             if v["success_rate"] < 1]
    rows = [
        ["trajectories whose render flipped to the target within the step limit",
         f"{_pct(c['success_rate'])} ({round(c['success_rate'] * c['n_trajectories'])} / {c['n_trajectories']})",
         _bar(c["success_rate"], 0.9, pct=True)],
        ["class pairs below 100%", ", ".join(below) or "none", "reported"],
        ["steps of the successes: median / 90th percentile / max",
         f"{_f(c['median_steps'], 1)} / {_f(c['steps_p90'], 1)} / {c['max_steps_taken']}", "reported"],
        ["target probability at the flip, median", _f(c["final_target_probability_median"], 2), "reported"],
        ["cos(L(r), w) at the flip, median; \\|relu(r - s) - r\\| / \\|r\\|, median",
         f"{_f(c['w_cosine_median'], 2)}; {_f(c['relative_r_change_median'], 2)}", "reported"],
    ]
    return (["## 9. What it takes to change the class", "",
             f"{c['n_class_pairs']} ordered class pairs, {c['n_trajectories']} trajectories, "
             f"steps in the `{c['geometry']}` geometry:", ""]
            + _table(["measure", "value", "bar"], rows) + [_source("counterfactuals.json", "counterfactual_units.csv"), ""])


def spread(r: Reports) -> list[str]:
    """Spread over training seeds"""
    s = r.json("spread.json")["training_seeds"]
    seeds = [str(x) for x in s["seeds"]]
    rows = []
    for name in [h.name for h in HEADLINES if h.name in s["metrics"]]:
        m = s["metrics"][name]
        held = ("reported" if "bar" not in m else
                f">= {m['bar']:g} at every seed ({'yes' if m['holds_at_every_seed'] else '**no**'})")
        rows.append([m["description"], " / ".join(_f(m["per_seed"][k]) for k in seeds),
                     f"{_f(m['mean'])} ± {_f(m['std'])}", f"{_f(m['min'])} to {_f(m['max'])}", held])
    overrides = ", ".join(f"`{o}`" for o in s["overrides"]) or "none"
    return (["## Spread over training seeds", "",
             f"The built-in generator, classifier and segmenter retrained under training seeds {', '.join(seeds)} "
             f"(`make spread`), each followed by the stages behind these numbers; overrides for every seed: "
             f"{overrides}. Mean ± sample standard deviation over the seeds; a bar holds only if it holds at every "
             "seed. The numbers measured on the unit sweep (segmenter, motion, transfer, off-target) cover the units "
             "that the overrides leave, so seed 0's can differ from sections 5, 6 and 8.", ""]
            + _table(["measure", f"seed {' / '.join(seeds)}", "mean ± std", "range", "bar"], rows)
            + [_source("spread.json"), ""])


def render(reports: Path) -> str:
    r = Reports(reports)
    lines = ["# Results on the built-in world", "",
             "<!-- Generated by `python tools/results_page.py` from reports/; do not edit by hand. -->", "",
             "What the last `dvc repro` of this repository wrote, section by section in the order of the "
             "report (`reports/index.html`). Every number is read from the result files named under each "
             "table; `python tools/results_page.py` rewrites this page after a run (`make run` does it). "
             "Bars are the quality levels the project holds the default world to. Speed figures come from "
             "`make bench`.", ""]
    for i, part in enumerate((world_and_models, similarity, link, invariances, units, faithfulness, attribution,
                              motion, counterfactuals), 1):
        try:
            lines += part(r)
        except (FileNotFoundError, KeyError) as e:  # a run whose models lack what this section shows
            lines += [f"## {i}. {part.__doc__}", "", f"Not in this run's results (no {e.args[0]}).", ""]
    try:  # not a section of the report: it comes from several runs (`make spread`)
        lines += spread(r)
    except FileNotFoundError:
        lines += ["## Spread over training seeds", "", "Not measured yet: `make spread` writes reports/spread.json.", ""]
    return "\n".join(lines).rstrip() + "\n"


def strip_figure(source: Path, units_csv: Path, dest: Path, width: int = 900) -> int:
    """Cut the row of the most selective strip unit out of the unit-strips figure; returns its unit id.

    The strips figure has one row per unit (label line, seed line, image tiles, tick labels),
    ordered by part and then selectivity, as `linkstyle.analyze.units.strip_selection` picks
    them. Rows are found from the image itself: the tile bands are the pixel rows that are
    mostly non-white, and the widest white gap between two bands separates one row's tick
    labels from the next row's label. The first half of the row's seeds is kept.
    """
    import numpy as np
    from PIL import Image

    img = Image.open(source).convert("RGB")
    a = np.asarray(img)
    ink = (a < 235).any(axis=2)
    dense = ink.mean(axis=1) > 0.5
    bands, start = [], None
    for y, d in enumerate(dense):
        if d and start is None:
            start = y
        elif not d and start is not None:
            bands.append((start, y))
            start = None
    bands = [b for b in bands if b[1] - b[0] > 20]
    with open(units_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    analysis = json.loads((units_csv.parent / "analysis.json").read_text())
    units = _strip_units(rows, analysis["parts"], analysis["strip_units"])
    if len(units) != len(bands):
        raise SystemExit(f"error: {source}: found {len(bands)} strip rows, expected {len(units)}; "
                         "rerun analyze_units")
    # Unreachable units have no label, hence no selectivity; they are never strip units.
    sel = {int(row["unit"]): float(row["selectivity"]) for row in rows if row["selectivity"]}
    chosen = max(range(len(units)), key=lambda i: (sel[units[i]], -i))
    top, bottom = bands[chosen]

    def runs(lo: int, hi: int) -> list[tuple[int, int]]:
        out, s = [], None
        for y in range(lo, hi):
            if ink[y].any() and s is None:
                s = y
            elif not ink[y].any() and s is not None:
                out.append((s, y))
                s = None
        if s is not None:
            out.append((s, hi))
        return out

    def split_at_widest_gap(lo: int, hi: int) -> tuple[int, int]:
        """(end of the ink before, start of the ink after) the widest white gap in [lo, hi)."""
        r = runs(lo, hi)
        if len(r) < 2:
            return (r[0][1], r[0][1]) if r else (lo, hi)
        i = max(range(len(r) - 1), key=lambda k: r[k + 1][0] - r[k][1])
        return r[i][1], r[i + 1][0]

    prev_bottom = bands[chosen - 1][1] if chosen else 0
    # above the band: the previous row's tick labels, a wide gap, this row's label and seed line
    label_top = split_at_widest_gap(prev_bottom, top)[1] if chosen else runs(0, top)[-1][0]
    next_top = bands[chosen + 1][0] if chosen + 1 < len(bands) else a.shape[0]
    crop_bottom = split_at_widest_gap(bottom, next_top)[0]
    # keep the first half of the seeds: cut at the white column gap nearest the middle
    blank = ~ink[top:bottom].any(axis=0)
    gaps = [x for x in range(1, a.shape[1]) if blank[x] and not blank[x - 1]]
    right = min(gaps, key=lambda x: abs(x - a.shape[1] / 2)) if gaps else a.shape[1]
    crop = img.crop((0, max(0, label_top - 4), right, min(a.shape[0], crop_bottom + 4)))
    if crop.width > width:
        crop = crop.resize((width, round(crop.height * width / crop.width)), Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        crop.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    return units[chosen]


def _strip_units(rows: list[dict], parts: list[str], strip_units: list[int]) -> list[int]:
    """The strip figure's units in row order, as analyze_units picks them: per part (in the
    order of `parts`), its most selective units among `strip_units` (ties: lower unit id)."""
    chosen = set(strip_units)
    out = []
    for p in parts:
        best = [row for row in rows if row["strongest_part"] == p and int(row["unit"]) in chosen]
        out += [int(row["unit"]) for row in sorted(best, key=lambda row: (-float(row["selectivity"]), int(row["unit"])))]
    return out


def main(reports: Path = typer.Option(ROOT / "reports", help="folder of the pipeline's result files"),
         out: Path = typer.Option(ROOT / "docs" / "results.md", help="results page to write"),
         figure: Path = typer.Option(ROOT / "docs" / "figures" / "unit_strip.png",
                                     help="README figure to write (one unit's render strip)"),
         check: bool = typer.Option(False, help="write nothing; exit 1 if the results page is out of date")):
    strips = reports / "figures" / "unit_strips.png"
    for need in (reports / "tuning.json", strips, reports / "units.csv"):
        if not need.is_file():  # checked before anything is written: no page from a wrong folder
            raise UserError(f"--reports: {need} is missing; run `dvc repro` first, or point --reports at the "
                            "pipeline's reports folder")
    text = render(reports)
    if check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out} is out of date with {reports}: run python tools/results_page.py", file=sys.stderr)
            raise typer.Exit(1)
        print(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    unit = strip_figure(strips, reports / "units.csv", figure)
    print(f"wrote {out} and {figure} (unit {unit})")


if __name__ == "__main__":
    cli.run(main)
