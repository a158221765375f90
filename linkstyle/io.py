"""File helpers: atomic writes, JSON metrics, params files.

Every output goes through `atomic_path`, so a crash never leaves a half-written file
behind for DVC to cache.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0o22)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give the output the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as sorted, indented JSON (floats rounded so reruns diff cleanly)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found; run the stage that writes it first (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}); delete it and rerun dvc repro") from None


def read_params(path: str | os.PathLike, section: str) -> dict:
    """Read one section of a params YAML file, with a one-line error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: params file not found; pass --params with the path to params.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or section not in data:
        raise UserError(f"{path}: no section '{section}'; add it (see params.yaml in the repository)")
    sec = data[section]
    if not isinstance(sec, dict):
        raise UserError(f"{path}: section '{section}' must be a mapping of keys to values")
    return sec
