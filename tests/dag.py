"""What a stage script runs: its import closure inside the `linkstyle` package.

Every `import` of a `linkstyle` module, at module level or inside a function, counts,
and so does every package `__init__.py` that importing it executes. Used by
`test_dvc_deps.py`; run `python tests/dag.py` to print each stage's closure.
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


if __name__ == "__main__":
    for script in sys.argv[1:] or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")):
        print(script)
        for f in sorted(closure(script)):
            print(f"  - {f}")
