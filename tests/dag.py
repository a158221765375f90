"""What a stage script runs: its import closure inside the `linkstyle` package.

Every `import` of a `linkstyle` module, at module level or inside a function, counts,
and so does every package `__init__.py` that importing it executes. Used by
`test_dvc_deps.py`; run `python tests/dag.py` to print each stage's closure, and
`python tests/dag.py --write` to rewrite the package deps of every stage in dvc.yaml.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "linkstyle"


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported_modules(path: Path) -> set[str]:
    """Every linkstyle module that `path` imports, resolved to module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("").parts if path.is_relative_to(ROOT) else ("script",)
    own_pkg = rel[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(own_pkg)[: len(own_pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PKG:
                continue
            found.add(mod)
            for a in node.names:  # `from linkstyle.core import cli` imports a submodule
                if _module_file(f"{mod}.{a.name}") is not None:
                    found.add(f"{mod}.{a.name}")
    return found


def closure(script: str | Path) -> set[str]:
    """Repository-relative paths of every package file the script runs."""
    todo = [Path(script) if Path(script).is_absolute() else ROOT / script]
    seen_files: set[Path] = set()
    out: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen_files:
            continue
        seen_files.add(path)
        for mod in _imported_modules(path):
            for m in _with_parents(mod):
                f = _module_file(m)
                if f is None:
                    raise ImportError(f"{path}: imports {mod}, which has no file under {ROOT}")
                out.add(f.relative_to(ROOT).as_posix())
                todo.append(f)
    return out


def write_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> bool:
    """Replace each stage's `linkstyle/` deps by its script's closure, in place, keeping
    the file's layout and comments. Returns whether anything changed."""
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() != "deps:":
            continue
        block: list[str] = []  # the list under `deps:`
        item_indent = None
        while i < len(lines) and lines[i].lstrip().startswith("- "):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            if item_indent is not None and indent != item_indent:
                break
            item_indent = indent
            block.append(lines[i])
            i += 1
        items = [b.strip()[2:].strip() for b in block]
        scripts = [x for x in items if x.startswith("stages/") and x.endswith(".py")]
        if len(scripts) != 1:
            out.extend(block)
            continue
        kept = [b for b, x in zip(block, items) if not x.startswith(f"{PKG}/")]
        out.extend(kept)
        out.extend(f"{item_indent}- {f}\n" for f in sorted(closure(scripts[0])))
    new = "".join(out)
    changed = new != dvc_yaml.read_text()
    if changed:
        dvc_yaml.write_text(new)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        print("dvc.yaml rewritten" if write_deps() else "dvc.yaml already up to date")
        sys.exit(0)
    for script in sys.argv[1:] or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")):
        print(script)
        for f in sorted(closure(script)):
            print(f"  - {f}")
