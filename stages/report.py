"""Stage report: the whole analysis as one self-contained HTML page (linkstyle.report.page)."""

import subprocess
from pathlib import Path

import typer

from linkstyle.core import cli
from linkstyle.core.skipping import external_kind
from linkstyle.report.page import write_report


def _revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def main(reports: Path = typer.Option(..., help="folder of the pipeline's metrics, tables and figures"),
         out: Path = typer.Option(..., help="HTML page to write"),
         params: Path = typer.Option(Path("params.yaml"), help="params file; its sections are shown on the page")):
    used = cli.raw_sections(params, ("models", "world", "train_generator", "train_classifier", "check_models",
                                     "sample_pairs", "similarity", "fit_link", "fit_inn", "invariances", "evaluate_link",
                                     "train_segmenter", "tune_units", "compare_tuning", "cluster", "quantify_parts",
                                     "analyze_units", "attribute_units", "quantify_motion", "motion_fields",
                                     "counterfactuals"))
    # Sections of stages that trained nothing (the user's own models) would only confuse the page.
    own_gen, own_clf = external_kind(params, "generator"), external_kind(params, "classifier")
    if own_gen:
        used.pop("train_generator")
    if own_clf:
        used.pop("train_classifier")
    if own_gen and own_clf:
        used.pop("world")
    page = write_report(reports, out, used, _revision())
    size = out.stat().st_size / 1e6
    print(f"report: {out} ({size:.1f} MB, {len(page.sections)} sections)")


if __name__ == "__main__":
    cli.run(main)
