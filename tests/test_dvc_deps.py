"""dvc.yaml lists, for every stage, exactly the code it runs and the params it reads.

A stage must rerun when anything it runs changes: its script and every package file in
the script's import closure (`tests/dag.py`), no more and no fewer. Its params list
must name exactly the params.yaml sections its script reads through `cli.section`.
"""

from __future__ import annotations

import ast
import re

import pytest
import yaml
from dag import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def _script(stage: dict) -> str:
    m = re.search(r"python (stages/\S+\.py)", _body(stage)["cmd"])
    assert m, f"cmd does not run a stage script: {_body(stage)['cmd']}"
    return m.group(1)


def _names(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def code_problems(stages: dict) -> list[str]:
    """Every package file a stage runs but does not list, or lists but does not run."""
    problems = []
    for name, stage in stages.items():
        script = _script(stage)
        deps = set(_names(_body(stage).get("deps", [])))
        if script not in deps:
            problems.append(f"{name}: script {script} is not a dep")
        listed = {d for d in deps if d.startswith("linkstyle/")}
        runs = closure(script)
        problems += [f"{name}: runs {f} but does not list it" for f in sorted(runs - listed)]
        problems += [f"{name}: lists {f} but does not run it" for f in sorted(listed - runs)]
    return problems


def _sections_read(script: str) -> set[str]:
    """The params sections a script reads: second argument of every cli.section(...) call,
    every name in the literal tuple of a cli.raw_sections(...) call, and models.<role>.kind
    for every external_kind(params, "<role>") call; a key inside a section also read whole
    is that section."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / script).read_text())):
        called = getattr(node.func, "attr", getattr(node.func, "id", "")) if isinstance(node, ast.Call) else ""
        if called == "raw_sections":
            found.update(ast.literal_eval(node.args[1]))
        if called == "section":
            arg = node.args[1]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):  # f"fit_link.{kind}" in a foreach stage
                found.add("".join(v.value if isinstance(v, ast.Constant) else "${item}" for v in arg.values))
        if called == "external_kind":
            found.add(f"models.{ast.literal_eval(node.args[1])}.kind")
    return {k for k in found if not any(k.startswith(f"{other}.") for other in found)}


def test_every_stage_lists_exactly_the_code_it_runs():
    assert code_problems(DVC) == []


def test_every_stage_lists_exactly_the_params_it_reads():
    for name, stage in DVC.items():
        assert set(_names(_body(stage).get("params", []))) == _sections_read(_script(stage)), name


@pytest.mark.parametrize("name", sorted(DVC))
def test_dropping_any_import_from_dvc_yaml_is_caught(name):
    """The check above fails for every single package file removed from a stage's deps."""
    stage = DVC[name]
    code = [d for d in _names(_body(stage)["deps"]) if d.startswith("linkstyle/")]
    assert code, name
    for dropped in code:
        body = dict(_body(stage), deps=[d for d in _body(stage)["deps"] if d != dropped])
        broken = {name: {"do": body} if "do" in stage else body}
        assert code_problems(broken) == [f"{name}: runs {dropped} but does not list it"]


def test_every_stage_script_is_in_the_pipeline():
    scripts = {_script(s) for s in DVC.values()}
    assert scripts == {str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")}


def test_closure_follows_function_level_and_submodule_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from linkstyle.core import h5\n\ndef main():\n    import linkstyle.core.stats\n")
    assert closure(script) == {"linkstyle/__init__.py", "linkstyle/core/__init__.py", "linkstyle/core/h5.py",
                               "linkstyle/core/errors.py", "linkstyle/core/io.py", "linkstyle/core/stats.py"}
    got = closure(ROOT / "stages" / "evaluate_link.py")  # through the link bundle to the model registry
    assert {"linkstyle/link/bundle.py", "linkstyle/models/registry.py", "linkstyle/models/stylegen.py"} <= got
    assert "linkstyle/measure/parts.py" not in got
