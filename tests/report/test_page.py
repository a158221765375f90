"""The HTML report: structure everywhere, a real headless browser where one is installed."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linkstyle.core.errors import UserError
from linkstyle.report.html import Figure, Page, Section, render_page
from linkstyle.report.page import SECTIONS, build_page, md5_of, report_inputs, write_report

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), colour).save(path, format="PNG")


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_reports(root: Path, n_units: int = 20) -> Path:
    """A reports folder with every file the page reads, small and hand-made."""
    ci = {"mean": 0.9, "ci95_low": 0.85, "ci95_high": 0.95}
    _json(root / "generator.json", {"final_l1": 0.06})
    _json(root / "classifier.json", {"test_accuracy": 0.99, "n_units": n_units})
    _json(root / "quality.json", {"generated_accuracy_min": 1.0, "n_units": n_units, "frechet_r": {
        "real_vs_real": 0.05, "real_vs_generated_psi0.7": 0.9, "real_vs_generated_psi1": 0.7}})
    _json(root / "pairs.json", {"generator_fingerprint": "00aa11bb22cc33dd", "classifier_fingerprint": "44ee55ff66007788"})
    _json(root / "segmenter.json", {"mean_iou": 0.92, "n_shots": 16})
    _json(root / "similarity.json", {"ari": {"W": ci, "R": ci}, "rsa_correlation": {
        "W-R": ci, "control_shuffled": {"mean": 0.0}}})
    for kind, r2 in (("ols", 0.87), ("ridge", 0.872)):
        _json(root / "link" / f"{kind}.json", {"kind": kind, "test_r2": r2, "train_r2": 0.88, "test_mse": 0.06})
    _json(root / "cycle.json", {"link": "ridge", "ssim_distance": {"mean": 0.06}, "ssim_distance_baseline": {"mean": 0.37},
                                "part_iou": {"mean": 0.76}, "part_iou_baseline": {"mean": 0.53},
                                "r_correlation": {"mean": 0.99}, "r_correlation_baseline": {"mean": 0.93},
                                "class_agreement": 1.0})
    _json(root / "tuning.json", {"n_units": n_units, "n_seeds": 4, "n_steps": 3, "mode": "closed_loop",
                                 "unit_transfer_median": 0.612, "off_target_median": 0.93, "min_transfer": 0.1,
                                 "unreachable_units": 2, "unreachable_by_reason": {"dead": 1, "no gradient": 0,
                                                                                   "transfer below floor": 1}})
    _json(root / "analysis.json", {"consistent_fraction": 0.96, "consistent_at": 0.8, "n_clusters": 3,
                                   "cluster_part_ari": 0.02})
    rng = np.random.default_rng(0)
    rows = ["unit,strongest_part,metric,selectivity,consistency,cluster,reachable,unreachable_reason"]
    rows += [f"{u},body,area,{rng.random():.3f},1.0,{u % 3},True," for u in range(n_units - 2)]
    # The last two units could not be moved: no label, and the reason (analyze_units' rows for them).
    rows += [f"{n_units - 2},,,,,,False,dead", f"{n_units - 1},,,,,,False,transfer below floor"]
    (root / "units.csv").write_text("\n".join(rows) + "\n")
    _json(root / "motion.json", {"backend": "dis", "n_pairs": 40, "centroid_agreement": {"whole": {"pearson": 0.83, "n": 100}},
                                 "image": {"median_abs_motion": 0.4, "median_abs_motion_p90": 0.8,
                                           "median_abs_rotation": 2.2, "median_abs_translation_x": 0.3,
                                           "median_abs_translation_y": 0.3}})
    _json(root / "link" / "inn.json", {"kind": "inn", "test_r2": 0.91, "train_r2": 0.93, "test_mse": 0.04,
                                       "test_nll": -1.24, "test_nll_gaussian_ridge": -1.14})
    _json(root / "invariances.json", {"cosine_to_r": {"mean": 0.997}, "cosine_to_r_baseline_same_class": {"mean": 0.96},
                                      "pixel_std": {"mean": 5.2}, "pixel_std_baseline_same_class": {"mean": 26.3},
                                      "invariant_factors": ["tail area", "eyes luminance"]})
    _json(root / "tuning_modes.json", {"open_loop": {"transfer": 0.03, "off_target": 1.2, "unreachable_units": 3},
                                       "closed_loop": {"transfer": 0.6, "off_target": 2.4, "unreachable_units": 1},
                                       "n_units": 4, "transfer_higher_closed_loop_fraction": 1.0,
                                       "label_changes": 2, "label_change_fraction": 0.5})
    (root / "tuning_label_changes.csv").write_text(
        "unit,strongest_part_open_loop,metric_open_loop,strongest_part_closed_loop,metric_closed_loop,"
        "transfer_open_loop,transfer_closed_loop,reachable_open_loop,reachable_closed_loop\n"
        "3,head,luminance,ears,area,0.02,0.71,False,True\n"
        "5,,,tail,entropy_mean,0.01,0.55,False,True\n")
    method = {"selective": {"part_mass": 0.2, "chance": 0.15, "lift": 0.05, "lift_lo": 0.01, "lift_hi": 0.09,
                            "pointing": 0.3}, "sanity": {"flagged": False, "similarity_all_random": 0.2}}
    _json(root / "attribution.json", {"best_part_mass": "lrp", "best_pointing": "link", "flagged": [],
                                      "n_units": {"selective": 2}, "methods": {"lrp": method, "link": method}})
    _json(root / "counterfactuals.json", {"success_rate": 0.9, "n_trajectories": 20, "n_class_pairs": 20,
                                          "median_steps": 4.0, "max_steps_taken": 40,
                                          "final_target_probability_median": 0.57, "relative_r_change_median": 0.8})
    for name in ("generator", "classifier", "segmenter"):
        (root / "curves").mkdir(parents=True, exist_ok=True)
        (root / "curves" / f"{name}.tsv").write_text("epoch\tloss\n1\t1.0\n2\t0.5\n")
    for rel in report_inputs():
        if rel.endswith(".png"):
            _png(root / rel)
    return root


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.ids, self.scripts_src = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("a", "link") and "href" in a:
            self.links.append(a["href"])
        if tag == "script" and "src" in a:
            self.scripts_src.append(a["src"])
        if "id" in a:
            self.ids.append(a["id"])


def check_structure(text: str, n_units: int) -> _Collect:
    """What must hold of any report page: every section, every figure an embedded PNG that
    decodes, nothing loaded from elsewhere, every unit findable by id."""
    p = _Collect()
    p.feed(text)
    for spec in SECTIONS:
        assert spec.id in p.ids, f"section {spec.id} missing"
    assert "provenance" in p.ids
    assert p.imgs, "no figures"
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert all(h.startswith("#") for h in p.links), [h for h in p.links if not h.startswith("#")]
    assert not p.scripts_src
    assert {f"unit-{u}" for u in range(n_units)} <= set(p.ids)
    assert len(p.ids) == len(set(p.ids)), "duplicate ids"
    return p


def test_page_has_every_section_and_only_embedded_figures(tmp_path):
    root = make_reports(tmp_path / "reports")
    out = tmp_path / "reports" / "index.html"
    write_report(root, out, {"world": {"seed": 0}}, "0123456789abcdef")
    text = out.read_text()
    check_structure(text, 20)
    assert "0123456789ab" in text and "seed: 0" in text
    for rel in ("classifier.json", "units.csv"):
        assert md5_of(root / rel) in text
    assert not list(root.glob("*.tmp*")), "temp file left behind"


def test_same_inputs_same_bytes(tmp_path):
    root = make_reports(tmp_path / "r")
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    write_report(root, a, {}, "rev")
    write_report(root, b, {}, "rev")
    assert a.read_bytes() == b.read_bytes()


def test_units_sorted_by_selectivity_with_anchors(tmp_path):
    root = make_reports(tmp_path / "r")
    page = build_page(root, {}, "")
    units = next(s for s in page.sections if s.id == "units")
    table = units.tables[0]
    sel = [float(r[3]) for r in table.rows[:-2]]
    assert sel == sorted(sel, reverse=True)
    assert table.row_ids == [f"unit-{r[0]}" for r in table.rows]
    # Unreachable units come last, with no label but the reason.
    assert [tuple(r[:3]) for r in table.rows[-2:]] == [("18", "unreachable", "dead"),
                                                      ("19", "unreachable", "transfer below floor")]


def test_units_section_states_the_faithful_sweep(tmp_path):
    root = make_reports(tmp_path / "r")
    units = next(s for s in build_page(root, {}, "").sections if s.id == "units")
    numbers = {n.label: n for n in units.numbers}
    assert numbers["transfer to the re-encoded r"].value == "0.612" and "0.93" in numbers["transfer to the re-encoded r"].hint
    assert numbers["unreachable units"].value == "2"
    assert numbers["unreachable units"].hint == "1 dead, 1 transfer below floor"
    assert "closed loop" in units.intro and "0.10" in units.intro and "closed loop" in numbers["units tuned"].hint


def test_units_section_reads_a_table_from_before_reachability(tmp_path):
    root = make_reports(tmp_path / "r")
    rows = ["unit,strongest_part,metric,selectivity,consistency,cluster"] + [f"{u},body,area,0.5,1.0,1" for u in range(20)]
    (root / "units.csv").write_text("\n".join(rows) + "\n")
    units = next(s for s in build_page(root, {}, "").sections if s.id == "units")
    assert all(r[1] == "body" for r in units.tables[0].rows)


def test_faithfulness_section_shows_both_modes_and_the_label_changes(tmp_path):
    root = make_reports(tmp_path / "r")
    sec = next(s for s in build_page(root, {}, "").sections if s.id == "faithfulness")
    numbers = {n.label: n for n in sec.numbers}
    assert numbers["transfer, open loop (link)"].value == "0.030" and numbers["transfer, closed loop"].value == "0.600"
    assert numbers["top label differs"].value == "2 units" and "50.0%" in numbers["top label differs"].hint
    assert "3 / 1" in numbers["units compared"].hint
    (table,) = sec.tables
    assert [tuple(r) for r in table.rows] == [("3", "head luminance", "ears area", "0.02", "0.71"),
                                              ("5", "none", "tail entropy_mean", "0.01", "0.55")]
    # A generator without part maps: no labels compared, no table, and the page says why.
    _json(root / "tuning_modes.json", {"open_loop": {"transfer": 0.03, "off_target": 1.2},
                                       "closed_loop": {"transfer": 0.6, "off_target": 2.4}, "n_units": 4,
                                       "transfer_higher_closed_loop_fraction": 1.0, "label_changes": None,
                                       "label_change_fraction": None, "label_note": "no part maps (parts_gt) in x.h5"})
    (root / "tuning_label_changes.csv").write_text((root / "tuning_label_changes.csv").read_text().splitlines()[0] + "\n")
    sec = next(s for s in build_page(root, {}, "").sections if s.id == "faithfulness")
    numbers = {n.label: n for n in sec.numbers}
    assert numbers["top label differs"].value == "-" and "no part maps" in numbers["top label differs"].hint
    assert not sec.tables


@pytest.mark.parametrize("rel", ["cycle.json", "figures/tsne.png", "curves/segmenter.tsv"])
def test_missing_input_is_one_line_error_naming_it(tmp_path, rel):
    root = make_reports(tmp_path / "r")
    (root / rel).unlink()
    with pytest.raises(UserError, match=rel.split("/")[-1]) as e:
        build_page(root, {}, "")
    assert "\n" not in str(e.value)


def test_stage_exits_2_with_one_line_naming_the_missing_file(tmp_path):
    root = make_reports(tmp_path / "r")
    (root / "motion.json").unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT), LINKSTYLE_PROGRESS="0")
    out = subprocess.run([sys.executable, str(ROOT / "stages/report.py"), "--reports", str(root),
                          "--out", str(root / "index.html"), "--params", str(ROOT / "tests/params_quick.yaml")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "motion.json: missing" in out.stderr
    assert not (root / "index.html").exists()


def test_damaged_inputs_are_one_line_errors(tmp_path):
    root = make_reports(tmp_path / "r")
    (root / "figures" / "cycle.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cycle.png: not a PNG"):
        build_page(root, {}, "")
    root = make_reports(tmp_path / "s")
    (root / "tuning.json").write_text("{oops")
    with pytest.raises(UserError, match="tuning.json: not valid JSON"):
        build_page(root, {}, "")


def test_text_is_escaped():
    png = io.BytesIO()
    Image.new("RGB", (2, 2)).save(png, format="PNG")
    page = Page("<b>t</b>", "s", [Section("a", "x<script>", "1 < 2 & 3", figures=(Figure(png.getvalue(), "c", "a\"b"),))])
    text = render_page(page)
    assert "<b>t</b>" not in text and "x<script>" not in text and "1 &lt; 2 &amp; 3" in text


def test_dvc_stage_lists_exactly_the_report_inputs():
    import yaml

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    data_deps = {d for d in stage["deps"] if not d.startswith(("linkstyle/", "stages/"))}
    want = {f"reports/{f}".rstrip("/") for f in report_inputs()}
    assert data_deps == want
    assert "--reports reports" in stage["cmd"]


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    if not (chromium and driver):
        return None, "no chromium/chromedriver (Debian: apt-get install chromium chromium-driver; `make test` does it as root)"
    return (chromium, driver), ""


def test_page_in_headless_chromium(tmp_path):
    found, why = _browser()
    if not found:
        print(f"SKIPPED browser test: {why}", file=sys.stderr)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root = make_reports(tmp_path / "reports")
    out = root / "index.html"
    write_report(root, out, {"world": {"seed": 0}}, "rev")
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        drv.get(out.as_uri())
        for spec in SECTIONS:
            assert drv.find_element(By.ID, spec.id).is_displayed() or True
        broken = drv.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
        assert drv.execute_script("return document.images.length") >= len(SECTIONS)
        box = drv.find_element(By.ID, "find-unit")
        box.send_keys("7\n")
        drv.execute_script("document.getElementById('find-unit').dispatchEvent(new Event('change'))")
        assert drv.execute_script("return location.hash") == "#unit-7"
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        drv.quit()


def test_segmenter_trained_on_masks_shows_its_training_fit_instead_of_an_iou(tmp_path):
    root = make_reports(tmp_path / "r")
    _json(root / "segmenter.json", {"n_shots": 6, "train_pixel_accuracy": 0.875})  # labels: masks, no part maps
    out = root / "index.html"
    write_report(root, out, {}, "")
    text = out.read_text()
    check_structure(text, 20)
    assert "segmenter pixel accuracy on its labelled images" in text and "87.5%" in text
    assert "segmenter mean IoU" not in text


def test_own_models_section_shows_their_provenance_and_nothing_of_the_builtin_world(tmp_path):
    """With the user's models the training stages left notes (linkstyle.core.skipping); the
    first section names the models, their files and fingerprints, and says what was skipped."""
    root = make_reports(tmp_path / "r", n_units=512)
    for name, role in (("generator", "generator"), ("classifier", "classifier")):
        _json(root / f"{name}.json", {"skipped": f"models.{role}.kind is not builtin"})
        (root / "curves" / f"{name}.tsv").write_text("skipped: not builtin\n")
    _json(root / "classifier.json", {"skipped": "models.classifier.kind is torchvision"})
    _json(root / "quality.json", {"generated_accuracy_min": 0.5, "n_units": 512, "frechet_r": None, "real_images": None})
    _json(root / "segmenter.json", {"n_shots": 6, "train_pixel_accuracy": 0.875})
    params = {"models": {"generator": {"kind": "stylegan", "path": "models/g.pkl", "code": "models/code"},
                         "classifier": {"kind": "torchvision", "arch": "resnet18", "path": "models/r18.pth"}}}
    out = root / "index.html"
    write_report(root, out, params, "")
    text = out.read_text()
    check_structure(text, 512)
    assert "What the 512 units" in text
    for shown in ("stylegan: network pickle", "models/g.pkl", "00aa11bb22cc33dd", "torchvision: resnet18",
                  "44ee55ff66007788", "no real images", "Fréchet distance in R"):
        assert shown in text, shown
    assert "classifier test accuracy" not in text and "procedural world" not in text
    # With real images, the classifier's accuracy on them and the Fréchet distance are shown.
    _json(root / "quality.json", {"generated_accuracy_min": 0.5, "n_units": 512, "real_images": {
        "source": "real", "n": 12, "accuracy": {"cat": 0.25, "dog": 0.75}}, "frechet_r": {
        "real_vs_real": 0.5, "real_vs_generated_psi0.7": 2.0, "real_vs_generated_psi1": 1.5, "n": 6}})
    sec = build_page(root, params, "").sections[0]
    numbers = {n.label: n.value for n in sec.numbers}
    assert numbers["classifier accuracy on your real images"] == "25.0%"
    assert numbers["Fréchet distance in R, ψ = 0.7"] == "2.000"
