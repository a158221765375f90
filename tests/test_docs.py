"""The docs agree with the code.

- Every stage of dvc.yaml is in the README's pipeline table, and no other list of stages
  exists in the docs to disagree with it.
- Every `python stages/...`, `tools/...` or `benchmarks/...` command quoted in the docs names a
  script that exists and options it has; every option quoted alone exists in some script;
  every `make` target quoted exists; the typer scripts' `--help` parses.
- Every internal markdown link (file and anchor) resolves, and every `docs/*.md` path,
  "docs/method.md section N" and "Dn" that a file of the repository cites exists.
- The counts the docs quote are read from the files they count: the generated pages
  (docs/results.md from reports/, docs/errors.md from tests/test_errors.py) are current, and
  the README's report sections, classes, parts and units match their source.
- README.md has at most 200 lines and a figure in its first 40.
- No file cites tracker issue numbers, who did the work, temporary paths or paths outside the
  repository.

Each check is a function of the repository root returning its problems, so the last test can
run them on a deliberately broken copy and see them fail.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = ("stages", "tools", "benchmarks")


def doc_files(root: Path) -> list[Path]:
    docs = [root / "README.md", root / "CHANGELOG.md", root / "masks" / "README.md"]
    return [p for p in docs if p.is_file()] + sorted((root / "docs").glob("*.md"))


def _stages(root: Path) -> set[str]:
    return set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


# ----------------------------------------------------------------------------- stage lists

def _tables(text: str) -> list[tuple[int, list[str]]]:
    """Markdown tables as (line number of the first row, rows)."""
    out, rows, start = [], [], 0
    for i, line in enumerate(text.splitlines() + [""], 1):
        if line.lstrip().startswith("|"):
            if not rows:
                start = i
            rows.append(line.strip())
        elif rows:
            out.append((start, rows))
            rows = []
    return out


def _first_cell_stage(row: str, stages: set[str]) -> str | None:
    cell = row.strip("|").split("|")[0].strip()
    m = re.fullmatch(r"`([a-z_]+)(@[^`]*)?`", cell)
    return m.group(1) if m and m.group(1) in stages else None


def _pipeline_table(root: Path) -> tuple[int, list[str]] | None:
    """The README's pipeline table: the first table after the heading `The pipeline`."""
    text = (root / "README.md").read_text()
    m = re.search(r"^#+ The pipeline\s*$", text, re.M)
    if not m:
        return None
    after = text[:m.start()].count("\n") + 1
    tables = [t for t in _tables(text) if t[0] > after]
    return tables[0] if tables else None


def stage_list_problems(root: Path) -> list[str]:
    stages = _stages(root)
    table = _pipeline_table(root)
    if table is None:
        return ["README.md: no table under a heading 'The pipeline'"]
    listed = [_first_cell_stage(r, stages) or r.strip("|").split("|")[0].strip() for r in table[1][2:]]
    problems = [f"README.md pipeline table: lacks stage {s}" for s in sorted(stages - set(listed))]
    problems += [f"README.md pipeline table: {s} is no stage of dvc.yaml" for s in listed if s not in stages]
    problems += [f"README.md pipeline table: {s} listed twice" for s in sorted({s for s in listed if listed.count(s) > 1})]
    for path in doc_files(root):
        text = path.read_text()
        for start, rows in _tables(text):
            if path.name == "README.md" and path.parent == root and start == table[0]:
                continue
            named = [s for s in (_first_cell_stage(r, stages) for r in rows) if s]
            if named:
                problems.append(f"{path.relative_to(root)}:{start}: a second list of stages ({', '.join(named[:3])}, ...); "
                                "the README's pipeline table is the one list")
        for i, line in enumerate(text.splitlines(), 1):
            m = re.match(r"\s*[-*] `([a-z_]+)(@[^`]*)?`", line)
            if m and m.group(1) in stages:
                problems.append(f"{path.relative_to(root)}:{i}: a list item naming stage {m.group(1)}; "
                                "the README's pipeline table is the one list")
    return problems


# ----------------------------------------------------------------------------- commands and options

_COMMAND = re.compile(r"python3? ((?:stages|tools|benchmarks)/[\w/]+\.py)([^`\n#]*)")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_docs_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parents[1]))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parents[1]))
    return module


def _typer_command(path: Path):
    import typer

    module = _load(path)
    app = typer.Typer(add_completion=False)
    app.command()(module.main)
    return app, typer.main.get_command(app)


def _uses_typer(path: Path) -> bool:
    return "typer.Option" in path.read_text()


def script_options(path: Path) -> set[str]:
    """The options a script takes: from typer's command, or from its argparse calls."""
    if _uses_typer(path):
        _, cmd = _typer_command(path)
        return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    found = {"--help"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--"))
    return found


def _make_targets(root: Path) -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (root / "Makefile").read_text(), re.M))


def command_problems(root: Path) -> list[str]:
    problems, known = [], set()
    scripts = [p for d in SCRIPT_DIRS for p in sorted((root / d).glob("*.py"))]
    options = {p.relative_to(root).as_posix(): script_options(p) for p in scripts}
    for opts in options.values():
        known |= opts
    targets = _make_targets(root)
    for path in doc_files(root):
        text = path.read_text()
        rel = path.relative_to(root)
        joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
        for script, args in _COMMAND.findall(joined):
            if script not in options:
                problems.append(f"{rel}: quotes {script}, which does not exist")
                continue
            for opt in _OPTION.findall(args):
                if opt not in options[script]:
                    problems.append(f"{rel}: `{script} {opt}`: {script} has no option {opt}")
        for opt in re.findall(r"`(--[a-z][a-z0-9-]*)`", text):
            if opt not in known:
                problems.append(f"{rel}: option `{opt}` belongs to no script in {', '.join(SCRIPT_DIRS)}")
        for target in re.findall(r"`make ([a-z][\w-]*)", text) + re.findall(r"^make ([a-z][\w-]*)", text, re.M):
            if target not in targets:
                problems.append(f"{rel}: `make {target}`: no such Makefile target")
    return problems


def test_quoted_commands_and_options_exist():
    assert command_problems(ROOT) == []


def test_help_of_every_typer_script_parses():
    from typer.testing import CliRunner

    runner = CliRunner()
    for d in ("stages", "tools"):
        for path in sorted((ROOT / d).glob("*.py")):
            if _uses_typer(path):
                app, _ = _typer_command(path)
                out = runner.invoke(app, ["--help"])
                assert out.exit_code == 0 and "--help" in out.output, (path, out.output[-500:])


# ----------------------------------------------------------------------------- links and citations

def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def link_problems(root: Path) -> list[str]:
    problems = []
    for path in doc_files(root):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(root)}: link {target}"
            if not dest.exists():
                problems.append(f"{where}: {file} does not exist")
            elif not dest.is_relative_to(root.resolve()):
                problems.append(f"{where}: points outside the repository")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(root.resolve())}")
    return problems


def _text_files(root: Path) -> list[Path]:
    """The repository's text files, as git sees them (tracked or new, not ignored)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True)
    names = out.stdout.split() if out.returncode == 0 and out.stdout else [
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".venv" not in p.parts
        and ".git" not in p.parts and ".quick" not in p.parts and "data" not in p.parts[:1]]
    files = []
    for name in names:
        p = root / name
        if p.is_file() and not name.startswith(("data/", "reports/")) and p.suffix not in (".png", ".h5", ".pt", ".lock"):
            try:
                p.read_text()
            except UnicodeDecodeError:
                continue
            files.append(p)
    return files


def citation_problems(root: Path) -> list[str]:
    method = (root / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", method, re.M))
    decisions = set(re.findall(r"^- \*\*D(\d+)\. ", method, re.M))
    problems = []
    for path in _text_files(root):
        if path.name == "test_docs.py":
            continue
        text = path.read_text()
        rel = path.relative_to(root)
        for doc in set(re.findall(r"\bdocs/[\w-]+\.md\b", text)):
            if not (root / doc).is_file():
                problems.append(f"{rel}: cites {doc}, which does not exist")
        for group in re.findall(r"method\.md,? sections? ([\d, and]+)", text):
            for n in re.findall(r"\d+", group):
                if n not in sections:
                    problems.append(f"{rel}: cites docs/method.md section {n}, which does not exist")
        if "method.md" in text or rel.as_posix() == "docs/method.md":
            for n in re.findall(r"(?<![\w.])D(\d{1,2})\b", text):
                if n not in decisions:
                    problems.append(f"{rel}: cites D{n}, which docs/method.md does not state")
    return sorted(set(problems))


def test_internal_links_resolve():
    assert link_problems(ROOT) == []


def test_cited_docs_sections_and_decisions_exist():
    assert citation_problems(ROOT) == []


# ----------------------------------------------------------------------------- counts

def _tool(root: Path, name: str):
    return _load(root / "tools" / f"{name}.py")


def _report_titles(root: Path) -> list[str]:
    """Section titles of the report, in page order, from linkstyle/report/page.py."""
    tree = ast.parse((root / "linkstyle" / "report" / "page.py").read_text())
    titles: dict[str, str] = {}
    order: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Section" and len(node.args) >= 2:
            if all(isinstance(a, ast.Constant) for a in node.args[:2]):
                titles[node.args[0].value] = node.args[1].value
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "SectionSpec":
            order.append(node.args[0].value)
    return [titles[k] for k in order] + [titles["provenance"]]


def count_problems(root: Path) -> list[str]:
    problems = []
    results = _tool(root, "results_page")
    if (root / "docs" / "results.md").read_text() != results.render(root / "reports"):
        problems.append("docs/results.md is not what reports/ gives: run python tools/results_page.py")
    errors = _tool(root, "errors_page")
    if (root / "docs" / "errors.md").read_text() != errors.render(root / "tests" / "test_errors.py"):
        problems.append("docs/errors.md is not what tests/test_errors.py gives: run python tools/errors_page.py")

    readme = (root / "README.md").read_text()
    want = [f"{i}. {t}" for i, t in enumerate(_report_titles(root), 1)]
    got = re.findall(r"^\| (\d+\. [^|]+?) \|", readme, re.M)
    if got != want:
        problems.append(f"README.md: the report's sections are {want}, the README lists {got}")
    headings = re.findall(r"^## (\d+\. .+)$", (root / "docs" / "results.md").read_text(), re.M)
    if headings != want[:len(headings)] or len(headings) != len(want) - 1:
        problems.append(f"docs/results.md: its sections {headings} are not the report's {want[:-1]}")
    world = (root / "linkstyle" / "world" / "procedural.py").read_text()
    n_classes = len(ast.literal_eval(re.search(r"CLASS_NAMES = (\(.*?\))", world).group(1)))
    n_parts = len(ast.literal_eval(re.search(r"PART_NAMES = (\(.*?\))", world).group(1)))
    import json

    n_units = json.loads((root / "reports" / "classifier.json").read_text())["n_units"]
    method = (root / "docs" / "method.md").read_text()
    n_decisions = max(int(n) for n in re.findall(r"^- \*\*D(\d+)\. ", method, re.M))
    quoted = [
        ("README.md", r"(\d+) animal classes", n_classes),
        ("README.md", r"sharing (\d+) parts", n_parts),
        ("README.md", r"with (\d+) units in R", n_units),
        ("docs/method.md", r"numbered D1-D(\d+)", n_decisions),
    ]
    for rel, pattern, value in quoted:
        text = (root / rel).read_text()
        found = re.findall(pattern, text)
        if not found:
            problems.append(f"{rel}: no match for {pattern!r}; update the count check in tests/test_docs.py")
        problems += [f"{rel}: quotes {f} for {pattern!r}, the source says {value}" for f in found if str(f) != str(value)]
    return problems


def test_counts_in_the_docs_come_from_what_they_count():
    assert count_problems(ROOT) == []


# ----------------------------------------------------------------------------- README and wording

def readme_problems(root: Path) -> list[str]:
    lines = (root / "README.md").read_text().splitlines()
    problems = [f"README.md has {len(lines)} lines, more than 200"] if len(lines) > 200 else []
    figures = [m for line in lines[:40] for m in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", line)]
    if not figures:
        problems.append("README.md: no PNG figure in the first 40 lines")
    for f in figures:
        p = root / f
        if not p.is_file() or p.stat().st_size > 100_000:
            problems.append(f"README.md: figure {f} missing or over 100 KB")
    return problems


FORBIDDEN = [
    (re.compile(r"(?<![\w&/.])#\d+(?![\w-])"), "a tracker issue number"),
    (re.compile(r"\bissues? #?\d+", re.I), "a tracker issue number"),
    (re.compile(r"METHOD\.md"), "a file outside the repository"),
    (re.compile(r"\.\./shared"), "a path outside the repository"),
    (re.compile(r"/tmp/|/work/"), "a temporary or machine path"),
    (re.compile(r"\b(this|that|the|previous|earlier|a|one) session\b", re.I), "who did the work, when"),
    (re.compile(r"\b(the|first|earlier|second|another) helper\b|\bthe lead\b|\bmeasured by\b", re.I),
     "who did the work"),
]


def wording_problems(root: Path) -> list[str]:
    problems = []
    for path in _text_files(root):
        if path.name == "test_docs.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{path.relative_to(root)}:{i}: {what}: {line.strip()[:100]}")
    return problems


def test_stage_list_is_the_readme_pipeline_table():
    assert stage_list_problems(ROOT) == []


def test_readme_is_short_with_a_figure_near_the_top():
    assert readme_problems(ROOT) == []


def test_no_issue_numbers_authors_or_outside_paths():
    assert wording_problems(ROOT) == []


# ----------------------------------------------------------------------------- the checks can fail

@pytest.fixture
def broken(tmp_path) -> Path:
    """A copy of what the checks read, in which each test below breaks one thing."""
    d = tmp_path / "repo"
    d.mkdir()
    for name in ("README.md", "CHANGELOG.md", "LICENSE", "CITATION.cff", "Makefile", "dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, d / name)
    for name in ("docs", "tools", "stages", "benchmarks", "masks", "reports"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "test_errors.py", d / "tests" / "test_errors.py")
    for rel in ("linkstyle/report/page.py", "linkstyle/world/procedural.py"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, d / rel)
    return d


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_checks_fail_on_a_broken_copy(broken):
    d = broken
    assert stage_list_problems(d) == [] and link_problems(d) == [] and readme_problems(d) == []

    _edit(d / "README.md", "| `class_means` |", "| `class_mean` |")
    _edit(d / "docs" / "own-models.md", "## Label a few", "| `sample_pairs` | again |\n\n## Label a few")
    assert any("lacks stage class_means" in p for p in stage_list_problems(d))
    assert any("second list of stages" in p for p in stage_list_problems(d))

    _edit(d / "README.md", "(docs/errors.md)", "(docs/error.md)")
    _edit(d / "docs" / "method.md", "(results.md#8-what-moves)", "(results.md#8-what-stays)")
    assert len(link_problems(d)) == 2

    _edit(d / "README.md", "--per-class 4", "--per-klass 4")
    _edit(d / "README.md", "make report ", "make reports ")
    found = command_problems(d)
    assert any("--per-klass" in p for p in found) and any("make reports" in p for p in found)

    _edit(d / "README.md", "5 animal classes", "6 animal classes")
    _edit(d / "docs" / "errors.md", "| `params-missing`", "| `params-gone`")
    cycle = json.loads((d / "reports" / "cycle.json").read_text())
    cycle["class_agreement"] = 0.5 if cycle["class_agreement"] != 0.5 else 0.25  # whatever the last run measured
    (d / "reports" / "cycle.json").write_text(json.dumps(cycle, indent=2))
    found = count_problems(d)
    assert any("quotes 6" in p for p in found) and any("errors.md" in p for p in found)
    assert any("results.md" in p for p in found)

    (d / "README.md").write_text("# x\n\n" + "line\n" * 240)
    assert len(readme_problems(d)) == 2


def test_the_wording_check_fails_on_issue_numbers_and_outside_paths(tmp_path):
    (tmp_path / "a.md").write_text("fixed in issue 12 (see #13 and ../shared/x); results.md#8-what-moves is fine\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert len(wording_problems(tmp_path)) == 3
