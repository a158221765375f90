"""The analysis as one page, in the paper's order: world and models, W-R similarity, the
link, units, motion, and where it all came from.

Each section names the result files it reads (`SECTIONS`, paths relative to the reports
folder), so the report stage's DVC deps are exactly `report_inputs()`; a test holds
dvc.yaml to that list. Sections read results and format them; the only figure made here
is the training curves, drawn from the curves TSVs the training stages wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import yaml
from matplotlib.figure import Figure as MplFigure

from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path
from linkstyle.report.html import Figure, Number, Page, Section, Table, render_page

__all__ = ["SECTIONS", "report_inputs", "build_page", "write_report", "md5_of"]


@dataclass(frozen=True)
class SectionSpec:
    id: str
    files: tuple[str, ...]  # relative to the reports folder; a folder ends in "/"
    build: Callable[["Results"], Section]


class Results:
    """Read access to the reports folder, with one-line errors naming the missing file."""

    def __init__(self, root: Path, params: dict | None = None):
        self.root = Path(root)
        self.params = params or {}  # the sections the report shows (models: what the world section names)

    def path(self, rel: str) -> Path:
        p = self.root / rel
        if not p.exists():
            raise UserError(f"{p}: missing; run the stage that writes it (`dvc repro`) before the report")
        return p

    def json(self, rel: str) -> dict:
        try:
            return json.loads(self.path(rel).read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{self.root / rel}: not valid JSON ({e.msg}, line {e.lineno}); rerun its stage") from None

    def png(self, rel: str) -> bytes:
        data = self.path(rel).read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise UserError(f"{self.root / rel}: not a PNG image; rerun the stage that draws it")
        return data

    def figure(self, rel: str, caption: str) -> Figure:
        return Figure(self.png(rel), caption, alt=Path(rel).stem.replace("_", " "))


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _curves_png(res: Results, names: Sequence[str]) -> bytes:
    fig = MplFigure(figsize=(3.2 * len(names), 2.6), layout="constrained")
    for i, name in enumerate(names):
        df = pd.read_csv(res.path(f"curves/{name}.tsv"), sep="\t")
        ax = fig.add_subplot(1, len(names), i + 1)
        for col in df.columns[1:]:
            ax.plot(df["epoch"], df[col], label=col, lw=1.4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


NO_PART_MAPS = "the generator draws no part maps to check against"
PART_SOURCE = {"generator": "the generator's own part maps",
               "segmenter": "the few-shot segmenter's masks (the generator draws no part maps)"}


def _segmenter_number(seg: dict) -> Number:
    """Held-out IoU where the generator has part maps to score against; trained on masks
    without them, only the fit to the labelled images exists."""
    if "mean_iou" in seg:
        return Number("segmenter mean IoU", _f(seg["mean_iou"]), f"from {seg['n_shots']} labelled images")
    return Number("segmenter pixel accuracy on its labelled images", _pct(seg["train_pixel_accuracy"]),
                  f"{seg['n_shots']} labelled images; no part maps to score held-out images against")


def _skipped(doc: dict) -> bool:
    """A training stage's note that it had nothing to train (the user's own model; linkstyle.core.skipping)."""
    return "skipped" in doc


def _model_row(role: str, spec: dict, fp: str) -> tuple[str, str, str, str]:
    kind = spec.get("kind", "builtin")
    what = spec.get("arch") or spec.get("factory") or ("network pickle" if kind == "stylegan" else "trained here")
    return role, f"{kind}: {what}", str(spec.get("path") or "-"), fp


def _world(res: Results) -> Section:
    """The models and their quality bars: the built-in world's, or the user's own models with
    their provenance (what trained nothing here has no curves and no held-out test set)."""
    clf, q, seg, pairs = (res.json(f) for f in ("classifier.json", "quality.json", "segmenter.json", "pairs.json"))
    gen_doc = res.json("generator.json")
    own_gen, own_clf = _skipped(gen_doc), _skipped(clf)
    fr = q["frechet_r"]
    numbers = []
    if own_clf:
        acc = (q.get("real_images") or {}).get("accuracy")
        numbers.append(Number("classifier accuracy on your real images", _pct(min(acc.values())),
                              f"worst class; {q['n_units']} units in R") if acc else
                       Number("units in R", str(q["n_units"]), "no real images to test the classifier on"))
    else:
        numbers.append(Number("classifier test accuracy", _pct(clf["test_accuracy"]), f"{clf['n_units']} units in R"))
    numbers.append(Number("generated images classified as their class", _pct(q["generated_accuracy_min"]),
                          "worst class; the generator draws each class recognisably"))
    if fr:
        gen_key = next(k for k in fr if k.startswith("real_vs_generated_psi") and k != "real_vs_generated_psi1")
        numbers.append(Number(f"Fréchet distance in R, ψ = {gen_key.removeprefix('real_vs_generated_psi')}",
                              _f(fr[gen_key]), f"real vs real: {_f(fr['real_vs_real'])}"))
    else:
        numbers.append(Number("Fréchet distance in R", "skipped",
                              "no real images: one folder of images per class in models.real_images"))
    numbers.append(_segmenter_number(seg))
    curves = tuple(name for name, own in (("generator", own_gen), ("classifier", own_clf), ("segmenter", False))
                   if not own)
    figures = [res.figure("figures/generated_samples.png",
                          "Generated samples per class. Look for clean parts and class-typical shapes and "
                          "colours: the link can only explain what G can draw.")]
    figures.append(Figure(_curves_png(res, curves),
                          "Training curves. Each should flatten; a rising test curve would mean over-fitting.",
                          alt="training curves"))
    tables = ()
    if own_gen or own_clf:
        models = res.params.get("models") or {}
        rows = (_model_row("generator", models.get("generator") or {}, pairs["generator_fingerprint"]),
                _model_row("classifier", models.get("classifier") or {}, pairs["classifier_fingerprint"]))
        tables = (Table(("model", "kind", "file", "sha256 (first 16)"), rows,
                        caption="The models this report explains (params.yaml models); the pairs file records "
                                "the same fingerprints."),)
        intro = ("Your own models: " + " and ".join(r for r, own in (("the generator", own_gen), ("the classifier", own_clf))
                                                     if own) +
                 " come from your files, and nothing was trained for them here. The few-shot segmenter labels parts "
                 "on renders. Everything downstream rests on these being good enough.")
    else:
        intro = ("A procedural world of animals drawn part by part, a generator trained on it that draws its own "
                 "part maps, a classifier whose penultimate layer R we explain, and a few-shot segmenter that "
                 "labels parts on renders. Everything downstream rests on these being good enough.")
    return Section("world", "World and models", intro,
                   numbers=tuple(numbers), tables=tables, figures=tuple(figures))


def _similarity(res: Results) -> Section:
    s = res.json("similarity.json")
    ari, rsa = s["ari"], s["rsa_correlation"]
    return Section(
        "similarity", "Do W and R organise images alike?",
        "Before linking the two spaces we ask whether they agree: how well k-means clusters recover the "
        "classes in each (ARI), and whether distances between images correlate across spaces (RSA). "
        "Controls with shuffled pairs must sit near zero.",
        numbers=(
            Number("ARI in W", _f(ari["W"]["mean"]), f"95% CI {_f(ari['W']['ci95_low'])}-{_f(ari['W']['ci95_high'])}"),
            Number("ARI in R", _f(ari["R"]["mean"]), f"95% CI {_f(ari['R']['ci95_low'])}-{_f(ari['R']['ci95_high'])}"),
            Number("RSA W-R (correlation distance)", _f(rsa["W-R"]["mean"]),
                   f"shuffled control {_f(rsa['control_shuffled']['mean'])}"),
        ),
        figures=(res.figure("figures/similarity.png",
                            "ARI and RSA with their bootstrap spread. The W-R bars should stand well clear "
                            "of the controls."),))


def _link(res: Results) -> Section:
    rows = []
    for p in sorted(res.path("link/").glob("*.json")):
        m = res.json(f"link/{p.name}")
        rows.append((m.get("kind", p.stem), _f(m["test_r2"]), _f(m["train_r2"]), _f(m["test_mse"], 4)))
    if not rows:
        raise UserError(f"{res.root / 'link'}: no link metrics; run the fit_link stages before the report")
    c = res.json("cycle.json")
    return Section(
        "link", "The link from R to W",
        "A network L maps a classifier representation r to the generator latent w that drew the image. "
        "Held-out R² says how much of w the classifier's representation determines; the cycle "
        "image -> r -> w~ -> image~ says whether the renders keep what the classifier sees.",
        numbers=(
            Number(f"cycle 1 - SSIM ({c['link']})", _f(c["ssim_distance"]["mean"]),
                   f"unrelated same-class images: {_f(c['ssim_distance_baseline']['mean'])}"),
            Number("cycle part IoU", _f(c["part_iou"]["mean"]), f"baseline {_f(c['part_iou_baseline']['mean'])}")
            if "part_iou" in c else Number("cycle part IoU", "-", NO_PART_MAPS),
            Number("corr(r, r~) after the cycle", _f(c["r_correlation"]["mean"]),
                   f"baseline {_f(c['r_correlation_baseline']['mean'])}"),
            Number("class kept through the cycle", _pct(c["class_agreement"])),
        ),
        tables=(Table(("link", "test R²", "train R²", "test MSE"), rows,
                      caption="Every fitted link kind on held-out pairs."),),
        figures=(res.figure("figures/cycle.png",
                            "Originals (top) and their cycle renders (bottom). Look for the same pose, parts "
                            "and colours; fine texture may differ."),))


def _opt(x, digits: int = 3) -> str:
    """A number that may be missing (null in the metrics: nothing to measure)."""
    return "-" if x is None else _f(x, digits)


def _label(part, metric) -> str:
    return f"{part} {metric}" if isinstance(part, str) and isinstance(metric, str) else "none"


def _units(res: Results) -> Section:
    t, a = res.json("tuning.json"), res.json("analysis.json")
    table = pd.read_csv(res.path("units.csv"))
    need = {"unit", "strongest_part", "metric", "selectivity", "consistency", "cluster"}
    if not need <= set(table.columns):
        raise UserError(f"{res.root / 'units.csv'}: lacks columns {sorted(need - set(table.columns))}; "
                        "rerun analyze_units")
    if "reachable" not in table:  # written before units could be unreachable
        table = table.assign(reachable=True, unreachable_reason="")
    table = table.assign(gone=~table["reachable"].astype(bool))
    table = table.sort_values(["gone", "selectivity", "unit"], ascending=[True, False, True], kind="stable",
                              na_position="last")
    rows = []
    for r in table.itertuples():
        if r.gone:  # no label: the renders do not show the unit
            rows.append((str(int(r.unit)), "unreachable", str(r.unreachable_reason), "-", "-", "-"))
        else:
            rows.append((str(int(r.unit)), r.strongest_part if isinstance(r.strongest_part, str) else "none",
                         r.metric if isinstance(r.metric, str) else "-", _f(r.selectivity, 2), _f(r.consistency, 2),
                         "-" if pd.isna(r.cluster) else str(int(r.cluster))))
    closed = t.get("mode", "open_loop") == "closed_loop"
    how = ("w is solved through the generator and the classifier so that the render carries the set value "
           "(closed loop, the faithful sweep)" if closed else
           "the link maps each edited r to w (open loop, the paper's method)")
    floor = t.get("min_transfer")
    n_out = t.get("unreachable_units", 0)
    why = ", ".join(f"{n} {k}" for k, n in t.get("unreachable_by_reason", {}).items() if n) or "every unit moved"
    return Section(
        "units", "What single units encode",
        f"Each unit of R is set from its low to its high value while the others stay, {how}, the generator "
        "renders each step, and the segmenter measures what changed per part. A unit's label is the part and "
        "measure that changed most consistently across seeds. A unit the sweep could not move (constant over "
        "the seeds, no gradient at any seed, or a median transfer below "
        f"{'the floor' if floor is None else _f(floor, 2)}) is unreachable: its renders do not show it, so it "
        "gets no label and counts in no statistic below.",
        numbers=(
            Number("units tuned", str(t["n_units"]),
                   f"{t['n_seeds']} seeds x {t['n_steps']} steps, {t.get('mode', 'open_loop').replace('_', ' ')}"),
            Number("transfer to the re-encoded r", _opt(t["unit_transfer_median"]),
                   f"median share of the set change that reaches r~; off-target {_opt(t.get('off_target_median'), 2)}"),
            Number("unreachable units", str(n_out), why),
            Number("consistent units", "-" if a["consistent_fraction"] is None else _pct(a["consistent_fraction"]),
                   f"of the labelled units, same direction in >= {_pct(a['consistent_at'])} of seeds"),
            Number("clusters of units", str(a["n_clusters"]),
                   f"ARI with the labelled parts {_opt(a['cluster_part_ari'])}"),
        ),
        figures=(
            res.figure("figures/unit_strips.png",
                       "The most selective units: each row sweeps one unit. Look at the labelled part; "
                       "everything else should stay."),
            res.figure("figures/sparsity.png", "How many parts and measures a unit touches, per class: "
                       "low sparsity means a unit changes many things at once."),
            res.figure("figures/tsne.png", "Units embedded by their change profiles, coloured by label: "
                       "units that do the same thing sit together."),
            res.figure("figures/clusters.png", "Ward clusters of the change profiles, as a heat map."),
        ),
        tables=(Table(("unit", "part", "measure", "selectivity", "consistency", "cluster"), rows,
                      caption="Every unit, most selective first, unreachable units last (with the reason). Type a "
                              "unit id in the box on the left to jump to it.",
                      row_ids=[f"unit-{r[0]}" for r in rows], searchable=True),))


def _invariances(res: Results) -> Section:
    inv, inn = res.json("invariances.json"), res.json("link/inn.json")
    cos, base = inv["cosine_to_r"]["mean"], inv["cosine_to_r_baseline_same_class"]["mean"]
    return Section(
        "invariances", "What the classifier cannot see",
        "The link gives one w per r, but many images share an r. A conditional invertible network "
        "(after Rombach et al.) models all w given r; its samples for a fixed r are images the "
        "classifier cannot tell apart, and whatever varies across them is what R is invariant to.",
        numbers=(
            Number("cos(r~, r) of the samples", _f(cos), f"other images of the class: {_f(base)}"),
            Number("pixel std across samples", _f(inv["pixel_std"]["mean"], 1),
                   f"across the class: {_f(inv['pixel_std_baseline_same_class']['mean'], 1)}"),
            Number("INN held-out NLL (nats/dim)", _f(inn["test_nll"]),
                   f"ridge + Gaussian noise: {_f(inn['test_nll_gaussian_ridge'])}"),
            Number("R invariant to", ", ".join(inv["invariant_factors"][:3]) or "nothing",
                   ", ".join(inv["invariant_factors"][3:]) or "")
            if "invariant_factors" in inv else Number("R invariant to", "-", NO_PART_MAPS),
        ),
        figures=(
            res.figure("figures/invariance_samples.png",
                       "Each row: an image, the INN's mean render (v = 0), then samples with the same r, titled "
                       "with their cosine to r. Look for what changes along a row while the class and pose stay."),
            res.figure("figures/invariant_factors.png",
                       "Per part and measure: how freely it varies among images with the same r, relative to "
                       "across the class. Bars above the dashed line are what R is invariant to."),
        ))


def _faithfulness(res: Results) -> Section:
    m = res.json("tuning_modes.json")
    o, c = m["open_loop"], m["closed_loop"]
    changed = pd.read_csv(res.path("tuning_label_changes.csv"))
    rows = [(str(int(r["unit"])), _label(r["strongest_part_open_loop"], r["metric_open_loop"]),
             _label(r["strongest_part_closed_loop"], r["metric_closed_loop"]),
             _opt(None if pd.isna(r["transfer_open_loop"]) else r["transfer_open_loop"], 2),
             _opt(None if pd.isna(r["transfer_closed_loop"]) else r["transfer_closed_loop"], 2))
            for r in changed.to_dict("records")] if len(changed) else []
    if m.get("label_changes") is None:
        moved = Number("top label differs", "-", m.get("label_note", "labels not compared"))
    else:
        moved = Number("top label differs", f"{m['label_changes']} units",
                       f"{_pct(m['label_change_fraction'] or 0.0)} of the units compared; labels from the "
                       "generator's part maps")
    unreachable = " / ".join(str(x.get("unreachable_units", "-")) for x in (o, c))
    return Section(
        "faithfulness", "Does the render carry the set unit?",
        "Setting a unit and rendering through the link changes the image, but does the classifier see "
        "the change in that unit? Transfer is the share of the set change that comes back when the "
        "render is re-encoded; off-target is how much the other units move with it. The open loop (the "
        "paper's method) trusts the link; the closed loop, the sweep every other section reads, solves for "
        "w through the generator and classifier. Both tune the same units, seeds and set values, so a "
        "unit's label can be compared across the two.",
        numbers=(
            Number("transfer, open loop (link)", _opt(o["transfer"]), f"off-target {_opt(o['off_target'], 2)}"),
            Number("transfer, closed loop", _opt(c["transfer"]), f"off-target {_opt(c['off_target'], 2)}"),
            Number("units compared", str(m["n_units"]),
                   f"closed loop higher transfer on {_pct(m['transfer_higher_closed_loop_fraction'])}; "
                   f"unreachable open / closed: {unreachable}"),
            moved,
        ),
        figures=(res.figure("figures/tuning_modes.png",
                            "Per unit, transfer and off-target of both modes, then render strips of both, row "
                            "under row: the closed loop's renders change what the unit responds to."),),
        tables=(Table(("unit", "label, open loop", "label, closed loop", "transfer, open", "transfer, closed"), rows,
                      caption="The units whose top label (part and measure) differs between the modes."),)
        if rows else ())


def _attribution(res: Results) -> Section:
    a = res.json("attribution.json")
    rows = []
    for name, m in a["methods"].items():
        sel = m["selective"]
        rows.append((name, f"{_f(sel['part_mass'])} / {_f(sel['chance'])}" if "part_mass" in sel else _f(sel["chance"]),
                     f"{sel['lift']:+.3f} [{sel['lift_lo']:+.3f}, {sel['lift_hi']:+.3f}]",
                     f"{_f(sel['pointing'], 2)}" if "pointing" in sel else "",
                     _f(m["sanity"]["similarity_all_random"], 2), "yes" if m["sanity"]["flagged"] else "no"))
    return Section(
        "attribution", "The link beside the usual feature visualisations",
        "FeatureVis's three families (occlusion; deconvnet, guided backprop, LRP; activation maximisation "
        "in pixels and in the generator's latent) and the link, each asked where a unit looks, scored "
        f"against {PART_SOURCE[a.get('part_source', 'generator')]}: the share of attribution inside the "
        "part the unit is labelled with, against that part's share of the image. A method whose maps survive randomising "
        "the classifier's weights is flagged: it explains the image, not the model.",
        numbers=(
            Number("best part mass", a["best_part_mass"], f"over {a['n_units']['selective']} selective units"),
            Number("best pointing game", a["best_pointing"]),
            Number("flagged by randomisation", ", ".join(a["flagged"]) or "none"),
        ),
        tables=(Table(("method", "part mass / chance", "lift [95% CI]", "pointing", "similarity, all layers random",
                       "flagged"), rows, caption="Selective units; lift = part mass minus chance."),),
        figures=(
            res.figure("figures/attribution_grid.png",
                       "Rows: the most selective unit per part on an image where it is active; columns: the methods, "
                       "then the link's first and last render. The cyan outline is the labelled part."),
            res.figure("figures/attribution_scores.png", "Part mass and pointing game per method, against chance."),
            res.figure("figures/attribution_sanity.png",
                       "Similarity of each method's maps to the trained model's as layers are randomised from the "
                       "top: a faithful method falls."),
        ))


def _motion(res: Results) -> Section:
    m = res.json("motion.json")
    ca, im = m.get("centroid_agreement"), m["image"]
    return Section(
        "motion", "What moves",
        "Without labels: dense correspondences between the first and last render of each unit's sweep, "
        "a global affine fitted and removed, and the residual flow as what moved locally. Checked "
        "against the generator's own part maps, whose centroids shift by a known amount.",
        numbers=(
            Number("flow vs part-centroid shifts", _f(ca["whole"]["pearson"]),
                   f"Pearson over {ca['whole']['n']} part moves (background excluded)")
            if ca else Number("flow vs part-centroid shifts", "-", NO_PART_MAPS),
            Number("median |motion| per pixel", f"{_f(im['median_abs_motion'], 2)} px",
                   f"90th percentile {_f(im['median_abs_motion_p90'], 2)} px"),
            Number("median |rotation|", f"{_f(im['median_abs_rotation'], 2)}°",
                   f"median |translation| {_f(im['median_abs_translation_x'], 2)} / "
                   f"{_f(im['median_abs_translation_y'], 2)} px"),
            Number("pairs measured", str(m["n_pairs"]), f"backend {m['backend']}"),
        ),
        figures=(res.figure("figures/motion_fields.png",
                            "Residual motion of the units most selective for motion: arrows show where pixels moved "
                            "once the global shift is removed; hue is direction (see the wheel)."),))


def _counterfactuals(res: Results) -> Section:
    c = res.json("counterfactuals.json")
    return Section(
        "counterfactuals", "What it takes to change the class",
        "For every ordered pair of classes and several test images, r is shifted step by step until "
        "the render of the linked w is classified as the target; the units that moved most say what "
        "the classifier needs changed. Every trajectory is kept, successful or not.",
        numbers=(
            Number("trajectories that reached the target", _pct(c["success_rate"] or 0.0),
                   f"of {c['n_trajectories']} over {c['n_class_pairs']} class pairs"),
            Number("median steps", "-" if c["median_steps"] is None else f"{c['median_steps']:.0f}",
                   f"longest successful: {c['max_steps_taken']}"),
            Number("target probability at the flip", _f(c["final_target_probability_median"] or 0.0, 2), "median"),
            Number("relative change of r", _f(c["relative_r_change_median"] or 0.0, 2), "median |Δr| / |r|"),
        ),
        figures=(
            res.figure("figures/counterfactual_strips.png",
                       "Trajectories frame by frame, the target's probability under each frame: look for which "
                       "parts change first."),
            res.figure("figures/counterfactual_pairs.png", "Success rate and steps per class pair."),
            res.figure("figures/counterfactual_units.png",
                       "The units shifted most toward each target, with their labels from the unit analysis."),
        ))


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("world", ("generator.json", "classifier.json", "quality.json", "segmenter.json", "pairs.json",
                          "figures/generated_samples.png", "curves/generator.tsv", "curves/classifier.tsv",
                          "curves/segmenter.tsv"), _world),
    SectionSpec("similarity", ("similarity.json", "figures/similarity.png"), _similarity),
    SectionSpec("link", ("link/", "cycle.json", "figures/cycle.png"), _link),
    SectionSpec("invariances", ("invariances.json", "figures/invariance_samples.png",
                                "figures/invariant_factors.png"), _invariances),
    SectionSpec("units", ("tuning.json", "analysis.json", "units.csv", "figures/unit_strips.png",
                          "figures/sparsity.png", "figures/tsne.png", "figures/clusters.png"), _units),
    SectionSpec("faithfulness", ("tuning_modes.json", "tuning_label_changes.csv", "figures/tuning_modes.png"),
                _faithfulness),
    SectionSpec("attribution", ("attribution.json", "figures/attribution_grid.png", "figures/attribution_scores.png",
                                "figures/attribution_sanity.png"), _attribution),
    SectionSpec("motion", ("motion.json", "figures/motion_fields.png"), _motion),
    SectionSpec("counterfactuals", ("counterfactuals.json", "figures/counterfactual_strips.png",
                                    "figures/counterfactual_pairs.png", "figures/counterfactual_units.png"),
                _counterfactuals),
)


def report_inputs() -> list[str]:
    """Every file or folder the report reads, relative to the reports folder."""
    return [f for s in SECTIONS for f in s.files]


def md5_of(path: Path) -> str:
    """The md5 DVC records for a file; for a folder, of its files' names and md5s in order."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.md5()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path).as_posix()}\0{md5_of(p)}\n".encode())
        return h.hexdigest() + ".dir"
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _provenance(res: Results, params: dict, revision: str) -> Section:
    rows = [(rel, md5_of(res.path(rel))) for rel in report_inputs()]
    return Section(
        "provenance", "Where this came from",
        "The code revision the page was built at, the md5 of every result it shows (as DVC records "
        "them; `dvc status` tells whether they are still current), and the parameters of the run.",
        numbers=(Number("code revision", revision[:12] or "unknown", "git HEAD when the report was built"),),
        tables=(Table(("input", "md5"), rows, caption="Inputs of this page."),),
        code=yaml.safe_dump(params, sort_keys=True, default_flow_style=False))


def build_page(root: Path, params: dict, revision: str) -> Page:
    res = Results(root, params)
    sections = [spec.build(res) for spec in SECTIONS]
    sections.append(_provenance(res, params, revision))
    n = res.json("quality.json")["n_units"]
    return Page("linkstyle report",
                f"What the {n} units of the classifier's penultimate layer encode, measured through the "
                "generator they are linked to.", sections)


def write_report(root: Path, out: Path, params: dict, revision: str) -> Page:
    """Build the page from the results under `root` and write it atomically to `out`."""
    page = build_page(root, params, revision)
    text = render_page(page)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return page
