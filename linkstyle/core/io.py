"""File helpers: atomic writes, JSON metrics, params files.

Every output goes through `atomic_path`, so a crash never leaves a half-written file
behind for DVC to cache: the data goes to a temp file beside the target, renamed onto
it only on success. Temp names carry the writer's pid, so a later run can tell the
leftovers of a killed writer (SIGKILL runs no cleanup) from a live one and remove them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from linkstyle.core.errors import UserError

_DISK_ERRORS = {errno.ENOSPC: "no space left on the device; free some space and rerun",
                errno.EDQUOT: "disk quota exceeded; free some space and rerun",
                errno.EACCES: "permission denied; make the folder writable and rerun",
                errno.EPERM: "permission denied; make the folder writable and rerun",
                errno.EROFS: "read-only file system; write the outputs somewhere writable"}


def disk_error(path: str | os.PathLike, e: OSError) -> UserError | None:
    """The one-line UserError for a full, read-only or forbidden destination, else None."""
    why = _DISK_ERRORS.get(e.errno)
    return UserError(f"{path}: cannot write: {why}") if why else None


def _umask() -> int:
    mask = os.umask(0o22)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def target_of(path: str | os.PathLike) -> Path:
    """The output a temp file of `atomic_path` stands for (`path` itself if it is none)."""
    path = Path(path)
    m = re.match(r"^\.(.+)\.\d+\.[^.]+\.tmp$", path.name)
    return path.with_name(m.group(1)) if m else path


def remove_orphans(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temp files in `folder` left by writers that no longer run (of output `name`
    only, or of every output); return what was removed.

    A stage sweeps its output folders so at start (`check_writable`): a writer killed with
    SIGKILL in another stage left temps there that its own next run may never remove (DVC
    does not rerun a stage that is up to date, and a user may have moved on to other params).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(name) if name else '[^/]+'}\.(\d+)\.[^.]+\.tmp$")
    removed = []
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _temp_beside(path: Path, clean: bool) -> Path:
    """A new empty temp file beside `path`, named so `remove_orphans` finds it if left behind."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if clean:
            remove_orphans(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise (disk_error(path, e) or e) from None
    return Path(tmp)


PROBE_BYTES = 64 * 1024


def check_writable(paths: list[Path]) -> None:
    """Raise the one-line UserError of `disk_error` if any output location cannot take a file;
    also remove the temp files that killed writers left in those folders.

    Called before a stage starts its work, so a read-only, forbidden or full destination is
    reported in a second, not after minutes of computing. Each path's nearest existing folder
    gets a small probe file (written, then removed): that finds what a permission check
    alone misses (a read-only mount seen by root, a full disk). Enough room for the probe is
    no promise of room for the output; a disk that fills later still fails at the write,
    with the same message.
    """
    for path in paths:
        folder = Path(path)
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        remove_orphans(folder)
        probe = None
        try:
            # Named like atomic_path's temps, so a probe of a killed stage is swept like them.
            fd, probe = tempfile.mkstemp(prefix=f".linkstyle-probe.{os.getpid()}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(PROBE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise (disk_error(path, e) or e) from None
        finally:
            if probe is not None:
                with contextlib.suppress(OSError):
                    os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    A full disk, a read-only folder or missing permissions end in a one-line UserError
    naming `path`; the temp file is removed on every exit, including Ctrl-C and SIGTERM
    (the stages turn SIGTERM into an exception, see `linkstyle.core.cli.run`).
    """
    path = Path(path)
    tmp = _temp_beside(path, clean=True)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give the output the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        err = disk_error(path, e)
        if err is None:
            raise
        raise err from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def scratch_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file beside `path` for intermediate data; it is always removed.

    Named like `atomic_path`'s temp files, so a writer killed mid-way (no cleanup runs)
    leaves nothing that the next run for `path` does not remove (`remove_orphans`).
    """
    tmp = _temp_beside(Path(path), clean=False)
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def plain(value: Any, digits: int | None = None) -> Any:
    """`value` as built-in types only (JSON, and torch.load(weights_only=True), accept them).

    Arrays and tensors become lists, numpy scalars Python scalars. With `digits`, floats
    are rounded (so reruns diff cleanly) and non-finite ones become None.
    """
    if isinstance(value, dict):
        return {str(k): plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, digits) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return plain(value.tolist(), digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and digits is not None:
        return round(value, digits) if math.isfinite(value) else None
    return value


def write_curves(path: str | os.PathLike, columns: dict[str, list]) -> None:
    """Per-epoch training curves as a TSV with an `epoch` column (a DVC plot; floats rounded
    so reruns diff cleanly). Every column must have one value per epoch."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"write_curves: columns of unequal length {sorted(lengths)}")
    (n,) = lengths
    names = list(columns)
    lines = ["\t".join(["epoch", *names])]
    for i in range(n):
        lines.append("\t".join([str(i + 1), *(f"{plain(columns[k][i], digits=6)}" for k in names)]))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as sorted, indented JSON (floats rounded so reruns diff cleanly)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plain(data, digits=6), indent=2, sort_keys=True) + "\n")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not 'last wins'."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {seen[key] + 1}); keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file strictly; one-line errors with the line number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found; pass --params with the path to params.yaml")
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"{path}: not valid YAML at {where}{e.problem or e.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def read_params(path: str | os.PathLike, section: str) -> dict:
    """One section (a dotted path such as 'models.generator') of a params YAML file."""
    path = Path(path)
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of sections (see params.yaml in the repository)")
    node: Any = data
    for i, key in enumerate(section.split(".")):
        where = ".".join(section.split(".")[: i + 1])
        if not isinstance(node, dict) or key not in node:
            raise UserError(f"{path}: no section '{where}'; add it (see params.yaml in the repository)")
        node = node[key]
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise UserError(f"{path}: {section} must be a mapping of keys to values, got {node!r}")
    return node
