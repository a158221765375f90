"""The profiles users copy over params.yaml (profiles/*.yaml): complete, and valid for every stage.

Each stage script reads its sections with `cli.section(params, "<name>", <Config>)`; every
such call in stages/ is replayed on each profile, so a key renamed in the code or a value a
stage would reject (a bad size, an unknown kind) fails here rather than an hour into a run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from linkstyle.core import cli

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


def _section_calls() -> set[tuple[str, str, str]]:
    """(section, module, class) of every cli.section(params, "<section>", <Class>) in stages/."""
    out = set()
    for script in (ROOT / "stages").glob("*.py"):
        tree = ast.parse(script.read_text())
        where = {a.asname or a.name: node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "section"
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[2], ast.Name)):
                out.add((node.args[1].value, where[node.args[2].id], node.args[2].id))
    return out


def _keys(node, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    return {f"{prefix}{k}" for k in node} | {x for k, v in node.items() for x in _keys(v, f"{prefix}{k}.")}


def test_the_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"own-cpu", "paper"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_has_every_key_of_params_yaml(profile):
    ours = yaml.safe_load(profile.read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    # models differ by design (your files); every other key is the same set as params.yaml's
    drop = {"models"}
    assert {k for k in _keys(ours) if k.split(".")[0] not in drop} == {k for k in _keys(base) if k.split(".")[0] not in drop}
    assert ours["models"]["generator"]["kind"] != "builtin" and ours["models"]["classifier"]["kind"] != "builtin"
    assert ours["train_segmenter"]["labels"] == "masks"  # a StyleGAN draws no part maps


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_stage_accepts_the_profile(profile):
    calls = _section_calls()
    assert len(calls) >= 20
    for section, module, cls in sorted(calls):
        cli.section(profile, section, getattr(importlib.import_module(module), cls))
