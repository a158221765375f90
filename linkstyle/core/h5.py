"""HDF5 helpers: atomic, byte-reproducible files streamed in chunks, and checked reads.

Writers append to resizable, chunked, gzip-compressed datasets, so arrays of any size
stream to disk without being held in memory. Object timestamps are off, so the same
content gives the same bytes (DVC then sees an unchanged output as unchanged).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from linkstyle.core.errors import UserError
from linkstyle.core.io import atomic_path, target_of


@contextlib.contextmanager
def create(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a new HDF5 file at a temporary path; it replaces `path` only on success.

    Writers call `ensure_space` before each block: HDF5 cannot recover from a full disk
    (its cache flushes fail inside deallocators and the process segfaults), so running
    out of space must be caught before HDF5 sees it.
    """
    with atomic_path(path) as tmp:
        ensure_space(tmp, 0)
        fapl_kw = dict(libver=("earliest", "v110"), track_order=False)
        with h5py.File(tmp, "w", **fapl_kw) as f:
            yield f


SPACE_MARGIN = 16 << 20  # bytes kept free for HDF5's metadata and chunk caches


def ensure_space(path: str | os.PathLike, nbytes: int) -> None:
    """A one-line UserError unless the disk of `path` has `nbytes` (raw, an upper bound of
    what compression writes) plus a safety margin free. Names the output, not its temp file."""
    free = shutil.disk_usage(Path(path).parent).free
    if free < nbytes + SPACE_MARGIN:
        raise UserError(f"{target_of(path)}: cannot write: no space left on the device ({free >> 20} MB free, "
                        f"{(nbytes + SPACE_MARGIN) >> 20} MB needed for the next block); free some space and rerun")


def ensure_block(f: h5py.File, *arrays: np.ndarray) -> None:
    """`ensure_space` for the file `f` before writing `arrays`."""
    ensure_space(f.filename, sum(int(getattr(a, "nbytes", 0)) for a in arrays))


class Appender:
    """Grow datasets of one group row by row; every dataset shares the leading axis."""

    def __init__(self, group: h5py.Group, chunk_rows: int = 256, compression: str | None = "gzip"):
        self.group, self.chunk_rows, self.compression = group, chunk_rows, compression
        self.n = 0

    def append(self, **arrays: np.ndarray) -> None:
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of one append must share their length, got {lengths}")
        (m,) = lengths
        ensure_block(self.group.file, *arrays.values())
        for name, a in arrays.items():
            a = np.asarray(a)
            if name not in self.group:
                if self.n:
                    raise ValueError(f"dataset {name} appeared after the first append")
                self.group.create_dataset(
                    name, shape=(0, *a.shape[1:]), maxshape=(None, *a.shape[1:]), dtype=a.dtype,
                    chunks=(max(1, min(self.chunk_rows, 1 << 20)), *a.shape[1:]),
                    compression=self.compression, shuffle=self.compression is not None, track_times=False,
                )
            ds = self.group[name]
            ds.resize(self.n + m, axis=0)
            ds[self.n :] = a
        self.n += m


def set_attrs(obj: h5py.HLObject, **attrs) -> None:
    """Scalars and strings as they are; anything else as JSON (read back by `get_attr`)."""
    for k, v in attrs.items():
        obj.attrs[k] = v if isinstance(v, (str, int, float, np.integer, np.floating)) else json.dumps(v, sort_keys=True)


def get_attr(obj: h5py.HLObject, key: str, default=None):
    if key not in obj.attrs:
        return default
    v = obj.attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


@contextlib.contextmanager
def open_checked(path: str | os.PathLike, required: dict[str, tuple[str, ...]], producer: str) -> Iterator[h5py.File]:
    """Open an HDF5 artifact for reading, checking groups and datasets; one-line errors.

    Reads inside the `with` block that fail because the file is damaged (a truncated or
    overwritten chunk: h5py raises an OSError without an errno) become one-line UserErrors
    naming the file and the stage that rewrites it.
    """
    path = Path(path)
    fix = f"delete it and rerun dvc repro {producer}"
    if not path.exists():
        raise UserError(f"{path}: not found; run stage '{producer}' first (dvc repro {producer})")
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError) as e:
        raise UserError(f"{path}: truncated or not an HDF5 file ({_first_line(e)}); {fix}") from None
    with f:
        try:
            for group, names in required.items():
                for name in names:
                    key = f"{group}/{name}" if group else name
                    if key not in f:
                        raise UserError(f"{path}: missing '{key}'; the file was not written by this version of stage "
                                        f"'{producer}', rerun dvc repro {producer}")
            yield f
        except (OSError, RuntimeError) as e:
            if getattr(e, "errno", None) is not None:  # a real I/O error of some other file: not ours to rename
                raise
            raise UserError(f"{path}: damaged HDF5 file, a read failed ({_first_line(e)}); {fix}") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
